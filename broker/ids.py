"""Call ids: NUIDs, unique without coordination and safe as subject tokens."""

from __future__ import annotations

import nats.nuid

__all__ = ["new_call_id"]

_nuid = nats.nuid.NUID()


def new_call_id() -> str:
    """A unique, subject-safe call id (22 base-62 characters)."""
    return _nuid.next().decode()
