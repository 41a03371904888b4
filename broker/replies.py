"""One reply inbox per connection, a future per awaited reply (like nats-py's request mux).

Subscribing once and routing by the last subject token avoids a subscription
per call, which would cost a round trip to the server each time.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.names import reply_subject, result_subject, results_for

__all__ = ["Reply", "ReplyMux"]


class Reply:
    """A reply's bytes and, for server status replies (e.g. 503 no responders), the code."""

    __slots__ = ("data", "status")

    def __init__(self, data: bytes, status: str | None) -> None:
        self.data = data
        self.status = status


class ReplyMux:
    """Routes messages on `<prefix>.<token>`, and results on `_R.<app>.<fn>.<connection>.
    <token>`, to the future registered for `token`."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self.prefix = nc.new_inbox()
        self.connection = self.prefix.rsplit(".", 1)[-1]  # unique per connection
        self._futures: dict[str, asyncio.Future[Reply]] = {}
        self._streams: dict[str, asyncio.Queue[Reply]] = {}  # every message, not the first
        self._subs: list[Subscription] = []
        self._results: Subscription | None = None
        self._subscribing = asyncio.Lock()

    async def start(self) -> None:
        self._subs.append(await self._nc.subscribe(reply_subject(self.prefix), cb=self._on_msg))

    async def listen_for_results(self) -> None:
        """Subscribe to this connection's results, on the first live call (a worker, whose
        NATS identity may not, makes none)."""
        if self._results is not None:
            return
        async with self._subscribing:
            if self._results is None:
                self._results = await self._nc.subscribe(
                    results_for(self.connection), cb=self._on_msg
                )
                self._subs.append(self._results)

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(nats.errors.Error):  # the connection may be gone
                await sub.unsubscribe()
        self._subs.clear()
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._streams.clear()

    def subject(self, token: str) -> str:
        return reply_subject(self.prefix, token)

    def result_subject(self, app: str, fn: str, token: str) -> str:
        return result_subject(app, fn, self.connection, token)

    def expect(self, token: str) -> asyncio.Future[Reply]:
        """A future for the next message on `subject(token)`; call `forget` if abandoned."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._futures[token] = future
        return future

    def expect_stream(self, token: str) -> asyncio.Queue[Reply]:
        """Every message on `subject(token)` (or its result subject), in order, until
        `forget`: a streamed call's items, then its result."""
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._streams[token] = queue
        return queue

    def forget(self, token: str) -> None:
        self._streams.pop(token, None)
        future = self._futures.pop(token, None)
        if future is not None and not future.done():
            future.cancel()

    async def _on_msg(self, msg: Msg) -> None:
        token = msg.subject.rsplit(".", 1)[-1]
        if (stream := self._streams.get(token)) is not None:
            stream.put_nowait(Reply(msg.data, None))
            return
        future = self._futures.pop(token, None)
        if future is not None and not future.done():
            status = msg.headers.get("Status") if msg.headers else None
            future.set_result(Reply(msg.data, status))
