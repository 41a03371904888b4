"""A JetStream key-value bucket with our errors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from broker.errorlog import ErrorLog
from broker.errors import BrokerError, KeyExists, KeyNotFound
from broker.names import kv_stream, kv_subject

__all__ = ["Bucket", "Following"]

# What an unreachable or restarting server raises (the KV's own errors are caught first).
_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,  # a replicated bucket between two leaders
)


# JetStream's error code for a write whose expected last sequence is not the subject's.
_WRONG_LAST_SEQUENCE = 10071


class Bucket:
    """Values by key in one bucket; `create` is first-writer-wins."""

    def __init__(
        self, kv: KeyValue, name: str, nc: NatsClient, js: JetStreamContext, errors: ErrorLog
    ) -> None:
        self._errors = errors
        self._nc = nc
        self._js = js
        self._kv = kv
        self.name = name

    async def get(self, key: str) -> bytes:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            raise KeyNotFound(f"no key {key!r} in bucket {self.name!r}") from exc
        except _TRANSIENT as exc:
            raise self._unavailable("reading", key) from exc
        return entry.value or b""

    async def put(self, key: str, value: bytes) -> int:
        try:
            return await self._kv.put(key, value)
        except _TRANSIENT as exc:
            raise self._unavailable("writing", key) from exc

    async def create(self, key: str, value: bytes) -> int:
        """Write only if the key holds nothing yet; KeyExists when an earlier writer won."""
        try:
            return await self._kv.create(key, value)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyExists(f"{key!r} in bucket {self.name!r} is already written") from exc
        except _TRANSIENT as exc:
            raise self._unavailable("writing", key) from exc

    async def update(self, key: str, value: bytes, revision: int) -> int:
        """Write only if `revision` is still the key's last; KeyExists when it is not (another
        writer came between, or the key expired); the new revision."""
        try:
            return await self._kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise KeyExists(f"{key!r} in bucket {self.name!r} moved past {revision}") from exc
        except _TRANSIENT as exc:
            raise self._unavailable("writing", key) from exc

    async def revision(self, key: str) -> tuple[bytes, int]:
        """The key's value and its revision (KeyNotFound when it has none)."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError as exc:
            raise KeyNotFound(f"no key {key!r} in bucket {self.name!r}") from exc
        except _TRANSIENT as exc:
            raise self._unavailable("reading", key) from exc
        return entry.value or b"", int(entry.revision or 0)

    async def delete(self, key: str, revision: int | None = None) -> None:
        """Delete the key (with `revision`: only if that is still its last)."""
        try:
            await self._kv.delete(key, last=revision)
        except nats.js.errors.APIError as exc:
            # nats-py's delete, unlike its update, raises JetStream's "wrong last sequence"
            # as a bare BadRequestError.
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise
            raise KeyExists(f"{key!r} in bucket {self.name!r} moved past {revision}") from exc
        except _TRANSIENT as exc:
            raise self._unavailable("deleting", key) from exc

    async def values(self) -> dict[str, bytes]:
        """Every key's current value, by key (sorted); keys deleted meanwhile are left out.

        The keys come from the server's list of the bucket's subjects, in one request,
        rather than from a KV watcher, whose "initial values done" marker a client can
        see before the last initial value (nats.py#842): a listing could then miss keys
        that exist.
        """
        prefix = kv_subject(self.name, "")
        try:
            info = await self._js.stream_info(
                kv_stream(self.name), subjects_filter=kv_subject(self.name)
            )
        except _TRANSIENT as exc:
            raise self._unavailable("listing", "*") from exc
        keys = sorted(subject.removeprefix(prefix) for subject in info.state.subjects or {})
        values = await asyncio.gather(*(self._get_live(key) for key in keys))
        return {key: value for key, value in zip(keys, values, strict=True) if value is not None}

    async def _get_live(self, key: str) -> bytes | None:
        """The key's value; None when it was deleted (its subject holds the marker)."""
        try:
            return await self.get(key)
        except KeyNotFound:
            return None

    def _unavailable(self, doing: str, key: str) -> BrokerError:
        return self._errors.no_answer(f"{doing} {key!r} in bucket {self.name!r}")

    async def watch(self) -> AsyncGenerator[tuple[str, bytes | None], None]:
        """Every key's current value, then each change as it happens (None: deleted)."""
        watcher = await self._kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                yield entry.key, (bytes(entry.value) if entry.operation is None else None)
        finally:
            await _stop(watcher)

    async def follow(self, on_change: Callable[[str, bytes | None], None]) -> Following:
        """Call `on_change(key, value)` for each write from now on (None: deleted), as the
        server routes it: a plain subscription, no consumer (read `values()` for what was
        there before)."""
        prefix = kv_subject(self.name, "")

        async def callback(msg: Msg) -> None:
            deleted = bool((msg.headers or {}).get("KV-Operation")) or not msg.data
            on_change(msg.subject.removeprefix(prefix), None if deleted else bytes(msg.data))

        return Following(await self._nc.subscribe(kv_subject(self.name), cb=callback))

    async def wait_for(self, key: str, timeout_s: float) -> bytes:
        """The key's value, waiting up to `timeout_s` for a writer if it has none yet.

        A plain subscription to the key's subject sees the write: no JetStream consumer
        per waiter (a watcher each would hit the server's consumer limit with many callers
        waiting at once). A write routed just before the subscription took effect but
        stored just after the first read is caught by reading again, soon and then every
        second: the server routes a message before JetStream has stored it.
        """
        subscription = await self._nc.subscribe(kv_subject(self.name, key))
        try:
            with contextlib.suppress(KeyNotFound):
                return await self.get(key)
            return await self._next_write(subscription, key, timeout_s)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _next_write(self, subscription: Subscription, key: str, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        for slice_s in itertools.chain((0.05, 0.25), itertools.repeat(1.0)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = await subscription.next_msg(timeout=min(slice_s, remaining))
            except nats.errors.TimeoutError:
                with contextlib.suppress(KeyNotFound):
                    return await self.get(key)
                continue
            if msg.data and not (msg.headers or {}).get("KV-Operation"):
                return bytes(msg.data)
        raise KeyNotFound(f"no value for {key!r} in bucket {self.name!r} after {timeout_s} s")


class Following:
    """A bucket followed by `Bucket.follow`, until `stop`."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    async def stop(self) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self._subscription.unsubscribe()


async def _stop(watcher: KeyValue.KeyWatcher) -> None:
    # A watcher outliving its connection (closed or draining) has nothing left to stop.
    with contextlib.suppress(nats.errors.Error):
        await watcher.stop()  # type: ignore[no-untyped-call]
