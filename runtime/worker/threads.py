"""The call threads of sync functions: fed in order, with no hop through the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

__all__ = ["CallThreads"]


class CallThreads:
    """`size` daemon threads running sync calls in order of submission.

    A thread takes the next chunk the moment it is free, with no round trip through
    the event loop (a limiter handing over through the loop left the thread idle for
    about 0.3 ms between batches). Daemon threads: one stuck in a call past its
    timeout does not hold up the process's exit.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[tuple[Callable[[], None], asyncio.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, work: Callable[[], None]) -> asyncio.Future[None]:
        if self._closed:
            raise RuntimeError("the executor is closed")
        if not self._threads:
            for n in range(self._size):
                thread = threading.Thread(target=self._serve, name=f"autan-call-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put((work, done))
        return done

    def close(self) -> None:
        """Let the threads end once the work queued before is done (a stuck one never will)."""
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            work, done = item
            work()  # never raises: calls catch their exceptions into outcomes
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                done.get_loop().call_soon_threadsafe(_resolve, done)


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
