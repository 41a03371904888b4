"""The items of spawned streams: kept in JetStream for as long as results are.

A worker running a spawned generator call keeps each batch of items (a `StreamItem`)
and, last, the call's result on `autan.items.<app>.<fn>.<call_id>`; any caller, in any
process, reads them in order from any point by direct get (`next_by_subj`), waiting for
more on a plain subscription to that subject. Limits retention, discard-old: the
oldest streams' items go first when the stream is full.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from broker.errorlog import ErrorLog
from broker.names import ITEMS_PREFIX, ITEMS_STREAM, direct_get_subject

__all__ = ["ItemStore"]

_MIN_BYTES = 1 << 20


class ItemStore:
    """The kept items of spawned streams, over a connection."""

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

    async def ensure(self, keep_s: float, max_bytes: int) -> None:
        """Make the stream, keeping items `keep_s` and at most `max_bytes` (admin)."""
        await self._make(
            api.StreamConfig(
                name=ITEMS_STREAM,
                subjects=[f"{ITEMS_PREFIX}.>"],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                discard=api.DiscardPolicy.OLD,
                max_age=keep_s,
                max_bytes=max(_MIN_BYTES, max_bytes),
                allow_direct=True,
                duplicate_window=120.0,
            )
        )

    async def keep(self, subject: str, msg_id: str, data: bytes) -> None:
        """Store one message, once JetStream confirms it (deduplicated by `msg_id`)."""
        try:
            await self._js.publish(subject, data, headers={"Nats-Msg-Id": msg_id}, timeout=5.0)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise self._errors.no_answer(f"keeping an item on {subject}") from exc

    async def next(self, subject: str, after: int) -> tuple[int, bytes] | None:
        """The first message on `subject` stored after sequence `after`: its sequence and
        bytes; None when there is none yet."""
        request = json.dumps({"seq": after + 1, "next_by_subj": subject}).encode()
        try:
            reply = await self._nc.request(direct_get_subject(ITEMS_STREAM), request, timeout=5.0)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise self._errors.no_answer(f"reading items on {subject}") from exc
        headers = reply.headers or {}
        if headers.get("Status"):
            return None  # 404: nothing after `after` (yet)
        return int(headers["Nats-Sequence"]), reply.data

    async def wait(self, subject: str, after: int, timeout_s: float) -> tuple[int, bytes] | None:
        """`next`, waiting up to `timeout_s` for a message when there is none yet."""
        subscription = await self._nc.subscribe(subject)
        try:
            found = await self.next(subject, after)
            with anyio.move_on_after(timeout_s):
                while found is None:
                    with contextlib.suppress(nats.errors.TimeoutError):
                        await subscription.next_msg(timeout=1.0)
                    found = await self.next(subject, after)
            return found
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
