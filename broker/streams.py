"""Streams and consumers: the calls stream, trigger streams, one durable consumer per function.

A function's calls come from a `Source`: the work-queue calls stream for functions
called through the API, or a stream capturing a trigger subject (`on="uploads.>"`),
found among the existing streams or created. Trigger streams keep events by age
(limits retention), so that past events can be replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api

from broker.consumer import PullFeed
from broker.deadletters import DeadLetterStream
from broker.errorlog import ErrorLog
from broker.errors import BrokerUnavailable, ConsumerNotFound, StorageExhausted, StreamConflict
from broker.names import (
    CALLS_STREAM,
    CALLS_SUBJECTS,
    call_subject,
    consumer_name,
    subject_covers,
    subjects_overlap,
    trigger_stream_name,
)

__all__ = [
    "DEFAULT_MAX_QUEUED_BYTES",
    "Backlog",
    "ConsumerPolicy",
    "Source",
    "StoredMessage",
    "StreamAdmin",
    "StreamLimits",
    "calls_source",
]


_INSUFFICIENT_STORAGE = 10047  # JetStream's "insufficient storage resources available"
DEFAULT_MAX_QUEUED_BYTES = 1 << 30


class StreamLimits(msgspec.Struct, frozen=True):
    """Limits of the calls stream. Discard-new: a full stream refuses, never drops."""

    max_bytes: int = DEFAULT_MAX_QUEUED_BYTES
    max_msgs: int = 1_000_000
    max_msg_bytes: int = 1 << 20
    duplicate_window_s: float = 120.0
    trigger_max_age_s: float = 7 * 24 * 3600.0  # how far back triggers can be replayed


class ConsumerPolicy(msgspec.Struct, frozen=True):
    """How JetStream hands one function's calls to its workers."""

    ack_wait_s: float = 60.0
    max_ack_pending: int = 10_000
    # Deliveries of one message before JetStream stops (-1: never); past it, the server
    # sends a MAX_DELIVERIES advisory, which the control plane turns into a dead letter.
    max_deliver: int = -1


class StoredMessage(msgspec.Struct, frozen=True):
    """A message as a stream stores it."""

    subject: str
    data: bytes
    headers: dict[str, str] = {}


class Backlog(msgspec.Struct, frozen=True):
    """What waits for a function: not yet delivered, delivered but not acked, pull waiters."""

    num_pending: int
    num_ack_pending: int
    num_waiting: int

    @property
    def total(self) -> int:
        return self.num_pending + self.num_ack_pending


class Source(msgspec.Struct, frozen=True):
    """Where one function's calls come from: a stream, the subject filter, the consumer."""

    stream: str
    subject: str
    consumer: str
    trigger: bool = False


def calls_source(app: str, fn: str) -> Source:
    """The source of a function called through the API: the work-queue calls stream."""
    return Source(CALLS_STREAM, call_subject(app, fn), consumer_name(app, fn))


