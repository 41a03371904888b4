"""NATS identities: an nkey per role, kept as seed files (0600) in one directory.

A process connects with its role's seed (`Broker.connect(..., creds=path)`); nats-server
knows each role by its public key and the permissions it was given
(`broker.permissions`). `authorization` writes nats-server's configuration block.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nkeys

from broker.permissions import Permissions

__all__ = ["Identities"]

_ROLE = re.compile(r"^[a-z0-9_]+$")


class Identities:
    """The seeds of a stack's roles, made on first use, never written over."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def seed_file(self, role: str) -> Path:
        """The role's seed file (made, readable by its owner only, if it is not there)."""
        if not _ROLE.match(role):
            raise ValueError(f"{role!r}: a role is lower-case letters, digits and '_'")
        path = self.directory / f"{role}.nk"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return path  # made meanwhile by another process
            with os.fdopen(descriptor, "wb") as file:
                file.write(seed)
        return path

    def public(self, role: str) -> str:
        """The role's public key (`U...`), as nats-server knows it."""
        pair = nkeys.from_seed(self.seed_file(role).read_bytes())
        return str(pair.public_key.decode())

    def authorization(self, roles: Mapping[str, Permissions | None]) -> dict[str, Any]:
        """nats-server's `authorization` block: one nkey user per role; a role without
        permissions (admin) may do anything."""
        users: list[dict[str, Any]] = []
        for role, permissions in sorted(roles.items()):
            user: dict[str, Any] = {"nkey": self.public(role)}
            if permissions is not None:
                user["permissions"] = permissions.config()
            users.append(user)
        return {"users": users}
