"""Which of the stack's long-running parts are up: each reports itself.

The control plane and the HTTP bridge each write a `PartReport` every `REPORT_EVERY_S`
into the status bucket, under `_part.<kind>.<instance>` (no function's name starts with
`_`, so no function's status shares a key), and delete it when they stop. `autan status`
reads them: a report older than `STALE_AFTER_S` means that part is down (killed, hung,
or cut off from NATS). What a part sees wrong around it (object storage unreachable)
travels in its report.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import STATUS_BUCKET, Broker, BrokerError, BrokerUnavailable, PermissionDenied
from runtime.core.link import Link
from storage import StorageError

__all__ = [
    "PART_PREFIX",
    "REPORT_EVERY_S",
    "STALE_AFTER_S",
    "PartReport",
    "PartReporter",
    "instance_name",
    "jetstream_problem",
    "part_key",
    "read_parts",
    "storage_problem",
]

log = structlog.get_logger("autan")

PART_PREFIX = "_part"
REPORT_EVERY_S = 2.0
STALE_AFTER_S = 6.0  # three reports missed
_PROBE_KEY = "autan-probe/absent"  # stat of a key nobody writes: a read, nothing kept


class PartReport(msgspec.Struct, frozen=True, kw_only=True):
    """One running part of the stack, as it last said of itself."""

    kind: str  # "control" (scaler and provider) or "bridge" (the HTTP gateway)
    instance: str
    host: str
    pid: int
    started_unix_s: float
    updated_unix_s: float
    where: str = ""  # the bridge's URL; the NATS URL the control plane uses
    problem: str | None = None  # what it cannot reach (object storage), with the cause

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.updated_unix_s


def instance_name(*extra: object) -> str:
    """This host's name, and `extra`, as one KV key token."""
    raw = "_".join([socket.gethostname(), *map(str, extra)])
    return re.sub(r"[^A-Za-z0-9_-]", "-", raw)[:64] or "host"


def part_key(kind: str, instance: str) -> str:
    return f"{PART_PREFIX}.{kind}.{instance}"


async def read_parts(broker: Broker) -> list[PartReport]:
    """Every part's last report (stale ones too: `age_s` says how old)."""
    bucket = await broker.bucket(STATUS_BUCKET)
    values = await bucket.values()
    reports = [
        msgspec.json.decode(value, type=PartReport)
        for key, value in values.items()
        if key.startswith(PART_PREFIX + ".") and value
    ]
    return sorted(reports, key=lambda report: (report.kind, report.instance))


async def jetstream_problem(
    broker: Broker, bucket: str, key: str, timeout_s: float = 2.0, *, ttl_s: float | None = None
) -> str | None:
    """None when JetStream stores a write (of `key` in `bucket`) within `timeout_s`, else
    why not: a call is a write, and a full disk refuses writes before reads."""
    try:
        with anyio.fail_after(timeout_s):
            await (await broker.bucket(bucket, ttl_s=ttl_s)).put(key, b"")
    except TimeoutError:
        return (
            f"JetStream at {broker.url} did not store a write within {timeout_s:g} s "
            "(is its disk full?)"
        )
    except BrokerError as exc:
        return str(exc)
    return None


async def storage_problem(link: Link, timeout_s: float = 3.0) -> str | None:
    """None when the stack's object storage answers a read within `timeout_s`; else why
    not (a call whose payload is large, and every cold start, needs it)."""
    try:
        with anyio.fail_after(timeout_s):
            await (await link.store()).stat(_PROBE_KEY)
    except TimeoutError:
        return f"object storage did not answer within {timeout_s:g} s"
    except StorageError as exc:
        return f"object storage: {exc}"
    return None


class PartReporter:
    """Writes one part's report every `REPORT_EVERY_S` until cancelled, then deletes it.

    `broker` gives the connection to write with (it may raise BrokerUnavailable while
    NATS is away: that report is skipped); `problem` says what this part sees wrong.
    """

    def __init__(
        self,
        broker: Callable[[], Broker],
        kind: str,
        instance: str,
        *,
        where: str | Callable[[], str] = "",
        problem: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self._broker = broker
        self._problem = problem
        self._where = where
        self._key = part_key(kind, instance)
        self._report = PartReport(
            kind=kind,
            instance=instance,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_unix_s=time.time(),
            updated_unix_s=0.0,
        )

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                if not await self._write():
                    return
                await anyio.sleep(REPORT_EVERY_S)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self._delete()

    async def _write(self) -> bool:
        """Report once; False when this part may not write reports (said once)."""
        problem = await self._problem() if self._problem is not None else None
        where = self._where() if callable(self._where) else self._where
        report = msgspec.structs.replace(
            self._report, updated_unix_s=time.time(), problem=problem, where=where
        )
        try:
            bucket = await self._broker().bucket(STATUS_BUCKET)
            await bucket.put(self._key, msgspec.json.encode(report))
        except PermissionDenied as exc:
            log.warning("cannot report to 'autan status'", part=self._key, error=str(exc))
            return False
        except BrokerUnavailable:
            pass  # NATS away: this part looks down meanwhile, which it is, to the stack
        return True

    async def _delete(self) -> None:
        try:
            bucket = await self._broker().bucket(STATUS_BUCKET)
            await bucket.delete(self._key)
        except BrokerError:
            pass  # left behind: it goes stale, and `autan status` says so