class StreamAdmin:
    """JetStream administration on a connection (mixed into `Broker`)."""

    nc: NatsClient
    js: JetStreamContext
    url: str
    replicas: int
    dead_letters: DeadLetterStream
    _feeds: list[PullFeed]
    _errors: ErrorLog

    async def wait_for_jetstream(self, timeout_s: float) -> None:
        """Until JetStream answers (a cluster's first seconds elect its leader meanwhile);
        BrokerUnavailable after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                await self.js.account_info()
                return
            except (nats.errors.TimeoutError, nats.js.errors.APIError) as exc:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"JetStream at {self.url} did not answer within {timeout_s:g} s ({exc}); "
                        "is nats-server running with JetStream (-js), and its cluster formed?"
                    ) from exc
                await asyncio.sleep(0.2)

    async def led(self, stream: str, timeout_s: float = 15.0) -> None:
        """Until a stream just made has a leader: on a cluster, its first writes find no
        responder while its copies elect one."""
        if self.replicas <= 1:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(nats.errors.TimeoutError, nats.js.errors.APIError):
                info = await self.js.stream_info(stream)
                if info.cluster is None or info.cluster.leader:
                    return
            await asyncio.sleep(0.05)
        raise BrokerUnavailable(
            f"stream {stream} at {self.url} has no leader after {timeout_s:g} s"
        )

    async def ensure_calls_stream(self, limits: StreamLimits) -> None:
        """Create the work-queue stream of calls, or check that the existing one fits."""
        config = api.StreamConfig(
            name=CALLS_STREAM,
            subjects=[CALLS_SUBJECTS],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            discard=api.DiscardPolicy.NEW,
            max_bytes=limits.max_bytes,
            max_msgs=limits.max_msgs,
            max_msg_size=limits.max_msg_bytes,
            duplicate_window=limits.duplicate_window_s,
            num_replicas=self.replicas,
        )
        await self.dead_letters.ensure()
        info = await self._stream_info(CALLS_STREAM)
        if info is None:
            await self._add_stream(config)
        elif info.config.retention != api.RetentionPolicy.WORK_QUEUE:
            raise StreamConflict(
                f"stream {CALLS_STREAM} exists with retention {info.config.retention}; "
                "Autan needs a work-queue stream: delete it (nats stream rm) and restart"
            )

    async def ensure_trigger_source(
        self, app: str, fn: str, subject: str, limits: StreamLimits
    ) -> Source:
        """A stream that captures `subject`: an existing one that covers it, or a new one."""
        streams = await self._all_streams()
        for info in streams:
            if any(subject_covers(s, subject) for s in info.config.subjects or ()):
                _check_reusable(info, subject)
                return Source(info.config.name or "", subject, consumer_name(app, fn), True)
        for info in streams:
            clash = [s for s in info.config.subjects or () if subjects_overlap(s, subject)]
            if clash:
                raise StreamConflict(
                    f"trigger {subject!r} of {app}.{fn} overlaps stream {info.config.name} "
                    f"({', '.join(clash)}) without being inside it; use a subject that "
                    "stream covers, or one disjoint from it"
                )
        name = trigger_stream_name(app, fn)
        await self._add_stream(_trigger_stream_config(name, subject, limits, self.replicas))
        return Source(name, subject, consumer_name(app, fn), True)

    async def ensure_consumer(self, source: Source, policy: ConsumerPolicy) -> None:
        """The durable pull consumer of one function, created or updated to `policy`.

        An existing consumer keeps where it delivers from (JetStream will not change it,
        error 10012): a trigger replayed from a time or sequence goes on from there.
        """
        config = _consumer_config(source, policy)
        try:
            existing = await self.js.consumer_info(source.stream, source.consumer)
        except nats.js.errors.NotFoundError:
            existing = None
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("reading a consumer") from exc
        if existing is not None:
            config.deliver_policy = existing.config.deliver_policy
            config.opt_start_seq = existing.config.opt_start_seq
            config.opt_start_time = existing.config.opt_start_time
        await self.js.add_consumer(source.stream, config)

    async def replay(self, source: Source, *, since_s: float | None, from_seq: int | None) -> None:
        """Deliver a trigger's past events again: recreate its consumer at an earlier point."""
        info = await self._consumer_info(source)
        policy = ConsumerPolicy(
            ack_wait_s=float(info.config.ack_wait or 60.0),
            max_ack_pending=info.config.max_ack_pending or 10_000,
            max_deliver=info.config.max_deliver or -1,
        )
        config = _consumer_config(source, policy)
        if from_seq is not None:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = from_seq
        else:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = datetime.fromtimestamp(time.time() - (since_s or 0.0), tz=UTC)
        await self.js.delete_consumer(source.stream, source.consumer)
        await self.js.add_consumer(source.stream, config)

    async def backlog(self, source: Source) -> Backlog:
        info = await self._consumer_info(source)
        return Backlog(
            num_pending=info.num_pending or 0,
            num_ack_pending=info.num_ack_pending or 0,
            num_waiting=info.num_waiting or 0,
        )

    async def _consumer_info(self, source: Source) -> api.ConsumerInfo:
        """ConsumerNotFound when the function's consumer (or its stream) does not exist."""
        try:
            info: api.ConsumerInfo = await self.js.consumer_info(source.stream, source.consumer)
        except nats.js.errors.NotFoundError as exc:
            raise ConsumerNotFound(
                f"no consumer {source.consumer!r} on stream {source.stream!r}: deploy the "
                "function again ('autan deploy') to make it"
            ) from exc
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("a JetStream request") from exc
        return info

    async def stored_message(self, stream: str, seq: int) -> StoredMessage | None:
        """The message stored at `seq` (None: gone, deleted or acked)."""
        try:
            raw = await self.js.get_msg(stream, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("a JetStream request") from exc
        return StoredMessage(raw.subject or "", raw.data or b"", dict(raw.headers or {}))

    async def delete_message(self, stream: str, seq: int) -> None:
        """Remove one message from a stream (a call settled outside its consumer)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_msg(stream, seq)

    async def oldest_age_s(self, source: Source) -> float:
        """Seconds since the oldest call still in the calls stream was stored (0: none).

        For trigger streams (which keep events after they are handled) this is 0.
        """
        if source.trigger:
            return 0.0
        try:
            oldest = await self.js.get_msg(source.stream, seq=1, subject=source.subject, next=True)
        except nats.js.errors.NotFoundError:
            return 0.0
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("a JetStream request") from exc
        if oldest.time is None:
            return 0.0
        return max(0.0, time.time() - oldest.time.timestamp())

    async def pull(self, source: Source, *, window: int) -> PullFeed:
        """A feed of the function's calls; `feed.ack_wait_s` is the consumer's ack deadline."""
        info = await self._consumer_info(source)
        feed = PullFeed(
            self.nc,
            source.stream,
            source.consumer,
            window=window,
            ack_wait_s=float(info.config.ack_wait or 30.0),
        )
        await feed.start()
        self._feeds.append(feed)
        return feed

    async def make_stream(self, config: api.StreamConfig) -> None:
        """Make `config`'s stream, in `replicas` copies, unless it exists; return once it
        has a leader. StorageExhausted when the server cannot reserve its bytes."""
        if await self._stream_info(config.name or "") is None:
            config.num_replicas = self.replicas
            await self._add_stream(config)

    async def _stream_info(self, name: str) -> api.StreamInfo | None:
        try:
            return await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("a JetStream request") from exc

    async def _all_streams(self) -> list[api.StreamInfo]:
        try:
            return list(await self.js.streams_info())
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("a JetStream request") from exc

    async def _add_stream(self, config: api.StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
            await self.led(config.name or "")
        except nats.js.errors.ServiceUnavailableError as exc:
            raise BrokerUnavailable(
                f"JetStream is not enabled on {self.url}: start nats-server with -js"
            ) from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code != _INSUFFICIENT_STORAGE:
                if isinstance(exc, nats.js.errors.BadRequestError):
                    raise StreamConflict(
                        f"cannot create stream {config.name} for {config.subjects}: "
                        f"{exc.description}"
                    ) from exc
                raise
            mib = (config.max_bytes or 0) // (1 << 20)
            raise StorageExhausted(
                f"JetStream at {self.url} has too little storage for stream {config.name} "
                f"({mib} MiB reserved): free disk space on the NATS server, or set "
                "AUTAN_MAX_QUEUED_BYTES lower"
            ) from exc


def _consumer_config(source: Source, policy: ConsumerPolicy) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=source.consumer,
        filter_subject=source.subject,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=policy.ack_wait_s,
        max_ack_pending=policy.max_ack_pending,
        max_deliver=policy.max_deliver,
        max_waiting=512,
        inactive_threshold=None,
    )


def _trigger_stream_config(
    name: str, subject: str, limits: StreamLimits, replicas: int
) -> api.StreamConfig:
    return api.StreamConfig(
        name=name,
        subjects=[subject],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        discard=api.DiscardPolicy.OLD,
        max_age=limits.trigger_max_age_s,
        max_bytes=limits.max_bytes,
        num_replicas=replicas,
    )


def _check_reusable(info: api.StreamInfo, subject: str) -> None:
    if info.config.retention == api.RetentionPolicy.WORK_QUEUE:
        raise StreamConflict(
            f"stream {info.config.name} captures {subject!r} as a work queue, which allows one "
            "consumer per subject: give the trigger its own subject, or use a stream with "
            "limits or interest retention"
        )
