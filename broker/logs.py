"""Functions' logs in JetStream: what workers log and what user code prints, per function.

A worker publishes batches of JSON lines (core NATS, no ack: logging never waits on the
network) to `autan.logs.<app>.<fn>`; the stream `AUTAN_LOGS` keeps them within its age and
size limits, oldest dropped first, so logs of workers on any host are read from anywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from broker.errorlog import ErrorLog
from broker.errors import StorageExhausted
from broker.names import LOGS_PREFIX, LOGS_STREAM, logs_subject

__all__ = ["LogStream"]

_MIN_BYTES = 1 << 20


class LogStream:
    """The logs stream, over a connection."""

    def __init__(
        self,
        nc: NatsClient,
        js: JetStreamContext,
        errors: ErrorLog,
        make: Callable[[api.StreamConfig], Awaitable[None]],
    ) -> None:
        """`make`: makes a stream unless it exists (`Broker.make_stream`)."""
        self._nc = nc
        self._js = js
        self._errors = errors
        self._make = make

    async def ensure(self, keep_s: float, max_bytes: int) -> str | None:
        """Make the stream, keeping lines `keep_s` and at most `max_bytes` (admin). What
        prevents it, when the server has too little storage to reserve for it (the stack
        runs on without its logs kept)."""
        config = api.StreamConfig(
            name=LOGS_STREAM,
            subjects=[f"{LOGS_PREFIX}.>"],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.OLD,
            max_age=keep_s,
            max_bytes=max(_MIN_BYTES, max_bytes),
            max_msg_size=1 << 20,
        )
        try:
            await self._make(config)
        except StorageExhausted as exc:
            return f"functions' logs are not kept: {exc}"
        return None

    async def ship(self, app: str, fn: str, lines: bytes) -> None:
        """Publish a batch of lines (never raises: a log line lost is not a call lost)."""
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._nc.publish(logs_subject(app, fn), lines)

    async def read(
        self, app: str, fn: str, *, since_unix_s: float, follow: bool
    ) -> AsyncIterator[bytes]:
        """Each batch shipped since `since_unix_s`, in order; then, with `follow`, each new
        one as it comes (until the caller stops)."""
        start = datetime.fromtimestamp(since_unix_s, tz=UTC)
        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=start
        )
        try:
            subscription = await self._js.subscribe(
                logs_subject(app, fn), ordered_consumer=True, config=config, stream=LOGS_STREAM
            )
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("reading the logs stream") from exc
        try:
            if not follow and not await self._pending(subscription):
                return
            while True:
                try:
                    msg = await subscription.next_msg(timeout=1.0 if not follow else 3600.0)
                except nats.errors.TimeoutError:
                    if not follow:
                        return
                    continue
                yield bytes(msg.data)
                if not follow and msg.metadata.num_pending == 0:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    @staticmethod
    async def _pending(subscription: JetStreamContext.PushSubscription) -> int:
        try:
            info = await subscription.consumer_info()
        except nats.errors.Error:
            return 1  # read and see
        return int(info.num_pending or 0)
