"""Every NATS name Autan uses: streams, subjects, consumers, KV buckets, inbox prefix.

One table, so that NATS permissions for each role can be written from it, and a
test keeps every other module from spelling a name literally.

    streams     AUTAN_CALLS (work queue: autan.call.<app>.<fn>)
                AUTAN_LOGS (workers' log lines and prints: autan.logs.<app>.<fn>)
                AUTAN_DLQ (dead letters: autan.dlq.<app>.<fn>)
                AUTAN_TRIGGER_<APP>_<FN> (a trigger's events, when no stream captures them)
    consumers   fn_<app>_<fn>: one durable pull consumer per function
    buckets     autan_functions (registry), autan_results (spawned calls' results),
                autan_config (the stack's storage URL), autan_workers (heartbeats),
                autan_status (the scaler's per-function status),
                autan_gateway_calls (the HTTP bridge's call records),
                autan_sequences (the highest deploy accepted per function),
                autan_spawned (calls whose result is recorded: what Call.get may wait for),
                autan_leases (which control plane leads), autan_nodes (agents' reports)
    agents      autan.agent.<node>: a node agent's orders (start, stop), request/reply
    inboxes     _INBOX.<role>.<connection>.<token>: JetStream's answers, acks, pull deliveries
    results     _R.<app>.<fn>.<connection>.<token>: the results of live calls
    JetStream   $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer> (pull requests),
                $JS.ACK.<stream>.<consumer>.> (acks), $KV.<bucket>.<key> (KV entries)
"""

from __future__ import annotations

__all__ = [
    "AGENT_PREFIX",
    "CALLS_STREAM",
    "CALLS_SUBJECTS",
    "CALL_PREFIX",
    "CONFIG_BUCKET",
    "CONTROL_PREFIX",
    "DLQ_PREFIX",
    "DLQ_STREAM",
    "DLQ_SUBJECTS",
    "GATEWAY_CALLS_BUCKET",
    "INBOX_PREFIX",
    "ITEMS_PREFIX",
    "ITEMS_STREAM",
    "LEASES_BUCKET",
    "LOGS_PREFIX",
    "LOGS_STREAM",
    "MAX_DELIVERIES_ADVISORIES",
    "NODES_BUCKET",
    "READINESS_PROBE_KEY",
    "REGISTRY_BUCKET",
    "RESERVED_PREFIXES",
    "RESULTS_BUCKET",
    "RESULT_PREFIX",
    "SECRETS_BUCKET",
    "SECRETS_KEY_KEY",
    "SEQUENCES_BUCKET",
    "SPAWNED_BUCKET",
    "STATUS_BUCKET",
    "STORAGE_URL_KEY",
    "TRUSTED_KEYS_KEY",
    "WORKERS_BUCKET",
    "ack_subjects",
    "agent_subject",
    "call_subject",
    "consumer_name",
    "control_subject",
    "direct_get_subject",
    "dlq_subject",
    "function_key",
    "items_subject",
    "js_api",
    "kv_read_subjects",
    "kv_stream",
    "kv_subject",
    "logs_subject",
    "pull_subject",
    "reply_subject",
    "result_subject",
    "results_for",
    "results_of",
    "subject_covers",
    "subjects_overlap",
    "trigger_stream_name",
]

# -- subjects and streams --------------------------------------------------------------
CALL_PREFIX = "autan.call"
# A streamed call's caller to its worker (core NATS): how far it read, or that it stopped.
CONTROL_PREFIX = "autan.ctl"
DLQ_PREFIX = "autan.dlq"
CALLS_STREAM = "AUTAN_CALLS"
CALLS_SUBJECTS = f"{CALL_PREFIX}.>"
DLQ_STREAM = "AUTAN_DLQ"
# A spawned stream's items (and its end), kept for as long as results are.
ITEMS_PREFIX = "autan.items"
ITEMS_STREAM = "AUTAN_ITEMS"
# What workers log and what user code prints, per function, kept for a while.
LOGS_PREFIX = "autan.logs"
LOGS_STREAM = "AUTAN_LOGS"
DLQ_SUBJECTS = f"{DLQ_PREFIX}.>"
_TRIGGER_STREAM_PREFIX = "AUTAN_TRIGGER"
INBOX_PREFIX = "_INBOX"
# Results of live calls: `_R.<app>.<fn>.<connection>.<token>`, so that a function's workers
# may answer its own calls only (their NATS identity publishes under `_R.<app>.<fn>.>`).
RESULT_PREFIX = "_R"
# Subjects a user's `on=` or `emit=` may not use: Autan's own, the server's, inboxes.
RESERVED_PREFIXES = ("autan.", "$", f"{INBOX_PREFIX}.", f"{RESULT_PREFIX}.")

# -- KV buckets and their well-known keys ------------------------------------------------
REGISTRY_BUCKET = "autan_functions"
RESULTS_BUCKET = "autan_results"
CONFIG_BUCKET = "autan_config"
WORKERS_BUCKET = "autan_workers"
STATUS_BUCKET = "autan_status"
GATEWAY_CALLS_BUCKET = "autan_gateway_calls"
SEQUENCES_BUCKET = "autan_sequences"  # the highest deploy sequence accepted per function
SPAWNED_BUCKET = "autan_spawned"  # calls whose result is recorded, so that an unknown id is told
SECRETS_BUCKET = "autan_secrets"  # functions' secrets, sealed (`runtime.core.secrets`)
LEASES_BUCKET = "autan_leases"  # who leads: one control plane acts at a time
NODES_BUCKET = "autan_nodes"  # each agent's host, capacity and workers, by node name
AGENT_PREFIX = "autan.agent"  # autan.agent.<node>: orders to a node's agent (request/reply)
STORAGE_URL_KEY = "storage_url"  # in CONFIG_BUCKET: where the stack's objects are
TRUSTED_KEYS_KEY = "trusted_keys"  # in CONFIG_BUCKET: the deploy keys the stack trusts
SECRETS_KEY_KEY = "secrets_key"  # in CONFIG_BUCKET: the public key secrets are sealed with
READINESS_PROBE_KEY = "gateway-readiness-probe"  # written by /readyz: JetStream takes writes

