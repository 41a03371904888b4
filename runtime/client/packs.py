"""Packs: many calls of a batched function in one message.

A row of a small model computes in microseconds, while a message costs JetStream,
the caller and the worker tens of microseconds each. So calls to a batched function
travel in packs (`CallMsg.items`): `.map()` cuts its inputs into packs, and `Packer`
gathers the `.remote()` calls made in one turn of the event loop (an HTTP server's
requests, an `asyncio.gather`) into one. Each item stays a call of its own: its
own result, error, retries and dead letter (see `runtime.worker.packs`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from broker import Submission, Success, UnencodableValue
from runtime.core import FunctionSpec, RemoteError

__all__ = ["PACK_BATCHES", "Failed", "Packer", "Sender", "pack_size"]

#: Batches per message at most.
PACK_BATCHES = 4


class Failed:
    """A pack's item that failed: whoever reaches it raises its error."""

    __slots__ = ("error",)

    def __init__(self, error: RemoteError) -> None:
        self.error = error


def pack_size(
    spec: FunctionSpec,
    window: int,
    count: int | None = None,
    *,
    item_bytes: int = 0,
    max_bytes: int = 0,
) -> int:
    """Calls per message for `spec`: 1 (no packs) unless it is batched.

    A pack carries up to `PACK_BATCHES` batches. When the `count` of calls is known
    and more than one worker may serve, packs are kept small enough that each worker
    can get one. Never more than `window`, nor, when items weigh `item_bytes`
    encoded, more than fit in `max_bytes` (beyond it a pack would travel through
    object storage).
    """
    batching = spec.options.batching
    if batching is None or batching.max_size < 2 or spec.trigger is not None:
        return 1
    size = batching.max_size * PACK_BATCHES
    workers = spec.options.scaling.max_workers
    if count is not None and workers > 1:
        size = min(size, max(batching.max_size, -(-count // workers)))
    if item_bytes and max_bytes:
        size = min(size, max_bytes // item_bytes)
    return max(1, min(size, window))


_Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class Sender(Protocol):
    """What a `Packer` sends its packs through (a `Session`)."""

    def pack_size(self, spec: FunctionSpec, window: int, count: int | None = None) -> int: ...

    async def submit_pack(
        self, spec: FunctionSpec, items: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> tuple[str, Submission]: ...

    async def unwrap_pack(self, pack_id: str, data: bytes) -> list[Any]: ...

    async def call_result(
        self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, Success]: ...


class Packer:
    """Gathers the calls of one batched function made in one turn of the event loop.

    The first call of a turn schedules a flush for the next turn; by then every task
    that was ready has added its call. A lone call goes as a call of its own, one
    loop turn later; several go as packs. A caller that stops waiting (cancelled,
    timed out) only drops its own result.
    """

    def __init__(self, session: Sender) -> None:
        self.session = session
        self._spec: FunctionSpec | None = None
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

    def call(
        self, spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._spec = spec
        self._pending.append((args, kwargs, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        spec = self._spec
        assert spec is not None
        size = self.session.pack_size(spec, window=len(pending), count=len(pending))
        for start in range(0, len(pending), size):
            task = asyncio.create_task(self._send(spec, pending[start : start + size]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, spec: FunctionSpec, calls: list[_Pending]) -> None:
        if len(calls) == 1:
            await self._send_alone(spec, calls[0])
            return
        try:
            pack_id, submission = await self.session.submit_pack(
                spec, [(args, kwargs) for args, kwargs, _ in calls]
            )
        except UnencodableValue:
            # One caller's argument cannot travel: each call alone (all at once), so that
            # only it fails.
            await asyncio.gather(*(self._send_alone(spec, call) for call in calls))
            return
        except Exception as exc:  # refused or unreachable: every caller hears it
            _fail_all(calls, exc)
            return
        try:
            values = await self.session.unwrap_pack(pack_id, await submission.result())
        except Exception as exc:
            _fail_all(calls, exc)
            return
        for (_, _, future), value in zip(calls, values, strict=True):
            if future.done():
                continue
            if isinstance(value, Failed):
                future.set_exception(value.error)
            else:
                future.set_result(value)

    async def _send_alone(self, spec: FunctionSpec, call: _Pending) -> None:
        args, kwargs, future = call
        try:
            value, _ = await self.session.call_result(spec.app, spec.name, args, kwargs)
        except Exception as exc:
            _fail_all([call], exc)
            return
        if not future.done():
            future.set_result(value)


def _fail_all(calls: list[_Pending], exc: Exception) -> None:
    for _, _, future in calls:
        if not future.done():
            future.set_exception(exc)
