"""`autan secret set|ls|rm`: the secrets functions declare (`core.secrets`).

A value is read from standard input (a pipe, or a prompt that does not echo), never from
the command line, where other users of the host would see it in the process list.
"""

from __future__ import annotations

import getpass
import sys

from runtime.core import ADMIN, MAX_SECRET_BYTES, Link, SecretStore, Settings

__all__ = ["secret"]


async def secret(settings: Settings, command: str, name: str | None) -> int:
    try:
        return await _secret(settings, command, name)
    except (ValueError, LookupError) as exc:  # no value given, no stack to seal for
        print(f"autan: {exc}", file=sys.stderr)
        return 1


async def _secret(settings: Settings, command: str, name: str | None) -> int:
    async with await Link.open(settings, name="autan-secret", role=ADMIN) as link:
        store = SecretStore(link.broker)
        if command == "ls":
            names = await store.names()
            print("\n".join(names) if names else "no secrets are set")
            return 0
        assert name is not None
        if command == "rm":
            if not await store.remove(name):
                print(f"autan: no secret {name} is set", file=sys.stderr)
                return 1
            print(f"removed {name}; workers started from now on go without it")
            return 0
        await store.set(name, _read_value(name))
        print(f"set {name}; workers started from now on get it")
        return 0


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"value of {name}: ")
    else:
        value = sys.stdin.read(MAX_SECRET_BYTES + 1)
        value = value[:-1] if value.endswith("\n") and value.count("\n") == 1 else value
    if not value:
        raise ValueError(f"no value for {name}: pipe it in, e.g. autan secret set {name} < file")
    return value
