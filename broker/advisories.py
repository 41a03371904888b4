"""What JetStream says about messages it gave up on: a consumer's max_deliver reached.

Each such message is a call (or a trigger's event) that no worker settled: the control
plane reads it (`StreamAdmin.stored_message`), keeps it as a dead letter and removes it
from the calls stream, so that nothing accepted stays unanswered.
"""

from __future__ import annotations

import contextlib

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from broker.names import MAX_DELIVERIES_ADVISORIES

__all__ = ["Undelivered", "UndeliveredFeed"]


class Undelivered(msgspec.Struct, frozen=True):
    """One message a consumer stopped delivering after `deliveries` attempts."""

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int = 0


_advisory = msgspec.json.Decoder(Undelivered)


class UndeliveredFeed:
    """MAX_DELIVERIES advisories from the moment it is opened (core NATS: none is kept
    for a listener that was not there)."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    @classmethod
    async def open(cls, nc: NatsClient) -> UndeliveredFeed:
        return cls(await nc.subscribe(MAX_DELIVERIES_ADVISORIES))

    async def next(self) -> Undelivered:
        """The next advisory (waits for it); malformed ones are skipped."""
        while True:
            msg = await self._subscription.next_msg(timeout=None)
            with contextlib.suppress(msgspec.DecodeError):
                return _advisory.decode(msg.data)

    async def close(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._subscription.unsubscribe()
