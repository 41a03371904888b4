"""The dead-letter stream: calls that will not run again by themselves, kept for people.

Limits retention, discard-new, deduplicated by call id: a dead letter is stored once
however many workers try to record it. Read by sequence; removed one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext, api

from broker.errorlog import ErrorLog
from broker.names import DLQ_STREAM, DLQ_SUBJECTS

__all__ = ["DeadLetterStream", "StoredLetter"]

_KEEP_S = 30 * 24 * 3600.0


class StoredLetter:
    """One stored dead letter: its stream sequence and bytes (a `DeadLetter`)."""

    __slots__ = ("data", "seq", "subject")

    def __init__(self, seq: int, subject: str, data: bytes) -> None:
        self.seq = seq
        self.subject = subject
        self.data = data


class DeadLetterStream:
    """Administration of the dead-letter stream over a JetStream context."""

    def __init__(
        self,
        js: JetStreamContext,
        errors: ErrorLog,
        make: Callable[[api.StreamConfig], Awaitable[None]],
    ) -> None:
        """`make`: makes a stream unless it exists (`Broker.make_stream`)."""
        self.js = js
        self._errors = errors
        self._make = make

    async def ensure(self) -> None:
        await self._make(
            api.StreamConfig(
                name=DLQ_STREAM,
                subjects=[DLQ_SUBJECTS],
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                discard=api.DiscardPolicy.NEW,
                max_age=_KEEP_S,
                duplicate_window=120.0,
            )
        )

    async def read(
        self, subject: str = DLQ_SUBJECTS, *, limit: int | None = 1000
    ) -> list[StoredLetter]:
        """Stored dead letters on `subject`, oldest first (`limit=None`: all of them)."""
        letters: list[StoredLetter] = []
        seq = 1
        while limit is None or len(letters) < limit:
            try:
                raw = await self.js.get_msg(DLQ_STREAM, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                break
            except nats.errors.TimeoutError as exc:
                raise self._errors.no_answer("reading dead letters") from exc
            letters.append(StoredLetter(raw.seq or seq, raw.subject or "", raw.data or b""))
            seq = (raw.seq or seq) + 1
        return letters

    async def get(self, seq: int) -> StoredLetter | None:
        try:
            raw = await self.js.get_msg(DLQ_STREAM, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("reading a dead letter") from exc
        return StoredLetter(seq, raw.subject or "", raw.data or b"")

    async def remove(self, seq: int) -> None:
        try:
            await self.js.delete_msg(DLQ_STREAM, seq)
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("removing a dead letter") from exc

    async def purge(self, subject: str | None = None) -> None:
        try:
            await self.js.purge_stream(DLQ_STREAM, subject=subject)
        except nats.errors.TimeoutError as exc:
            raise self._errors.no_answer("purging dead letters") from exc
