"""A connected caller: publishes calls and routes results back, over the shared `Link`.

    async with await Session.open(settings) as session:
        value = await session.call("demo", "echo", ("hi",), {})

`SessionProvider` (`client.sessions`) keeps one per event loop for the handles.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any

import anyio

from broker import (
    Broker,
    Failure,
    KeyNotFound,
    Submission,
    Success,
    decode_pack_result,
    decode_result,
    decode_value,
    encode_value,
    new_call_id,
    rows,
)
from runtime.client.packs import Failed, Packer, pack_size
from runtime.core import (
    CALLER,
    CallNotFound,
    FunctionSpec,
    InvalidOption,
    Link,
    Registry,
    RemoteError,
    Settings,
    kept_items,
    stream_call,
)

__all__ = ["Session"]


class Session:
    """Calls out and results back over one `Link` (a NATS connection, the registry, the
    payload store)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._packers: dict[str, Packer] = {}
        self._item_bytes: dict[str, int] = {}  # per batched function: encoded size of an input

    @classmethod
    async def open(
        cls, settings: Settings, *, name: str = "autan-client", role: str = CALLER
    ) -> Session:
        return cls(await Link.open(settings, name=name, role=role))

    async def close(self) -> None:
        await self.link.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    @property
    def broker(self) -> Broker:
        return self.link.broker

    @property
    def registry(self) -> Registry:
        return self.link.registry

    @property
    def settings(self) -> Settings:
        return self.link.settings

    # -- calls -------------------------------------------------------------------

    async def call(self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run `app.fn(*args, **kwargs)` remotely and return its result.

        Calls of a batched function made at once (in one turn of the event loop) travel
        together in packs: see `client.packs.Packer`.
        """
        spec = _one_result(await self.registry.get(app, fn), ".remote()")
        if self.pack_size(spec, window=2) > 1:
            packer = self._packers.get(spec.qualname)
            if packer is None:
                packer = self._packers[spec.qualname] = Packer(self)
            return await packer.call(spec, args, kwargs)
        value, _ = await self.call_result(app, fn, args, kwargs)
        return value

    async def call_result(
        self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Any, Success]:
        """Like `call`, with the result's metadata: worker, attempts, timings, cold start."""
        call_id = new_call_id()
        submission = await self._submit(app, fn, call_id, (args, kwargs), live=True)
        result = decode_result(await submission.result())
        if isinstance(result, Failure):
            raise RemoteError.from_info(result.error, call_id)
        return decode_value(await self.link.load(result.payload)), result

    async def spawn(self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Queue a call whose result is kept in the results bucket; returns its id."""
        call_id = new_call_id()
        spec = await self.registry.get(app, fn)  # a generator's items are kept: call.items()
        submission = await self._submit(app, fn, call_id, (args, kwargs), live=False)
        await asyncio.gather(submission.acked(), self.link.remember_spawned(call_id, spec))
        return call_id

    async def result(self, call_id: str, timeout_s: float | None = None) -> Any:
        """The recorded result of a spawned call, waiting for it up to `timeout_s`:
        TimeoutError when it is still pending then, CallNotFound at once when no spawned
        call has this id (or its result expired)."""
        bucket = await self.link.results()
        try:
            return await self._unwrap(call_id, await bucket.get(call_id))
        except KeyNotFound:
            pass
        if not await self.link.spawned(call_id):
            raise CallNotFound(
                f"no spawned call {call_id}: it never existed, or it ended more than "
                f"{self.settings.result_ttl_s:g} s ago and its result was dropped "
                "(result_ttl_s)"
            )
        try:
            data = await bucket.wait_for(call_id, timeout_s if timeout_s is not None else 1e9)
        except KeyNotFound:
            raise TimeoutError(f"call {call_id} is still pending after {timeout_s} s") from None
        return await self._unwrap(call_id, data)

    async def stream(
        self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """The items a generator function yields for this call, as they come, in order
        (`core.stream_call`): the worker runs at most `STREAM_WINDOW` items ahead of what
        was read here; closing the iterator early stops the generator."""
        spec = await self.registry.get(app, fn)
        items = stream_call(self.link, spec, new_call_id(), args, kwargs)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    def kept(self, call_id: str, start: int = 0) -> AsyncGenerator[Any, None]:
        """The items of spawned stream `call_id` from item `start` (`core.kept_items`)."""
        return kept_items(self.link, call_id, start)

    async def map(
        self,
        app: str,
        fn: str,
        arg_tuples: Iterable[tuple[Any, ...]],
        *,
        window: int,
        count: int | None = None,
    ) -> AsyncIterator[Any]:
        """Results in input order; publishing runs ahead of the results, `window` at most.

        The window is refilled in chunks so that publishes leave in few socket writes.
        A batched function gets its inputs in packs (`client.packs`): one message for up
        to `PACK_BATCHES` batches rather than one per input.
        """
        spec = _one_result(await self.registry.get(app, fn), ".map()")
        if self.pack_size(spec, window, count) > 1:
            async for value in self._map_packed(spec, arg_tuples, window=window, count=count):
                yield value
            return
        inputs = iter(arg_tuples)
        in_flight: deque[tuple[str, Submission]] = deque()
        refill_at = max(1, window - min(64, max(1, window // 4)))
        try:
            await self._fill(spec, inputs, in_flight, window)
            while in_flight:
                call_id, submission = in_flight.popleft()
                yield await self._unwrap(call_id, await submission.result())
                if len(in_flight) <= refill_at:
                    await self._fill(spec, inputs, in_flight, window)
        finally:
            for _, submission in in_flight:
                submission.forget()

    async def _fill(
        self,
        spec: FunctionSpec,
        inputs: Iterator[tuple[Any, ...]],
        in_flight: deque[tuple[str, Submission]],
        window: int,
    ) -> None:
        while len(in_flight) < window:
            args = next(inputs, None)
            if args is None:
                return
            call_id = new_call_id()
            encoded = encode_value((args, {}))
            submission = await self.link.submit(spec, call_id, encoded, live=True, record=False)
            in_flight.append((call_id, submission))
            if len(in_flight) % 64 == 0:
                await asyncio.sleep(0)  # let the rest of the loop run between chunks

    async def _map_packed(
        self,
        spec: FunctionSpec,
        arg_tuples: Iterable[tuple[Any, ...]],
        *,
        window: int,
        count: int | None,
    ) -> AsyncIterator[Any]:
        """`map` in packs (`pack_size`), at most `window` inputs in flight."""
        inputs = iter(arg_tuples)
        in_flight: deque[tuple[str, Submission, int]] = deque()
        held = 0
        try:
            while True:
                while held < window:
                    size = min(self.pack_size(spec, window, count), window - held)
                    items: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
                        (args, {}) for args in itertools.islice(inputs, size)
                    ]
                    if not items:
                        break
                    in_flight.append((*await self.submit_pack(spec, items), len(items)))
                    held += len(items)
                    if len(in_flight) == 1:
                        # Let the connection send it now: a worker starts on the first
                        # pack while the rest are encoded (else they left together, ~9 ms
                        # later for 32 packs of 128 rows of 384 floats).
                        await asyncio.sleep(0)
                if not in_flight:
                    return
                pack_id, submission, items_n = in_flight.popleft()
                held -= items_n
                for value in await self.unwrap_pack(pack_id, await submission.result()):
                    if isinstance(value, Failed):
                        raise value.error
                    yield value
        finally:
            for _, submission, _ in in_flight:
                submission.forget()

    def pack_size(self, spec: FunctionSpec, window: int, count: int | None = None) -> int:
        """Calls per message for `spec` (`client.packs.pack_size`), kept under the size
        at which a message goes through object storage once its inputs' size is known."""
        return pack_size(
            spec,
            window,
            count,
            item_bytes=self._item_bytes.get(spec.qualname, 0),
            max_bytes=self.settings.payload_threshold_bytes,
        )

    async def submit_pack(
        self, spec: FunctionSpec, items: list[tuple[tuple[Any, ...], dict[str, Any]]]
    ) -> tuple[str, Submission]:
        pack_id = new_call_id()
        firsts = [args[0] for args, kwargs in items if len(args) == 1 and not kwargs]
        stacked = rows(firsts) if len(firsts) == len(items) else firsts
        # Arrays of one shape go stacked (one copy per pack); anything else item by item.
        encoded = encode_value(items if stacked is firsts else stacked)
        self._item_bytes[spec.qualname] = max(1, len(encoded) // len(items))
        submission = await self.link.submit(
            spec, pack_id, encoded, live=True, record=False, items=len(items)
        )
        return pack_id, submission

    async def unwrap_pack(self, pack_id: str, data: bytes) -> list[Any]:
        """The values of a pack's items in order, a `Failed` for each failed item."""
        pack = decode_pack_result(data)
        if pack.error is not None:
            raise RemoteError.from_info(pack.error, pack_id)
        if pack.values is not None:
            every: list[Any] = decode_value(await self.link.load(pack.values))
            return every
        values = []
        for item in pack.items:
            match item:
                case Success(payload=payload):
                    values.append(decode_value(await self.link.load(payload)))
                case Failure(call_id=call_id, error=error):
                    values.append(Failed(RemoteError.from_info(error, call_id)))
        return values

    async def _submit(
        self, app: str, fn: str, call_id: str, value: Any, *, live: bool = True
    ) -> Submission:
        spec = await self.registry.get(app, fn)
        return await self.link.submit(
            spec, call_id, encode_value(value), live=live, record=not live
        )

    async def _unwrap(self, call_id: str, data: bytes) -> Any:
        match decode_result(data):
            case Success(payload=payload):
                return decode_value(await self.link.load(payload))
            case Failure(error=error):
                raise RemoteError.from_info(error, call_id)


def _one_result(spec: FunctionSpec, how: str) -> FunctionSpec:
    """`spec`, unless it streams (a generator): InvalidOption saying how to call it."""
    if spec.options.streams:
        raise InvalidOption(
            f"{spec.qualname} is a generator: iterate fn.remote_gen(...) (or "
            f"fn.remote_gen.aio(...) in async code) rather than {how}"
        )
    return spec
