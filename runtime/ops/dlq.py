"""Dead letters for people: `autan dlq ls|show|redrive|purge`.

`core.DeadLetters` reads the dead-letter stream by call id or stream sequence, and redrives
a call (runs it again under a new call id, its result recorded) or purges letters.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from runtime.core import ADMIN, DeadLetters, Letter, Link, Settings, split_qualname

__all__ = ["DeadLetters", "Letter", "dlq"]


async def dlq(settings: Settings, command: str, args: Any) -> int:
    """`autan dlq ls|show|redrive|purge`."""
    async with await Link.open(settings, name="autan-dlq", role=ADMIN) as link:
        letters = DeadLetters(link.broker, await link.store(), remember=link.remember_spawned_as)
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
