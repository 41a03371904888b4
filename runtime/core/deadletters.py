"""Dead letters, read and acted on: by call id or stream sequence, redriven (run again under
a new call id, its result recorded) or purged. `autan dlq` and the dashboard use them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec

from broker import (
    DLQ_STREAM,
    DLQ_SUBJECTS,
    Broker,
    CallMsg,
    DeadLetter,
    Inline,
    Payload,
    StoredLetter,
    StoredRef,
    call_subject,
    decode_call,
    decode_dead_letter,
    decode_value,
    dlq_subject,
    encode,
    new_call_id,
)
from storage import ObjectStore

__all__ = ["DeadLetters", "Letter"]


class Letter(msgspec.Struct, frozen=True):
    """A dead letter with where it is stored."""

    seq: int
    letter: DeadLetter


class DeadLetters:
    """The dead-letter stream, read and acted on by call id or stream sequence."""

    def __init__(
        self,
        broker: Broker,
        store: ObjectStore | None = None,
        *,
        remember: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """`store`: where large arguments are (redrive writes them anew, purge deletes).
        `remember(call_id, "<app>.<fn>")`: notes a redriven call as spawned
        (`Link.remember_spawned_as`), so that its new id can be waited on at once."""
        self.broker = broker
        self.store = store
        self.remember = remember

    async def list(self, app: str | None = None, fn: str | None = None) -> list[Letter]:
        subject = dlq_subject(app or "*", fn or "*") if app else DLQ_SUBJECTS
        return [_letter(stored) for stored in await self.broker.dead_letters.read(subject)]

    async def find(self, ref: str) -> Letter:
        """A letter by stream sequence (digits) or call id; LookupError names what exists."""
        if ref.isdigit():
            stored = await self.broker.dead_letters.get(int(ref))
            if stored is not None:
                return _letter(stored)
        for letter in await self.list():
            if letter.letter.call_id == ref:
                return letter
        raise LookupError(
            f"no dead letter {ref!r} in {DLQ_STREAM}: 'autan dlq ls' lists them "
            "(by sequence and call id)"
        )

    async def redrive(self, letter: Letter) -> str:
        """Publish the call again under a new id (its result is recorded); drop the letter."""
        call = decode_call(letter.letter.call)
        new_id = new_call_id()
        if call.subject:  # a trigger's event: publish it again where it came from
            await self.broker.publish(call.subject, await self._event_bytes(call))
        else:
            payload: Payload = call.payload
            if isinstance(payload, StoredRef) and self.store is not None:
                # Written anew: the sweeper ages arguments by when they were written.
                data = await self.store.get(payload.key)
                await self.store.put(f"payloads/{new_id}", data)
                payload = StoredRef(key=f"payloads/{new_id}", size_bytes=len(data))
            again = msgspec.structs.replace(
                call, call_id=new_id, reply=None, record=True, created_unix_s=time.time(),
                payload=payload,
            )  # fmt: skip
            if self.remember is not None:  # before it can run: its id is known at once
                await self.remember(new_id, f"{call.app}.{call.fn}")
            submitted = await self.broker.submit(
                call_subject(call.app, call.fn), new_id, encode(again)
            )
            await submitted.acked()
        await self.broker.dead_letters.remove(letter.seq)
        return new_id

    async def purge(self, app: str | None = None, fn: str | None = None) -> int:
        """Delete the letters (of one app or function), and the stored arguments they held
        that no other letter holds."""
        letters = await self.list(app, fn)
        await self.broker.dead_letters.purge(dlq_subject(app, fn or "*") if app else None)
        if self.store is not None:
            remaining = await self.broker.dead_letters.read(DLQ_SUBJECTS, limit=None)
            still_held = {_stored_key(_letter(stored)) for stored in remaining}
            for key in {_stored_key(letter) for letter in letters} - still_held:
                if key is not None:
                    await self.store.delete(key)
        return len(letters)

    async def _event_bytes(self, call: CallMsg) -> bytes:
        if not isinstance(call.payload, Inline):
            raise ValueError("a trigger event travels inline")
        (args, _) = decode_value(call.payload.data)
        data: bytes = args[0]
        return data


def _stored_key(letter: Letter) -> str | None:
    try:
        payload = decode_call(letter.letter.call).payload
    except ValueError:
        return None
    return payload.key if isinstance(payload, StoredRef) else None


def _letter(stored: StoredLetter) -> Letter:
    return Letter(stored.seq, decode_dead_letter(stored.data))
