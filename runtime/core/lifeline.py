"""Children that end with their parent: no orphan outlives a stack killed with `kill -9`.

Linux sends a child a signal of its choice when its parent dies (`PR_SET_PDEATHSIG`):
the stack's nats-server, its fork server and its workers ask for SIGTERM, so that a
parent that died without cleaning up still leaves nothing running. Elsewhere this is
a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["adopt_orphans", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Have `sig` sent to this process when its parent dies.

    With `parent_pid`, a parent that died before this call (the signal would never
    come) ends this process at once.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return  # not allowed here: the parent's own clean-up still stops us
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def adopt_orphans() -> None:
    """Have this process's orphaned descendants (a grandchild whose parent died) become
    its children, so that it reaps them and hears of their exits."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
