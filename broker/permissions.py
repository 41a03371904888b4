"""What each role may do on NATS, written from the table of names (`broker.names`).

    admin     everything: the control plane, deploys, the operator's CLI
    gateway   publish calls of any app; read the registry, results, workers, backlogs;
              keep its call records and its report to `autan status`
    caller    publish calls (and the credits of streamed ones); read the registry and the
              results of spawned calls
    worker    one function's: pull and ack its own consumer only, answer its own calls
              only (`_R.<app>.<fn>.>`), hear its own streamed calls' callers
              (`autan.ctl.<app>.<fn>.*`), record results, dead-letter its own calls,
              announce itself, read the registry; no JetStream administration at all

Every role but admin subscribes only under its own inbox prefix (`_INBOX.<role>`). A
permission nats-server refuses is reported to the client (error_cb) and the request
times out: `broker.connection` turns that into PermissionDenied.
"""

from __future__ import annotations

from typing import Any

import msgspec

from broker.names import (
    CALL_PREFIX,
    CONFIG_BUCKET,
    CONTROL_PREFIX,
    DLQ_STREAM,
    GATEWAY_CALLS_BUCKET,
    INBOX_PREFIX,
    ITEMS_PREFIX,
    ITEMS_STREAM,
    REGISTRY_BUCKET,
    RESULT_PREFIX,
    RESULTS_BUCKET,
    SPAWNED_BUCKET,
    STATUS_BUCKET,
    WORKERS_BUCKET,
    ack_subjects,
    control_subject,
    direct_get_subject,
    dlq_subject,
    items_subject,
    js_api,
    kv_read_subjects,
    kv_stream,
    kv_subject,
    logs_subject,
    pull_subject,
    results_of,
)
from broker.streams import Source

__all__ = [
    "Permissions",
    "caller_permissions",
    "gateway_permissions",
    "role_inbox",
    "worker_permissions",
    "worker_role",
]


class Permissions(msgspec.Struct, frozen=True):
    """Subjects a role may publish to and subscribe to (nothing else)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def config(self) -> dict[str, Any]:
        """As nats-server's `permissions` block."""
        return {
            "publish": {"allow": sorted(set(self.publish))},
            "subscribe": {"allow": sorted(set(self.subscribe))},
        }


def worker_role(app: str, fn: str) -> str:
    """The role of one function's workers."""
    return f"worker_{app}_{fn}".replace("-", "_")


def role_inbox(role: str) -> str:
    """The inbox prefix of a role's connections (`_INBOX.<role>`)."""
    return f"{INBOX_PREFIX}.{role}"


def _reads(*buckets: str) -> tuple[str, ...]:
    return tuple(subject for bucket in buckets for subject in kv_read_subjects(bucket))


def _writes(bucket: str, key: str = ">") -> tuple[str, ...]:
    """Writing keys of a bucket: the KV subjects, and opening the bucket."""
    return (kv_subject(bucket, key), js_api("STREAM", "INFO", kv_stream(bucket)))


def caller_permissions(role: str = "caller") -> Permissions:
    return Permissions(
        publish=(
            f"{CALL_PREFIX}.>",
            f"{CONTROL_PREFIX}.>",  # credits and cancellation of its streamed calls
            direct_get_subject(ITEMS_STREAM),  # reading a spawned stream's items
            *_reads(REGISTRY_BUCKET, CONFIG_BUCKET, RESULTS_BUCKET, SPAWNED_BUCKET),
            *_writes(SPAWNED_BUCKET),
        ),
        subscribe=(
            f"{role_inbox(role)}.>",
            f"{RESULT_PREFIX}.>",
            kv_subject(RESULTS_BUCKET),  # waiting for a spawned call's result
            f"{ITEMS_PREFIX}.>",  # waiting for a spawned stream's next items
        ),
    )


def gateway_permissions(role: str = "gateway") -> Permissions:
    calls = caller_permissions(role)
    return Permissions(
        publish=(
            *calls.publish,
            *_reads(WORKERS_BUCKET, GATEWAY_CALLS_BUCKET, STATUS_BUCKET),
            *_writes(GATEWAY_CALLS_BUCKET),
            # the dashboard (/ui): dead letters read, and dropped when redriven
            js_api("STREAM", "MSG", "GET", DLQ_STREAM),
            js_api("STREAM", "MSG", "DELETE", DLQ_STREAM),
            *_writes(STATUS_BUCKET, "_part.bridge.*"),  # `autan status` sees it up
            js_api("CONSUMER", "INFO", "*", "*"),  # backlogs, for GET /v1/functions
            js_api("STREAM", "LIST"),
        ),
        subscribe=calls.subscribe,
    )


def worker_permissions(app: str, fn: str, source: Source, emit: str | None) -> Permissions:
    """One function's workers: its own consumer, its own callers' results."""
    role = worker_role(app, fn)
    own = (
        pull_subject(source.stream, source.consumer),
        js_api("CONSUMER", "INFO", source.stream, source.consumer),
        ack_subjects(source.stream, source.consumer),
        results_of(app, fn),
        dlq_subject(app, fn),
        *_writes(WORKERS_BUCKET, f"{app}.{fn}.>"),
        *_writes(RESULTS_BUCKET),
        items_subject(app, fn, ">"),  # a spawned stream's items, kept
        logs_subject(app, fn),  # its log lines and prints
    )
    return Permissions(
        publish=(*own, *_reads(REGISTRY_BUCKET, CONFIG_BUCKET, RESULTS_BUCKET), *_emit(emit)),
        subscribe=(f"{role_inbox(role)}.>", control_subject(app, fn)),
    )


def _emit(subject: str | None) -> tuple[str, ...]:
    return (subject,) if subject else ()
