"""Live workers, as they announce themselves: a heartbeat key each, expiring when they stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import anyio
import msgspec

from broker import WORKERS_BUCKET, Broker, Bucket, ConsumerNotFound
from runtime.core.spec import FunctionSpec

__all__ = [
    "DURATION_BUCKETS_MS",
    "HEARTBEAT_S",
    "CallCounts",
    "FunctionState",
    "WorkerDirectory",
    "WorkerInfo",
    "function_states",
]

HEARTBEAT_S = 5.0
_EXPIRY_S = 3 * HEARTBEAT_S


# Upper bounds of the run-time and queue-wait buckets; one more bucket past the last.
DURATION_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10_000, 60_000)


class CallCounts(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's calls so far (an item of a pack counts as a call)."""

    calls: int = 0
    errors: dict[str, int] = {}  # failed attempts by error type (16 types, then "other")
    run_ms: tuple[int, ...] = ()  # calls per DURATION_BUCKETS_MS bucket, not cumulative
    run_ms_sum: float = 0.0
    wait_ms: tuple[int, ...] = ()  # the same for the time from publish to run
    wait_ms_sum: float = 0.0


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker announces: who, for what, in which state, on which providers."""

    worker_id: str
    host: str = ""
    function: str
    version: str
    state: str
    providers: tuple[str, ...] = ()
    pid: int = 0
    started_unix_s: float = 0.0
    cold_start_ms: dict[str, float] = {}
    batch_sizes: dict[int, int] = {}  # batches run so far, by size
    isolated: bool = False  # in a sandbox of its own (user, namespaces, limits)
    calls_per_message: float = 1.0  # above 1 when calls come in packs (`runtime.client.packs`)
    counts: CallCounts = CallCounts()
    template: str = ""  # forked from a function template: "hit" or "built" (waited for it)


class WorkerDirectory:
    """Announce, remove and list workers (keys `<app>.<fn>.<worker id>`)."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket

    @classmethod
    async def open(cls, broker: Broker) -> WorkerDirectory:
        return cls(await broker.bucket(WORKERS_BUCKET, ttl_s=_EXPIRY_S))

    async def beat(self, info: WorkerInfo) -> None:
        await self._bucket.put(_key(info), msgspec.json.encode(info))

    async def remove(self, info: WorkerInfo) -> None:
        await self._bucket.delete(_key(info))

    async def wait_until(
        self, done: Callable[[list[WorkerInfo]], bool], timeout_s: float
    ) -> list[WorkerInfo]:
        """Watch the announcements until `done(live workers)` holds; TimeoutError after timeout."""
        live: dict[str, WorkerInfo] = {}
        with anyio.fail_after(timeout_s):
            async for key, value in self._bucket.watch():
                if value is None:
                    live.pop(key, None)
                else:
                    live[key] = msgspec.json.decode(value, type=WorkerInfo)
                if done(list(live.values())):
                    return list(live.values())
        raise TimeoutError  # the watch never ends by itself

    async def announcements(self) -> AsyncIterator[WorkerInfo]:
        """Every current announcement, then each new one as workers make them."""
        async for _, value in self._bucket.watch():
            if value is not None:
                yield msgspec.json.decode(value, type=WorkerInfo)

    async def alive(self) -> list[WorkerInfo]:
        values = await self._bucket.values()
        return [msgspec.json.decode(value, type=WorkerInfo) for value in values.values()]


def _key(info: WorkerInfo) -> str:
    return f"{info.function}.{info.worker_id}".replace(" ", "_")


@dataclass(frozen=True)
class FunctionState:
    """One function as `autan ls` and `GET /v1/functions` show it."""

    spec: FunctionSpec
    workers: list[WorkerInfo]  # its live workers
    backlog: int | None  # calls pending or unacked; None when its consumer is gone
    missing: ConsumerNotFound | None = None  # why there is no backlog


async def function_states(broker: Broker, specs: Iterable[FunctionSpec]) -> list[FunctionState]:
    """Each of `specs` (sorted by name) with its live workers and its backlog, the backlogs
    read concurrently."""
    ordered = sorted(specs, key=lambda spec: spec.qualname)
    alive = await (await WorkerDirectory.open(broker)).alive()

    async def state(spec: FunctionSpec) -> FunctionState:
        workers = [w for w in alive if w.function == spec.qualname]
        try:
            backlog = await broker.backlog(spec.source)
        except ConsumerNotFound as exc:
            return FunctionState(spec, workers, None, exc)
        return FunctionState(spec, workers, backlog.total)

    return list(await asyncio.gather(*(state(spec) for spec in ordered)))
