"""Deadlines enforced from outside the user's code, for calls that hold the event loop.

A sync function whose calls are quick runs on the loop thread (a thread hop costs more
than the call); an async function may block the loop by mistake. Either way no task of
the loop can stop it, so, in a worker process:

- `Alarm`: SIGALRM interrupts a sync call running on the loop (the main thread) at its
  `timeout_s`; the call fails with FunctionTimeout and the worker is replaced (the state
  the interrupted code left is unknown).
- `StallGuard`: a thread that ends the process (exit code 75) when the loop has not
  turned for `timeout_s` plus a grace period: code that ignores the alarm (C code that
  never returns to Python, an async function that never awaits). The provider replaces
  the worker; the call is delivered again, and after its attempts dead-lettered as lost.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio

__all__ = ["STALL_GRACE_S", "Alarm", "CallOverran", "StallGuard"]

STALL_GRACE_S = 5.0
_BEAT_S = 0.25
_REPLACE_ME = 75  # the exit code of a worker that wants replacing


class CallOverran(BaseException):
    """Raised by SIGALRM in a call that ran past its deadline on the loop thread.

    A BaseException, so that a function's `except Exception` does not swallow it.
    """


class Alarm:
    """SIGALRM at a call's deadline, raising `CallOverran` in it (main thread only)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._armed = False
        self._on = False  # within around_calls, on the main thread

    @contextmanager
    def around_calls(self) -> Iterator[None]:
        """The alarm's handler for a run of calls; the previous one afterwards."""
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGALRM, self._ring)
        self._on = True
        try:
            yield
        finally:
            self._on = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    @contextmanager
    def deadline(self, timeout_s: float) -> Iterator[None]:
        """Within `around_calls`: interrupt what runs here after `timeout_s`."""
        if not self._on:
            yield
            return
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            yield
        finally:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)

    def _ring(self, signum: int, frame: FrameType | None) -> None:
        if self._armed:
            self._armed = False
            raise CallOverran


class StallGuard:
    """Ends the process when the event loop stops turning for longer than `limit_s`."""

    def __init__(self, limit_s: float, log: Any) -> None:
        self.limit_s = limit_s
        self.log = log
        self._last = time.monotonic()

    async def serve(self) -> None:
        """The loop's heartbeat, and the watching thread (a daemon: it ends with us)."""
        threading.Thread(target=self._watch, name="autan-stall-guard", daemon=True).start()
        while True:
            self._last = time.monotonic()
            await anyio.sleep(_BEAT_S)

    def _watch(self) -> None:
        while True:
            time.sleep(_BEAT_S)
            stalled_s = time.monotonic() - self._last
            if stalled_s > self.limit_s:
                self.log.error(
                    "a call has held the event loop past its timeout; replacing this worker",
                    stalled_s=round(stalled_s, 1),
                )
                sys.stderr.flush()
                os._exit(_REPLACE_ME)
