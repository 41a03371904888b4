"""A connected caller: publishes calls, routes results back, one per event loop.

`SessionProvider` gives each event loop its own `Session` (a NATS connection is
bound to the loop it was made on) and runs blocking callers' work on a private
loop thread, so `embed.remote("x")` works from plain synchronous code.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import suppress
from functools import partial
from typing import Any, TypeVar

import anyio

from broker import (
    CONFIG_BUCKET,
    RESULTS_BUCKET,
    Broker,
    CallMsg,
    Failure,
    Inline,
    KeyNotFound,
    Payload,
    StoredRef,
    Submission,
    Success,
    call_subject,
    decode_pack_result,
    decode_result,
    decode_value,
    encode,
    encode_value,
    new_call_id,
    rows,
)
from runtime.coalesce import Coalesced
from runtime.errors import RemoteError
from runtime.packs import Failed, Packer, pack_size
from runtime.registry import Registry
from runtime.settings import Settings
from runtime.spec import FunctionSpec
from storage import ObjectStore, open_store

__all__ = ["Session", "SessionProvider", "storage_url"]

T = TypeVar("T")


class Session:
    """Calls out and results back over one broker connection."""

    def __init__(self, broker: Broker, registry: Registry, settings: Settings) -> None:
        self.broker = broker
        self.registry = registry
        self.settings = settings
        self._store: ObjectStore | None = None
        self._packers: dict[str, Packer] = {}
        self._item_bytes: dict[str, int] = {}  # per batched function: encoded size of an input

    @classmethod
    async def open(cls, settings: Settings, *, name: str = "autan-client") -> Session:
        broker = await Broker.connect(
            settings.nats_url, name=name, connect_timeout_s=settings.connect_timeout_s
        )
        try:
            return cls(broker, await Registry.open(broker), settings)
        except BaseException:  # the connection would be left open otherwise
            with anyio.CancelScope(shield=True):
                await broker.close()
            raise

    async def close(self) -> None:
        if self._store is not None:
            await self._store.aclose()
        await self.broker.close()

    # -- calls -------------------------------------------------------------------

    async def call(self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run `app.fn(*args, **kwargs)` remotely and return its result.

        Calls of a batched function made at once (in one turn of the event loop) travel
        together in packs: see `runtime.packs.Packer`.
        """
        spec = await self.registry.get(app, fn)
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
        return decode_value(await self.load(result.payload)), result

    async def spawn(self, app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """Queue a call whose result is kept in the results bucket; returns its id."""
        call_id = new_call_id()
        submission = await self._submit(app, fn, call_id, (args, kwargs), live=False)
        await submission.acked()
        return call_id

    async def result(self, call_id: str, timeout_s: float | None = None) -> Any:
        """The recorded result of a spawned call, waiting for it up to `timeout_s`."""
        bucket = await self.broker.bucket(RESULTS_BUCKET, ttl_s=self.settings.result_ttl_s)
        try:
            data = await bucket.wait_for(call_id, timeout_s if timeout_s is not None else 1e9)
        except KeyNotFound:
            raise TimeoutError(f"call {call_id} has no result after {timeout_s} s") from None
        return await self._unwrap(call_id, data)

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
        A batched function gets its inputs in packs (`runtime.packs`): one message for up
        to `PACK_BATCHES` batches rather than one per input.
        """
        spec = await self.registry.get(app, fn)
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
            submission = await self.submit_encoded(spec, call_id, encoded, live=True, record=False)
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
        """Calls per message for `spec` (`runtime.packs.pack_size`), kept under the size
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
        submission = await self.submit_encoded(
            spec, pack_id, encoded, live=True, record=False, items=len(items)
        )
        return pack_id, submission

    async def unwrap_pack(self, pack_id: str, data: bytes) -> list[Any]:
        """The values of a pack's items in order, a `Failed` for each failed item."""
        pack = decode_pack_result(data)
        if pack.error is not None:
            raise RemoteError.from_info(pack.error, pack_id)
        if pack.values is not None:
            every: list[Any] = decode_value(await self.load(pack.values))
            return every
        values = []
        for item in pack.items:
            match item:
                case Success(payload=payload):
                    values.append(decode_value(await self.load(payload)))
                case Failure(call_id=call_id, error=error):
                    values.append(Failed(RemoteError.from_info(error, call_id)))
        return values

    async def _submit(
        self, app: str, fn: str, call_id: str, value: Any, *, live: bool = True
    ) -> Submission:
        spec = await self.registry.get(app, fn)
        return await self.submit_encoded(
            spec, call_id, encode_value(value), live=live, record=not live
        )

    async def submit_encoded(
        self,
        spec: FunctionSpec,
        call_id: str,
        encoded: bytes,
        *,
        live: bool,
        record: bool,
        items: int = 0,
    ) -> Submission:
        """Publish a call whose `[args, kwargs]` are encoded already (`encode_value`).

        `live`: the result comes back on this connection; `record`: the worker keeps it
        in the results bucket (for `result()`, later or elsewhere). `items`: the call is
        a pack of that many calls, `encoded` their list of `[args, kwargs]`.
        """
        payload = await self.offload(f"payloads/{call_id}", encoded)
        message = CallMsg(
            call_id=call_id,
            app=spec.app,
            fn=spec.name,
            payload=payload,
            reply=self.broker.result_subject(call_id) if live else None,
            record=record,
            created_unix_s=time.time(),
            timeout_s=spec.options.timeout_s,
            items=items,
        )
        return await self.broker.submit(
            call_subject(spec.app, spec.name), call_id, encode(message), expect_result=live
        )

    async def _unwrap(self, call_id: str, data: bytes) -> Any:
        match decode_result(data):
            case Success(payload=payload):
                return decode_value(await self.load(payload))
            case Failure(error=error):
                raise RemoteError.from_info(error, call_id)

    # -- payloads ----------------------------------------------------------------

    async def offload(self, key: str, data: bytes, limit: int | None = None) -> Payload:
        """`data` inline up to `limit` bytes (default: the payload threshold), else stored
        under `key` and sent by reference."""
        if len(data) <= (self.settings.payload_threshold_bytes if limit is None else limit):
            return Inline(data)
        store = await self.store()
        await store.put(key, data)
        return StoredRef(key=key, size_bytes=len(data))

    async def load(self, payload: Payload) -> bytes:
        match payload:
            case Inline(data=data):
                return data
            case StoredRef(key=key):
                return await (await self.store()).get(key)

    async def store(self) -> ObjectStore:
        """The stack's object store (for payloads too large to travel inline)."""
        if self._store is None:
            url = await storage_url(self.broker, self.settings)
            if self._store is None:  # else a call made meanwhile opened it: one client
                self._store = open_store(
                    url,
                    access_key=self.settings.s3_access_key,
                    secret_key=self.settings.s3_secret_key,
                )
        return self._store


async def storage_url(broker: Broker, settings: Settings) -> str:
    """The configured storage URL, else the one the stack recorded, else the local default."""
    if settings.storage_url:
        return settings.storage_url
    bucket = await broker.bucket(CONFIG_BUCKET)
    with suppress(KeyNotFound):
        return (await bucket.get("storage_url")).decode()
    return settings.default_storage_url()


class SessionProvider:
    """Sessions per event loop, opened on first use from the given (or environment) settings."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Session] = (
            weakref.WeakKeyDictionary()
        )
        # The session being opened, per loop: calls that come meanwhile wait for it.
        self._opening: Coalesced[asyncio.AbstractEventLoop, Session] = Coalesced()
        self._lock = threading.Lock()
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Use these settings for sessions opened from now on."""
        self._settings = settings

    async def current(self) -> Session:
        """The running loop's session; the first call opens it, and calls made while it
        opens wait for that one (each opening its own would leave connections behind)."""
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None:
            session = await self._opening.run(loop, partial(self._open, loop))
        return session

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Session:
        session = self._sessions[loop] = await Session.open(self.settings)
        return session

    async def aclose(self) -> None:
        """Close the session of the running loop."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def run_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` to completion for a synchronous caller.

        A thread without a running event loop drives a loop of its own, so a blocking
        call crosses no thread (a cross-thread hop costs about 0.1 ms). Between calls
        that loop is idle; the NATS client catches up when it runs again. From inside
        a running loop, the call runs on a private loop thread instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._thread_own_loop().run_until_complete(_call(fn, *args))
        future = asyncio.run_coroutine_threadsafe(_call(fn, *args), self._background_loop())
        return future.result()

    def iterate_sync(
        self, fn: Callable[..., AsyncGenerator[T, None]], *args: Any, **kw: Any
    ) -> Iterator[T]:
        """Drive an async generator from synchronous code."""
        iterator = fn(*args, **kw)
        try:
            while True:
                try:
                    yield self.run_sync(iterator.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self.run_sync(iterator.aclose)

    def close(self) -> None:
        """Close the sessions of synchronous callers: this thread's and the background one."""
        own: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if own is not None and not own.is_closed():
            own.run_until_complete(self.aclose())
            own.close()
            self._local.loop = None
        with self._lock:
            thread, self._thread = self._thread, None
            loop, self._thread_loop = self._thread_loop, None
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _thread_own_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
        return loop

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="autan-sessions", daemon=True
                )
                thread.start()
                self._thread_loop, self._thread = loop, thread
            return self._thread_loop


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)
