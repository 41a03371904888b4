"""The loop of the fork server and of templates: JSON lines and SIGCHLD, one thread.

Neither may start a thread or an event loop before it forks (a fork keeps only the
forking thread), so they wait with a selector and plain blocking I/O. SIGCHLD wakes the
selector through a pipe (`signal.set_wakeup_fd`).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["LineLoop", "emit", "ended_children"]

Message = dict[str, Any]


def emit(message: Message, fd: int = 1) -> None:
    """Write one JSON line to `fd` (the fork server's stdout, a template's report pipe)."""
    data = json.dumps(message).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


def ended_children() -> Iterator[tuple[int, int]]:
    """Reap every child that has ended: (pid, exit code), without waiting."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


class LineLoop:
    """Read JSON lines from file descriptors and hear of children's ends, until `stop()`."""

    def __init__(self, on_child: Callable[[], None]) -> None:
        """`on_child()`: a child ended (or several: reap them all)."""
        self._selector = selectors.DefaultSelector()
        self._wake, waker = os.pipe()
        os.set_blocking(waker, False)
        self._waker = waker
        signal.set_wakeup_fd(waker)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._selector.register(self._wake, selectors.EVENT_READ, None)
        self._on_child = on_child
        self._readers: dict[int, tuple[Callable[[Message], None], Callable[[], None]]] = {}
        self._buffers: dict[int, bytes] = {}
        self._stopped = False
        self._timer: tuple[float, Callable[[], None]] | None = None  # when, what

    def later(self, delay_s: float, action: Callable[[], None]) -> None:
        """Run `action` once the loop has waited `delay_s` (one at a time: this replaces
        what was set before)."""
        self._timer = (time.monotonic() + delay_s, action)

    def read_lines(
        self, fd: int, on_message: Callable[[Message], None], on_end: Callable[[], None]
    ) -> None:
        """Hand each line of `fd` to `on_message`; `on_end()` once it closes."""
        self._readers[fd] = (on_message, on_end)
        self._buffers[fd] = b""
        self._selector.register(fd, selectors.EVENT_READ, fd)

    def forget(self, fd: int) -> None:
        """Stop reading `fd` and close it."""
        if self._readers.pop(fd, None) is not None:
            self._selector.unregister(fd)
            self._buffers.pop(fd, None)
            os.close(fd)

    def stop(self) -> None:
        self._stopped = True

    def run(self) -> None:
        while not self._stopped:
            timeout = None if self._timer is None else max(0.0, self._timer[0] - time.monotonic())
            ready = self._selector.select(timeout)
            if self._timer is not None and time.monotonic() >= self._timer[0]:
                action, self._timer = self._timer[1], None
                action()
            for key, _ in ready:
                if key.data is None:
                    os.read(self._wake, 4096)
                    self._on_child()
                elif key.data in self._readers:
                    self._read(key.data)

    def _read(self, fd: int) -> None:
        on_message, on_end = self._readers[fd]
        chunk = os.read(fd, 65536)
        if not chunk:
            self.forget(fd)
            on_end()
            return
        *lines, self._buffers[fd] = (self._buffers[fd] + chunk).split(b"\n")
        for line in lines:
            on_message(json.loads(line))

    def close_in_child(self) -> None:
        """In a child just forked: let go of the parent's descriptors and its wake-up."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        self._selector.close()
        for fd in [self._wake, self._waker, *self._readers]:
            if fd > 2:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._readers.clear()
