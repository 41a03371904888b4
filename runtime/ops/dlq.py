"""Dead letters for people: `autan dlq ls|show|redrive|purge`.

`DeadLetters` reads the dead-letter stream by call id or stream sequence, and redrives
a call (runs it again under a new call id, its result recorded) or purges letters.
"""

from __future__ import annotations

import time
from typing import Any

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
from runtime.core import ADMIN, Link, Settings, split_qualname
from storage import ObjectStore

__all__ = ["DeadLetters", "Letter", "dlq"]


class Letter(msgspec.Struct, frozen=True):
    """A dead letter with where it is stored."""

    seq: int
    letter: DeadLetter


class DeadLetters:
    """The dead-letter stream, read and acted on by call id or stream sequence."""

    def __init__(self, broker: Broker, store: ObjectStore | None = None) -> None:
        """`store`: where large arguments are (redrive writes them anew, purge deletes)."""
        self.broker = broker
        self.store = store

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


async def dlq(settings: Settings, command: str, args: Any) -> int:
    """`autan dlq ls|show|redrive|purge`."""
    async with await Link.open(settings, name="autan-dlq", role=ADMIN) as link:
        letters = DeadLetters(link.broker, await link.store())
        match command:
            case "ls":
                print(_letters_table(await letters.list(*optional_split(args.function))))
            case "show":
                letter = await letters.find(args.ref)
                print(msgspec.json.format(msgspec.json.encode(_shown(letter)), indent=2).decode())
            case "redrive":
                for letter in await _to_redrive(letters, args.ref):
                    new_id = await letters.redrive(letter)
                    print(f"{letter.letter.call_id} -> {new_id}  ({letter.letter.app}."
                          f"{letter.letter.fn}, was {letter.letter.reason})")  # fmt: skip
            case "purge":
                count = await letters.purge(*optional_split(args.function))
                print(f"purged {count} dead letter(s)")
    return 0


async def _to_redrive(letters: DeadLetters, ref: str) -> list[Letter]:
    if ref == "all":
        return await letters.list()
    if "." in ref and not ref.isdigit():
        return await letters.list(*split_qualname(ref))
    return [await letters.find(ref)]


def optional_split(qualname: str | None) -> tuple[str | None, str | None]:
    return split_qualname(qualname) if qualname else (None, None)


def _shown(letter: Letter) -> dict[str, Any]:
    dead = letter.letter
    return {
        "seq": letter.seq,
        "call_id": dead.call_id,
        "function": f"{dead.app}.{dead.fn}",
        "reason": dead.reason,
        "attempts": dead.attempts,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(dead.failed_unix_s)),
        "worker": dead.worker,
        "error": {
            "type": dead.error.type,
            "message": dead.error.message,
            "traceback": dead.error.traceback,
        },
        "input_bytes": len(dead.call),
    }


def _letters_table(letters: list[Letter]) -> str:
    if not letters:
        return "no dead letters"
    lines = [f"{'SEQ':>5}  {'CALL ID':<24} {'FUNCTION':<20} {'REASON':<9} {'TRIES':>5}  ERROR"]
    for item in letters:
        dead = item.letter
        error = f"{dead.error.type}: {dead.error.message}"[:60]
        lines.append(
            f"{item.seq:>5}  {dead.call_id:<24} {dead.app + '.' + dead.fn:<20} "
            f"{dead.reason:<9} {dead.attempts:>5}  {error}"
        )
    return "\n".join(lines)
