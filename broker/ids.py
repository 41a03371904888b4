"""Call ids: NUIDs, unique without coordination and safe as subject tokens."""

from __future__ import annotations

import os

import nats.nuid

__all__ = ["new_call_id"]

_nuid = nats.nuid.NUID()


def _reseed() -> None:
    # Forked workers would otherwise continue the parent's sequence: same ids.
    global _nuid
    _nuid = nats.nuid.NUID()


os.register_at_fork(after_in_child=_reseed)


def new_call_id() -> str:
    """A unique, subject-safe call id (22 base-62 characters)."""
    return _nuid.next().decode()
