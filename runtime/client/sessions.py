"""Sessions per event loop, and a loop for synchronous callers.

A NATS connection is bound to the loop it was made on, so `SessionProvider` gives each
event loop its own `Session`, and runs blocking callers' work on a loop of their own
thread, so `embed.remote("x")` works from plain synchronous code. The sessions of
synchronous callers are closed when the interpreter exits (a script need not call
`app.sessions.close()`); calling it earlier releases the connections sooner.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

from runtime.client.session import Session
from runtime.core import Coalesced, Settings

__all__ = ["SessionProvider"]

T = TypeVar("T")


class SessionProvider:
    """Sessions per event loop, opened on first use from the given (or environment) settings."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Session] = (
            weakref.WeakKeyDictionary()
        )
        # The loop and session of the last call: most calls come from one loop, and a
        # weak dictionary's lookup (a new weak reference each time) cost ~7% of a caller
        # making thousands of concurrent calls.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], Session] | None = None
        # The session being opened, per loop: calls that come meanwhile wait for it.
        self._opening: Coalesced[asyncio.AbstractEventLoop, Session] = Coalesced()
        self._lock = threading.Lock()
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._own_loops: list[asyncio.AbstractEventLoop] = []  # of synchronous callers' threads
        _PROVIDERS.add(self)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def configured(self) -> Settings | None:
        """The settings given to `configure` (or at construction); None: the environment's."""
        return self._settings

    def configure(self, settings: Settings | None) -> None:
        """Use these settings for sessions opened from now on (None: the environment's)."""
        self._settings = settings

    async def current(self) -> Session:
        """The running loop's session; the first call opens it, and calls made while it
        opens wait for that one (each opening its own would leave connections behind)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        session = self._sessions.get(loop)
        if session is None:
            session = await self._opening.run(loop, partial(self._open, loop))
        self._last = (weakref.ref(loop, self._forget_last), session)
        return session

    def _forget_last(self, _: object = None) -> None:
        self._last = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Session:
        session = self._sessions[loop] = await Session.open(self.settings)
        return session

    async def aclose(self) -> None:
        """Close the session of the running loop."""
        self._forget_last()
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()

    def run_sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` to completion for a synchronous caller.

        A thread without a running event loop drives a loop of its own, so a blocking
        call crosses no thread (a cross-thread hop costs about 0.1 ms). Between calls
        that loop is idle; the NATS client catches up when it runs again. From inside
        a running loop, the call runs on a private loop thread instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._thread_own_loop().run_until_complete(_call(fn, *args))
        future = asyncio.run_coroutine_threadsafe(_call(fn, *args), self._background_loop())
        return future.result()

    def iterate_sync(
        self, fn: Callable[..., AsyncGenerator[T, None]], *args: Any, **kw: Any
    ) -> Iterator[T]:
        """Drive an async generator from synchronous code."""
        iterator = fn(*args, **kw)
        try:
            while True:
                try:
                    yield self.run_sync(iterator.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self.run_sync(iterator.aclose)

    def close(self) -> None:
        """Close the sessions of synchronous callers (every thread's that is not in a call
        now, and the background one) and their loops."""
        with self._lock:
            own, self._own_loops = self._own_loops, []
            thread, self._thread = self._thread, None
            loop, self._thread_loop = self._thread_loop, None
        for idle in own:
            if idle.is_running():  # a call under way in another thread: it keeps its loop
                with self._lock:
                    self._own_loops.append(idle)
            elif not idle.is_closed():
                idle.run_until_complete(self.aclose())
                idle.close()
        if thread is None or loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.aclose(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _thread_own_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._own_loops.append(loop)
        return loop

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._thread_loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="autan-sessions", daemon=True
                )
                thread.start()
                self._thread_loop, self._thread = loop, thread
            return self._thread_loop


async def _call(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


_PROVIDERS: weakref.WeakSet[SessionProvider] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Close what scripts left open, so that they end without asyncio's complaints about
    pending tasks and a closed loop."""
    for provider in list(_PROVIDERS):
        with contextlib.suppress(Exception):
            provider.close()