_KV_PREFIX = "$KV"
_KV_STREAM_PREFIX = "KV_"
_JS_API = "$JS.API"
_PULL_PREFIX = f"{_JS_API}.CONSUMER.MSG.NEXT"
_ACK_PREFIX = "$JS.ACK"
# What the server publishes when a consumer gives up on a message (max_deliver reached).
MAX_DELIVERIES_ADVISORIES = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"


def call_subject(app: str, fn: str) -> str:
    """`autan.call.<app>.<fn>`: where calls to one function are published."""
    return f"{CALL_PREFIX}.{app}.{fn}"


def agent_subject(node: str) -> str:
    """Where the agent of `node` takes orders (start and stop workers)."""
    return f"{AGENT_PREFIX}.{node}"


def control_subject(app: str, fn: str, call_id: str = "*") -> str:
    """`autan.ctl.<app>.<fn>.<call_id>`: a streamed call's credits and cancellation, from
    its caller to the worker running it (`*`: every call of the function)."""
    return f"{CONTROL_PREFIX}.{app}.{fn}.{call_id}"


def items_subject(app: str, fn: str, call_id: str = "*") -> str:
    """`autan.items.<app>.<fn>.<call_id>`: where a spawned stream's items are kept."""
    return f"{ITEMS_PREFIX}.{app}.{fn}.{call_id}"


def logs_subject(app: str, fn: str) -> str:
    """`autan.logs.<app>.<fn>`: where one function's workers ship their log lines."""
    return f"{LOGS_PREFIX}.{app}.{fn}"


def direct_get_subject(stream: str) -> str:
    """Where a stream's messages are read one by one (its `allow_direct`)."""
    return f"{_JS_API}.DIRECT.GET.{stream}"


def dlq_subject(app: str, fn: str) -> str:
    """`autan.dlq.<app>.<fn>`: where a function's dead letters are kept."""
    return f"{DLQ_PREFIX}.{app}.{fn}"


def consumer_name(app: str, fn: str) -> str:
    """The durable pull consumer of one function (one per function on a work-queue stream)."""
    return f"fn_{app}_{fn}".replace(".", "_")


def function_key(app: str, fn: str) -> str:
    """The registry key of one function: `<app>.<fn>`."""
    return f"{app}.{fn}"


def trigger_stream_name(app: str, fn: str) -> str:
    """The stream created for a trigger no existing stream captures."""
    return f"{_TRIGGER_STREAM_PREFIX}_{app}_{fn}".replace(".", "_").replace("-", "_").upper()


def kv_stream(bucket: str) -> str:
    """The stream that holds a KV bucket."""
    return f"{_KV_STREAM_PREFIX}{bucket}"


def kv_prefix(bucket: str) -> str:
    """What a KV bucket's keys are prefixed with, as subjects."""
    return f"$KV.{bucket}."


def kv_subject(bucket: str, key: str = ">") -> str:
    """The subject of one key of a bucket (`>`: every key)."""
    return f"{_KV_PREFIX}.{bucket}.{key}"


def pull_subject(stream: str, consumer: str) -> str:
    """Where pull requests for a durable consumer's messages are sent."""
    return f"{_PULL_PREFIX}.{stream}.{consumer}"


def result_subject(app: str, fn: str, connection: str, token: str = "*") -> str:
    """Where the result of a live call of `app.fn` goes, for one caller's connection."""
    return f"{RESULT_PREFIX}.{app}.{fn}.{connection}.{token}"


def results_for(connection: str) -> str:
    """Every result a connection awaits, whichever function's."""
    return f"{RESULT_PREFIX}.*.*.{connection}.*"


def results_of(app: str, fn: str) -> str:
    """Every result of `app.fn`'s live calls: what its workers may publish."""
    return f"{RESULT_PREFIX}.{app}.{fn}.>"


def reply_subject(prefix: str, token: str = "*") -> str:
    """A reply subject under a connection's inbox prefix (`*`: all of them)."""
    return f"{prefix}.{token}"


def ack_subjects(stream: str, consumer: str) -> str:
    """The acks (and naks, in-progress) of one consumer's deliveries."""
    return f"{_ACK_PREFIX}.{stream}.{consumer}.>"


def js_api(*tokens: str) -> str:
    """A JetStream API subject: `js_api("STREAM", "INFO", name)`, `js_api(">")` for all."""
    return ".".join((_JS_API, *tokens))


def kv_read_subjects(bucket: str) -> tuple[str, ...]:
    """What reading a KV bucket asks of the JetStream API (open, get, list)."""
    stream = kv_stream(bucket)
    return (
        js_api("STREAM", "INFO", stream),
        js_api("STREAM", "MSG", "GET", stream),
        js_api("DIRECT", "GET", stream),
        js_api("DIRECT", "GET", stream, ">"),
    )


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every subject that `subject` matches is matched by `pattern` too.

    >>> subject_covers("uploads.>", "uploads.images.*")
    True
    """
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or given[index] == ">":
            return False
        if token != "*" and token != given[index]:
            return False
    return len(given) == len(wanted)


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject is matched by both `a` and `b`."""
    left, right = a.split("."), b.split(".")
    for index in range(max(len(left), len(right))):
        x = left[index] if index < len(left) else None
        y = right[index] if index < len(right) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True
