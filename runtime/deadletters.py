"""Dead letters for people: list, show, redrive (run again under a new call id), purge."""

from __future__ import annotations

import time

import msgspec

from broker import (
    DLQ_STREAM,
    Broker,
    CallMsg,
    DeadLetter,
    Inline,
    StoredLetter,
    call_subject,
    decode_call,
    decode_dead_letter,
    decode_value,
    dlq_subject,
    encode,
    new_call_id,
)

__all__ = ["DeadLetters", "Letter"]


class Letter(msgspec.Struct, frozen=True):
    """A dead letter with where it is stored."""

    seq: int
    letter: DeadLetter


class DeadLetters:
    """The dead-letter stream, read and acted on by call id or stream sequence."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def list(self, app: str | None = None, fn: str | None = None) -> list[Letter]:
        subject = dlq_subject(app or "*", fn or "*") if app else "autan.dlq.>"
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
            payload = await self._event_bytes(call)
            await self.broker.publish(call.subject, payload)
        else:
            again = msgspec.structs.replace(
                call, call_id=new_id, reply=None, record=True, created_unix_s=time.time()
            )
            submitted = await self.broker.submit(
                call_subject(call.app, call.fn), new_id, encode(again)
            )
            await submitted.acked()
        await self.broker.dead_letters.remove(letter.seq)
        return new_id

    async def purge(self, app: str | None = None, fn: str | None = None) -> int:
        letters = await self.list(app, fn)
        await self.broker.dead_letters.purge(dlq_subject(app, fn or "*") if app else None)
        return len(letters)

    async def _event_bytes(self, call: CallMsg) -> bytes:
        if not isinstance(call.payload, Inline):
            raise ValueError("a trigger event travels inline")
        (args, _) = decode_value(call.payload.data)
        data: bytes = args[0]
        return data


def _letter(stored: StoredLetter) -> Letter:
    return Letter(stored.seq, decode_dead_letter(stored.data))
