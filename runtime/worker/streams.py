"""Streamed calls: a generator function's items, sent to its caller as they come.

Each item goes to the caller's result subject as a `StreamItem` (index, payload), before
the call's `Success` (its value: the number of items) or `Failure`. The worker runs at
most `STREAM_WINDOW` items ahead of what the caller said it received: the caller's
`StreamControl` messages (`autan.ctl.<app>.<fn>.<call_id>`, heard on one subscription
per worker) move the window, or cancel the call, which closes the generator at its
`yield` (GeneratorExit there). A caller silent for `STALL_S` while the window is full
ends the call with `StreamStalled`. With `emit=`, every item is published there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from broker import (
    STREAM_WINDOW,
    CallMsg,
    StreamItem,
    Watch,
    control_subject,
    decode_control,
    encode,
    encode_value,
)
from runtime.core import FunctionSpec, Link
from runtime.worker.answers import emitted_bytes

__all__ = ["STALL_S", "Sink", "StreamCancelled", "StreamStalled", "Streams"]

STALL_S = 30.0


class StreamCancelled(Exception):
    """The caller stopped reading: the generator was closed."""


class StreamStalled(Exception):
    """The caller said nothing for `STALL_S` while the window was full."""


class Sink:
    """Where one streamed call's items go (see the module's docstring)."""

    def __init__(self, link: Link, spec: FunctionSpec, call: CallMsg) -> None:
        self._link = link
        self._spec = spec
        self.call_id = call.call_id
        self._reply = call.reply
        self.sent = 0
        # Without a caller (a trigger's call) nothing holds the items back.
        self.read = 0 if call.reply else 1 << 62
        self.cancelled = False
        self._moved = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def heard(self, read: int, cancel: bool) -> None:
        self.read = max(self.read, read)
        self.cancelled = self.cancelled or cancel
        self._moved.set()

    async def send(self, value: Any) -> None:
        """Send one item, once the window allows; StreamCancelled, StreamStalled, or
        UnencodableValue (the error at this item's place)."""
        deadline = time.monotonic() + STALL_S
        while not self.cancelled and self.sent - self.read >= STREAM_WINDOW:
            self._moved.clear()
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise StreamStalled(
                    f"the caller read nothing for {STALL_S:g} s with {STREAM_WINDOW} items "
                    "waiting; the call was ended"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), left_s)
        if self.cancelled:
            raise StreamCancelled("the caller stopped reading; the generator was closed")
        data = encode_value(value)
        index, self.sent = self.sent, self.sent + 1
        if self._reply:
            payload = await self._link.offload(f"results/{self.call_id}-{index}", data)
            item = StreamItem(call_id=self.call_id, index=index, payload=payload)
            await self._link.broker.publish(self._reply, encode(item))
        if subject := self._spec.options.emit:
            headers = {"Autan-Call-Id": self.call_id, "Autan-Item": str(index)}
            await self._link.broker.publish(subject, emitted_bytes(value), headers=headers)

    def drain_sync(self, items: Iterator[Any]) -> int:
        """Send what a sync generator yields, from its call thread; the item count."""
        try:
            for value in items:
                asyncio.run_coroutine_threadsafe(self.send(value), self._loop).result()
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # GeneratorExit at its yield when it was cut short
        return self.sent

    async def drain_async(self, items: AsyncIterator[Any]) -> int:
        """Send what an async generator yields; the item count."""
        try:
            async for value in items:
                await self.send(value)
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
        return self.sent


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
