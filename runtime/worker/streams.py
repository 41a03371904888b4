"""Streamed calls: a generator function's items, sent to its caller as they come.

Items go to the caller's result subject as `StreamItem` messages (the first item's index,
then payloads), before the call's `Success` (its value: the number of items) or `Failure`.
The generator's thread (or, async, its task) encodes each item and hands it to the event
loop, waking it once for what piles up meanwhile; one publisher task there sends what has
queued, in order, in one message (the first item alone, the next ones together while the
previous went out). Only after the first item does the thread wait, until it is sent:
else it would hold the GIL for a window's worth of items while the first waits. The
generator runs at most `STREAM_WINDOW` items ahead of what the caller said it received:
the caller's `StreamControl` messages (`autan.ctl.<app>.<fn>.<call_id>`, heard on one
subscription per worker) move the window, or cancel the call, which closes the generator
at its `yield` (GeneratorExit there). A caller silent for `STALL_S` while the window is
full ends the call with `StreamStalled`. With `emit=`, every item is published there too.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from broker import (
    STREAM_WINDOW,
    CallMsg,
    Payload,
    StreamItem,
    Watch,
    control_subject,
    decode_control,
    encode,
    encode_value,
    items_subject,
)
from runtime.core import FunctionSpec, Link
from runtime.worker.answers import emitted_bytes

__all__ = ["STALL_S", "Sink", "StreamCancelled", "StreamStalled", "Streams"]

STALL_S = 30.0
_ITEMS_PER_MESSAGE = 256
_BYTES_PER_MESSAGE = 256 * 1024
_FIRST_OUT_S = 1.0


class StreamCancelled(Exception):
    """The caller stopped reading: the generator was closed."""


class StreamStalled(Exception):
    """The caller said nothing for `STALL_S` while the window was full."""


class Sink:
    """Where one streamed call's items go (see the module's docstring)."""

    def __init__(self, link: Link, spec: FunctionSpec, call: CallMsg) -> None:
        self._link = link
        self._emit = spec.options.emit
        self.call_id = call.call_id
        self._reply = call.reply
        # A spawned stream's items are kept (JetStream) for readers to come.
        self._kept = items_subject(spec.app, spec.name, call.call_id) if call.record else None
        self.sent = 0  # items handed to the publisher
        # Without a caller (a trigger's call) nothing holds the items back.
        self.read = 0 if call.reply else 1 << 62
        self.cancelled = False
        self._window = threading.Condition()
        self._moved = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._queued: list[tuple[bytes, bytes | None]] = []  # encoded, emitted
        self._published = 0
        self._publisher: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        # From the generator's thread: items wait here, and one wake-up at a time is sent to
        # the loop (a call per item would crowd out the connection's own writes).
        self._handed: collections.deque[tuple[bytes, bytes | None]] = collections.deque()
        self._waking = False
        self._first_out = threading.Event()

    def heard(self, read: int, cancel: bool) -> None:
        """The caller's word (on the loop): how far it read, or that it left."""
        with self._window:
            self.read = max(self.read, read)
            self.cancelled = self.cancelled or cancel
            self._window.notify_all()
        self._moved.set()

    # -- a sync generator, in its call thread -------------------------------------------

    def drain_sync(self, items: Iterator[Any]) -> int:
        """Send what a sync generator yields, from its call thread; the item count."""
        try:
            for value in items:
                self._wait_sync()
                encoded = self._encode(value)
                self._hand_over(encoded)
                if self.sent == 1:  # the first goes out before the next takes the GIL
                    self._first_out.wait(_FIRST_OUT_S)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # GeneratorExit at its yield when it was cut short
            # What was handed over goes out first: an error comes after the items before it.
            asyncio.run_coroutine_threadsafe(self._drained(), self._loop).result()
        if self._failed is not None:
            raise self._failed
        return self.sent

    def _wait_sync(self) -> None:
        deadline = time.monotonic() + STALL_S
        with self._window:
            while not self.cancelled and self.sent - self.read >= STREAM_WINDOW:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    raise self._stalled()
                self._window.wait(left_s)
            if self.cancelled:
                raise StreamCancelled("the caller stopped reading; the generator was closed")
            self.sent += 1

    # -- an async generator, on the loop ------------------------------------------------

    async def drain_async(self, items: AsyncIterator[Any]) -> int:
        """Send what an async generator yields; the item count."""
        try:
            async for value in items:
                await self._wait_async()
                self._enqueue(self._encode(value))
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
            await self._drained()
        if self._failed is not None:
            raise self._failed
        return self.sent

    async def _wait_async(self) -> None:
        deadline = time.monotonic() + STALL_S
        while not self.cancelled and self.sent - self.read >= STREAM_WINDOW:
            self._moved.clear()
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise self._stalled()
            try:
                await asyncio.wait_for(self._moved.wait(), left_s)
            except TimeoutError:
                continue
        if self.cancelled:
            raise StreamCancelled("the caller stopped reading; the generator was closed")
        self.sent += 1

    # -- out, on the loop ---------------------------------------------------------------

    def _encode(self, value: Any) -> tuple[bytes, bytes | None]:
        """The item as it travels, and as `emit=` publishes it (UnencodableValue: the
        error at this item's place)."""
        return encode_value(value), emitted_bytes(value) if self._emit else None

    def _hand_over(self, encoded: tuple[bytes, bytes | None]) -> None:
        """From the generator's thread: queue the item, waking the loop if it is not yet."""
        self._handed.append(encoded)
        if not self._waking:
            self._waking = True
            self._loop.call_soon_threadsafe(self._take_handed)

    def _take_handed(self) -> None:
        self._waking = False  # first: an item handed after this wakes the loop again
        while self._handed:
            self._queued.append(self._handed.popleft())
        self._start_publisher()

    def _enqueue(self, encoded: tuple[bytes, bytes | None]) -> None:
        self._queued.append(encoded)
        self._start_publisher()

    def _start_publisher(self) -> None:
        if self._queued and (self._publisher is None or self._publisher.done()):
            self._publisher = self._loop.create_task(self._publish())

    async def _publish(self) -> None:
        try:
            while self._queued and self._failed is None:
                taken, size = 0, 0
                while taken < min(len(self._queued), _ITEMS_PER_MESSAGE):
                    size += len(self._queued[taken][0])
                    taken += 1
                    if size >= _BYTES_PER_MESSAGE:
                        break
                batch, self._queued = self._queued[:taken], self._queued[taken:]
                await self._send(batch)
        except Exception as exc:  # NATS or storage away: the call fails with it
            self._failed = exc
        finally:
            self._first_out.set()  # sent or not: the generator's thread waits no more

    async def _send(self, batch: list[tuple[bytes, bytes | None]]) -> None:
        first, self._published = self._published, self._published + len(batch)
        if self._reply or self._kept:
            payloads: list[Payload] = [
                await self._link.offload(f"results/{self.call_id}-{first + i}", data)
                for i, (data, _) in enumerate(batch)
            ]
            item = encode(StreamItem(call_id=self.call_id, index=first, payloads=payloads))
            if self._kept:
                await self._link.broker.items.keep(self._kept, f"{self.call_id}-{first}", item)
            if self._reply:
                await self._link.broker.publish(self._reply, item)
        self._first_out.set()
        await asyncio.sleep(0)  # let the connection write it before the next batch
        if self._emit:
            for offset, (_, emitted) in enumerate(batch):
                headers = {"Autan-Call-Id": self.call_id, "Autan-Item": str(first + offset)}
                await self._link.broker.publish(self._emit, emitted or b"", headers=headers)

    async def _drained(self) -> None:
        """Once every item handed over went out, or could not (`_failed` says why)."""
        self._take_handed()
        while self._publisher is not None and not self._publisher.done():
            await asyncio.shield(self._publisher)
            self._take_handed()

    def _stalled(self) -> StreamStalled:
        return StreamStalled(
            f"the caller read nothing for {STALL_S:g} s with {STREAM_WINDOW} items "
            "waiting; the call was ended"
        )


class Streams:
    """The streamed calls a worker runs now, and its one subscription to their callers."""

    def __init__(self, link: Link, spec: FunctionSpec) -> None:
        self._link = link
        self._spec = spec
        self._sinks: dict[str, Sink] = {}
        self._subscription: Watch | None = None

    async def open(self, call: CallMsg) -> Sink:
        if self._subscription is None:
            subject = control_subject(self._spec.app, self._spec.name)
            self._subscription = await self._link.broker.listen(subject, self._heard)
        sink = self._sinks[call.call_id] = Sink(self._link, self._spec, call)
        return sink

    def close(self, sink: Sink) -> None:
        self._sinks.pop(sink.call_id, None)

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.stop()
            self._subscription = None

    def _heard(self, subject: str, data: bytes) -> None:
        sink = self._sinks.get(subject.rsplit(".", 1)[-1])
        if sink is None:
            return  # a call this worker does not run (another worker's, or ended)
        try:
            control = decode_control(data)
        except (ValueError, TypeError):  # msgspec's DecodeError is a ValueError
            return  # not a control message: ignored
        sink.heard(control.read, control.cancel)
