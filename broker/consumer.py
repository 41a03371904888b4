"""Pulling calls from a durable consumer with a standing credit window.

nats-py's `fetch` sends a fresh pull request (two, when nothing is waiting)
per batch. Here pull requests are topped up before the window runs dry, so
calls keep flowing while earlier ones run; status messages give back the
credits of expired requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from broker.batching import batch_wait_s
from broker.names import pull_subject

__all__ = ["Delivery", "PullFeed"]

_REQUEST_EXPIRES_S = 1.0  # also how long a stopping feed may still receive


class Delivery:
    """One delivered message: its bytes, how often it was delivered, and its acks."""

    __slots__ = (
        "_msg",
        "data",
        "num_delivered",
        "num_pending",
        "received_at",
        "stored_unix_s",
        "stream_seq",
        "subject",
    )

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.data: bytes = msg.data
        self.subject: str = msg.subject
        self.received_at = time.monotonic()
        # The ack subject carries the metadata: $JS.ACK.<stream>.<consumer>.<delivered>.
        # <stream seq>.<consumer seq>.<ns timestamp>.<pending> (v2 adds domain and account
        # hash after ACK). Split it once rather than building nats-py's Metadata.
        tokens = msg.reply.split(".")
        base = 2 if len(tokens) == 9 else 4
        self.num_delivered = int(tokens[base + 2])
        self.stream_seq = int(tokens[base + 3])
        self.stored_unix_s = int(tokens[base + 5]) / 1e9
        self.num_pending = int(tokens[base + 6])

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float = 0.0) -> None:
        """Hand the message back; JetStream redelivers it after `delay_s`."""
        await self._msg.nak(delay=delay_s or None)

    async def in_progress(self) -> None:
        """Reset the ack deadline: the call is still running."""
        await self._msg.in_progress()

    async def term(self) -> None:
        """Never deliver this message again."""
        await self._msg.term()


class PullFeed:
    """Messages of one durable pull consumer, `window` of them requested at a time."""

    def __init__(
        self, nc: NatsClient, stream: str, consumer: str, *, window: int, ack_wait_s: float = 30.0
    ) -> None:
        self._nc = nc
        self.ack_wait_s = ack_wait_s
        self._next_subject = pull_subject(stream, consumer)
        self.window = max(1, window)
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._outstanding = 0
        self._last_activity = time.monotonic()
        self._sub: Subscription | None = None
        self._stopping = False
        self._settled = asyncio.Event()  # a request was filled or expired

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)

    def held(self) -> list[Delivery]:
        """Delivered here but not yet handed out: their ack deadline runs too."""
        return list(self._queue._queue)  # type: ignore[attr-defined]

    async def stop(self) -> list[Delivery]:
        """Stop asking; returns the messages received but never handed out.

        Unsubscribing at once would drop the messages already on their way to this feed
        (and, in a cluster, the server holding a request learns of the unsubscribe later
        still): each would wait out the ack deadline, held by no one (a redeploy's stall).
        So the feed stops asking, keeps receiving until its requests have been filled or
        have expired (at most their expiry), and hands back what came meanwhile.
        """
        self._stopping = True
        deadline = time.monotonic() + _REQUEST_EXPIRES_S + 1.0
        while self._sub is not None and self._outstanding > 0 and time.monotonic() < deadline:
            self._settled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), deadline - time.monotonic())
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        return left

    async def next_batch(
        self, max_n: int, max_delay_s: float, idle_s: float, preferred: tuple[int, ...] = ()
    ) -> list[Delivery]:
        """Up to `max_n` messages: wait `idle_s` for the first, then form a batch.

        How long to wait for more is `batch_wait_s` (at most `max_delay_s` after the
        first arrived). Returns an empty list when nothing arrived within `idle_s`.
        """
        await self._top_up()
        try:
            first = await asyncio.wait_for(self._queue.get(), idle_s)
        except TimeoutError:
            self._expire_lost_requests()
            return []
        batch = [first, *self._take_ready(max_n - 1)]
        while (wait_s := self._wait_s(batch, max_n, max_delay_s, preferred)) > 0:
            await self._top_up()
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), wait_s))
            except TimeoutError:
                break
            batch.extend(self._take_ready(max_n - len(batch)))
        await self._top_up()
        return batch

    def _wait_s(
        self, batch: list[Delivery], max_n: int, max_delay_s: float, preferred: tuple[int, ...]
    ) -> float:
        return batch_wait_s(
            len(batch),
            max_size=max_n,
            waited_s=time.monotonic() - batch[0].received_at,
            max_delay_s=max_delay_s,
            server_pending=batch[-1].num_pending,
            queued=self._queue.qsize(),
            preferred=preferred,
        )

    def _take_ready(self, limit: int) -> list[Delivery]:
        taken: list[Delivery] = []
        while len(taken) < limit and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _top_up(self) -> None:
        held = self._outstanding + self._queue.qsize()
        if self._sub is None or self._stopping or held > self.window // 2:
            return
        want = self.window - held
        request = {"batch": want, "expires": int(_REQUEST_EXPIRES_S * 1e9)}
        self._outstanding += want
        await self._nc.publish(self._next_subject, json.dumps(request).encode(), self._inbox)

    def forget_requests(self) -> None:
        """The connection was re-established: requests made before are gone with it."""
        self._outstanding = 0
        self._last_activity = time.monotonic()

    def _expire_lost_requests(self) -> None:
        # A request can vanish without a status (server restart, reconnect):
        # after its expiry has long passed with no sign of life, forget its credits.
        if time.monotonic() - self._last_activity > _REQUEST_EXPIRES_S + 2:
            self.forget_requests()

    async def _on_msg(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._outstanding = max(0, self._outstanding - 1)
            self._queue.put_nowait(Delivery(msg))
        elif status in ("408", "409"):
            pending = int((msg.headers or {}).get("Nats-Pending-Messages", "0") or 0)
            self._outstanding = max(0, self._outstanding - pending) if pending else 0
        self._settled.set()
