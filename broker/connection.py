"""The connection to NATS and JetStream: buckets, calls out and results back in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue

from broker.advisories import UndeliveredFeed
from broker.closing import close_connection
from broker.consumer import PullFeed
from broker.deadletters import DeadLetterStream
from broker.errorlog import ErrorLog
from broker.errors import (
    BrokerError,
    BrokerUnavailable,
    PublishRejected,
    QueueFull,
)
from broker.ids import new_call_id
from broker.items import ItemStore
from broker.kv import Bucket
from broker.logs import LogStream
from broker.names import INBOX_PREFIX, kv_prefix, kv_stream
from broker.permissions import role_inbox
from broker.replies import Reply, ReplyMux
from broker.servers import default_replicas, not_connected, server_urls
from broker.streams import StreamAdmin
from broker.tls import NatsTls

__all__ = ["Broker", "StreamSubmission", "Submission", "Watch"]

log = structlog.get_logger("autan.broker")

# JetStream API error codes that mean "the stream is at its limits" (discard-new).
_QUEUE_FULL_CODES = {10077, 10078, 10047}


class Broker(StreamAdmin):
    """One NATS connection with its JetStream context and one reply inbox."""

    def __init__(
        self, nc: NatsClient, url: str, errors: ErrorLog | None = None, *, replicas: int = 1
    ) -> None:
        """`replicas`: copies of each stream and bucket it makes."""
        self.nc = nc
        self._errors = errors or ErrorLog(url)
        self.url = self._errors.url  # without credentials
        self.replicas = replicas
        self.js: JetStreamContext = nc.jetstream(timeout=5.0)
        self.replies = ReplyMux(nc)
        self._buckets: dict[str, Bucket] = {}
        self.dead_letters = DeadLetterStream(self.js, self._errors, self.make_stream)
        self.items = ItemStore(self.nc, self.js, self._errors, self.make_stream)
        self.logs = LogStream(self.nc, self.js, self._errors, self.make_stream)
        self._feeds: list[PullFeed] = []

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str = "autan",
        connect_timeout_s: float = 5.0,
        creds: Path | None = None,
        role: str = "",
        tls: NatsTls | None = None,
        replicas: int | None = None,
    ) -> Broker:
        """Connect, or fail within about `connect_timeout_s` with an error naming the URL.

        `url`: one server or several, comma-separated (a cluster: the client moves to
        another when one goes away). `replicas`: how many copies of each stream and bucket
        this connection makes (None: 3 on a cluster of three servers or more, else 1).

        `creds`: the nkey seed file of this process's role (`role`: its inbox prefix is
        `_INBOX.<role>`, where its permissions let it subscribe). `tls`: the CA that the
        server's certificate must chain to, and a client certificate if the server asks.
        """
        errors = ErrorLog(url)
        context = tls.context() if tls is not None else None
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    server_urls(url),
                    name=name,
                    connect_timeout=connect_timeout_s,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=errors.on_error,
                    disconnected_cb=errors.on_disconnect,
                    reconnected_cb=errors.on_reconnect,
                    inbox_prefix=role_inbox(role) if role else INBOX_PREFIX,
                    nkeys_seed=str(creds) if creds is not None else None,
                    tls=context,
                ),
                connect_timeout_s,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise not_connected(errors, creds, exc) from exc
        errors.connected = True
        broker = cls(nc, url, errors, replicas=replicas or default_replicas(nc))
        errors.on_reconnected.append(broker._reconnected)
        await broker.replies.start()
        return broker

    async def close(self) -> None:
        """Deliver what is in flight when connected, then close; never raises
        (`closing.close_connection`)."""
        self._errors.connected = False
        await self.replies.stop()
        await close_connection(self.nc)

    def _reconnected(self) -> None:
        # Pull requests die with the old connection: the feeds ask again.
        for feed in self._feeds:
            feed.forget_requests()

    @property
    def is_connected(self) -> bool:
        """Whether the connection is up now (False while it reconnects)."""
        return bool(self.nc.is_connected)

    @property
    def down_for_s(self) -> float:
        """How long the connection has been down (0 while it is up)."""
        since = self._errors.down_since
        if self.nc.is_connected or since is None:
            return 0.0
        return time.monotonic() - since

    async def flush(self) -> None:
        await self.nc.flush()

    async def undelivered(self) -> UndeliveredFeed:
        """Messages consumers give up delivering (max_deliver), as the server reports them."""
        return await UndeliveredFeed.open(self.nc)

    async def watch_subject(self, subject: str, on_message: Callable[[], None]) -> Watch:
        """Call `on_message` for each message published on `subject` (core NATS, no copy)."""

        async def callback(_: Msg) -> None:
            on_message()

        return Watch(await self.nc.subscribe(subject, cb=callback))

    async def listen(self, subject: str, on_message: Callable[[str, bytes], None]) -> Watch:
        """Call `on_message(subject, data)` for each message on `subject` (core NATS)."""

        async def callback(msg: Msg) -> None:
            on_message(msg.subject, msg.data)

        return Watch(await self.nc.subscribe(subject, cb=callback))

    async def answer(self, subject: str, handler: Callable[[bytes], Awaitable[bytes]]) -> Watch:
        """Answer each request on `subject` with `handler(data)` (core NATS request/reply;
        one at a time, in order)."""

        async def callback(msg: Msg) -> None:
            answer = await handler(msg.data)
            if msg.reply:
                with contextlib.suppress(nats.errors.Error):
                    await msg.respond(answer)

        return Watch(await self.nc.subscribe(subject, cb=callback))

    async def request(self, subject: str, data: bytes, *, timeout_s: float) -> bytes:
        """One request's answer; BrokerUnavailable when nothing answers in `timeout_s`."""
        try:
            msg = await self.nc.request(subject, data, timeout=timeout_s)
        except nats.errors.NoRespondersError as exc:
            raise BrokerUnavailable(f"nothing answers on {subject}") from exc
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer(f"a request on {subject}") from exc
        return bytes(msg.data)

    # -- buckets -----------------------------------------------------------------

    async def bucket(self, name: str, *, ttl_s: float | None = None, known: bool = False) -> Bucket:
        """A KV bucket, created on first use (history 1, file storage). `known`: it exists
        (the stack made it), so it is not looked up: no round trip (a worker's start)."""
        if name in self._buckets:
            return self._buckets[name]
        if known:  # read through the stream's leader (no direct get: not assumed)
            kv = KeyValue(name=name, stream=kv_stream(name), pre=kv_prefix(name), js=self.js,
                          direct=False)  # fmt: skip
            bucket = self._buckets[name] = Bucket(kv, name, self.nc, self.js, self._errors)
            return bucket
        try:
            kv = await self.js.key_value(name)
        except nats.js.errors.BucketNotFoundError:
            kv = await self.js.create_key_value(
                bucket=name,
                history=1,
                ttl=ttl_s,
                storage=api.StorageType.FILE,
                replicas=self.replicas,
            )
            await self.led(kv_stream(name))
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer(f"opening bucket {name}") from exc
        bucket = self._buckets[name] = Bucket(kv, name, self.nc, self.js, self._errors)
        return bucket

    # -- publishing ----------------------------------------------------------------

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Core NATS publish (fire and forget), e.g. a result to a caller's inbox."""
        await self.nc.publish(subject, data, headers=headers)

    async def submit(
        self, subject: str, msg_id: str, data: bytes, *, expect_result: bool = False
    ) -> Submission:
        """Publish to JetStream without waiting for its ack.

        The message id deduplicates repeated submissions within the stream's window. With
        `expect_result`, the submission also waits for its result (`result_subject`).
        """
        if expect_result:
            await self.replies.listen_for_results()
        ack_token = f"a{new_call_id()}"  # per submission: the same id may be sent twice
        ack = self.replies.expect(ack_token)
        result = self.replies.expect(f"r{msg_id}") if expect_result else None
        await self.nc.publish(
            subject, data, reply=self.replies.subject(ack_token), headers={"Nats-Msg-Id": msg_id}
        )
        return Submission(self, msg_id, subject, ack, result, ack_token=ack_token)

    async def submit_stream(self, subject: str, msg_id: str, data: bytes) -> StreamSubmission:
        """Publish a streamed call: its items and then its result come back, in order,
        through `StreamSubmission.next`."""
        await self.replies.listen_for_results()
        ack_token = f"a{new_call_id()}"
        ack = self.replies.expect(ack_token)
        replies = self.replies.expect_stream(f"r{msg_id}")
        await self.nc.publish(
            subject, data, reply=self.replies.subject(ack_token), headers={"Nats-Msg-Id": msg_id}
        )
        return StreamSubmission(
            self, msg_id, subject, ack, None, ack_token=ack_token, replies=replies
        )

    def result_subject(self, app: str, fn: str, msg_id: str) -> str:
        """Where a worker of `app.fn` publishes the result of call `msg_id` for this
        connection."""
        return self.replies.result_subject(app, fn, f"r{msg_id}")


class Watch:
    """A subscription made by `Broker.watch_subject`; `stop()` ends it."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._subscription.unsubscribe()


class Submission:
    """One published call: JetStream's ack and, when asked for, its result.

    A refused or unconfirmed publish fails the result too, through callbacks
    rather than a waiting task, so a caller awaits one future per call.
    """

    __slots__ = ("_ack", "_ack_token", "_broker", "_msg_id", "_result", "_subject", "_timer")

    def __init__(
        self,
        broker: Broker,
        msg_id: str,
        subject: str,
        ack: asyncio.Future[Reply],
        result: asyncio.Future[Reply] | None,
        ack_timeout_s: float = 5.0,
        *,
        ack_token: str,
    ) -> None:
        self._broker = broker
        self._msg_id = msg_id
        self._ack_token = ack_token
        self._subject = subject
        self._ack = ack
        self._result = result
        self._timer: asyncio.TimerHandle | None = None
        if result is not None:
            ack.add_done_callback(self._on_ack)
            self._timer = asyncio.get_running_loop().call_later(ack_timeout_s, self._no_ack)

    async def acked(self, timeout_s: float = 5.0) -> int:
        """The stream sequence; QueueFull, PublishRejected or BrokerUnavailable otherwise."""
        try:
            msg = await asyncio.wait_for(asyncio.shield(self._ack), timeout_s)
        except TimeoutError as exc:
            self.forget()
            raise self._unconfirmed(timeout_s) from exc
        return _read_puback(msg, self._subject)

    async def result(self) -> bytes:
        """The result's bytes, once a worker published them (or the publish's error)."""
        if self._result is None:
            raise RuntimeError("this call was submitted without expect_result")
        try:
            return (await self._result).data
        except BaseException:
            self.forget()
            raise

    def forget(self) -> None:
        """Stop waiting for this call's replies."""
        if self._timer is not None:
            self._timer.cancel()
        self._broker.replies.forget(self._ack_token)
        self._broker.replies.forget(f"r{self._msg_id}")

    def _on_ack(self, ack: asyncio.Future[Reply]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if ack.cancelled() or self._result is None or self._result.done():
            return
        try:
            _read_puback(ack.result(), self._subject)
        except BrokerError as exc:
            self._result.set_exception(exc)

    def _no_ack(self) -> None:
        if self._result is not None and not self._result.done() and not self._ack.done():
            self._result.set_exception(self._unconfirmed(5.0))

    def _unconfirmed(self, timeout_s: float) -> BrokerUnavailable:
        return BrokerUnavailable(
            f"JetStream at {self._broker.url} did not confirm the call within {timeout_s} s"
        )


class StreamSubmission(Submission):
    """A published streamed call: JetStream's ack, then every message its worker sends
    (items, then the result) from `next`."""

    __slots__ = ("_replies",)

    def __init__(
        self,
        broker: Broker,
        msg_id: str,
        subject: str,
        ack: asyncio.Future[Reply],
        result: asyncio.Future[Reply] | None,
        *,
        ack_token: str,
        replies: asyncio.Queue[Reply],
    ) -> None:
        super().__init__(broker, msg_id, subject, ack, result, ack_token=ack_token)
        self._replies = replies

    async def next(self) -> bytes:
        """The next message the worker sent for this call, once it came."""
        return (await self._replies.get()).data


def _read_puback(msg: Reply, subject: str) -> int:
    if msg.status == "503":
        raise PublishRejected(f"no stream stores {subject}: is the stack deployed?")
    response = json.loads(msg.data)
    error = response.get("error")
    if error is None:
        return int(response["seq"])
    code = int(error.get("err_code", 0))
    description = error.get("description", "")
    if code in _QUEUE_FULL_CODES or "maximum" in description:
        raise QueueFull(f"the calls queue is full ({description}); retry later")
    raise PublishRejected(f"JetStream refused the call on {subject}: {description}")
