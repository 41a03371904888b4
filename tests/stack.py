"""A deployed app with in-process workers, for integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import anyio

from broker import CALLS_STREAM
from runtime.client import App, Session
from runtime.control import Provider
from runtime.control.scaler import Scaler
from runtime.core import Settings
from runtime.ops import DeployResult, deploy_target, discover_apps
from runtime.worker import Worker


class Stack:
    """What a test needs: the session, the deploy results, the app, the workers."""

    def __init__(self, session: Session, results: list[DeployResult], app: App) -> None:
        self.session = session
        self.results = results
        self.app = app
        self.workers: dict[str, Worker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @classmethod
    @asynccontextmanager
    async def running(
        cls, settings: Settings, target: str, *, start_workers: bool = True
    ) -> AsyncIterator[Stack]:
        session = await Session.open(settings)
        results = await deploy_target(session.link, target)
        [app] = discover_apps(target)
        # Put back at the end: a test's own stack of an app the session's stack also
        # serves must not leave the app pointing at a server that is gone.
        previous = app.sessions.configured
        app.sessions.configure(settings)
        stack = cls(session, results, app)
        try:
            for name in app.functions if start_workers else ():
                await stack.start_worker(name)
            yield stack
        finally:
            await stack.stop_workers()
            await app.sessions.aclose()
            app.sessions.configure(previous)
            await session.close()

    async def stored_calls(self) -> int:
        """Messages the calls stream has stored so far (its last sequence)."""
        info = await self.session.broker.js.stream_info(CALLS_STREAM)
        return int(info.state.last_seq)

    async def start_worker(self, fn: str, *, min_sequence: int = 0) -> Worker:
        worker = Worker(self.session.settings, self.app.name, fn, min_sequence=min_sequence)
        self._tasks[fn] = asyncio.ensure_future(worker.serve())
        waiter = asyncio.ensure_future(worker.ready.wait())
        await asyncio.wait({self._tasks[fn], waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._tasks[fn].done():
            self._tasks[fn].result()
        self.workers[fn] = worker
        return worker

    def serving(self, fn: str) -> bool:
        """Whether the worker of `fn` still serves (it has not ended, nor crashed)."""
        task = self._tasks.get(fn)
        return task is not None and not task.done()

    async def stop_worker(self, fn: str) -> None:
        worker = self.workers.pop(fn)
        worker.stop()
        task = self._tasks.pop(fn)
        with anyio.fail_after(10):
            await task

    async def stop_workers(self) -> None:
        """All at once: each drains for up to its pull requests' expiry."""

        async def stop(fn: str) -> None:
            with suppress(Exception):
                await self.stop_worker(fn)

        async with anyio.create_task_group() as group:
            for fn in list(self.workers):
                group.start_soon(stop, fn)


@asynccontextmanager
async def serving(
    provider: Provider, scaler: Scaler | None = None, *, stop_timeout_s: float = 30
) -> AsyncIterator[None]:
    """The provider and the scaler (if any) serving in the background while the block runs.

    A task of its own rather than a task group, since pytest-asyncio fixtures span
    tasks. If they cannot start, entering raises why; if they crash meanwhile, leaving
    raises it, rather than the test timing out on a scaler that is gone.
    """
    ready = asyncio.Event()

    async def serve() -> None:
        async with anyio.create_task_group() as group:
            await group.start(provider.serve)
            if scaler is not None:
                await group.start(scaler.serve)
            ready.set()

    task = asyncio.ensure_future(serve())
    waiter = asyncio.ensure_future(ready.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()
    try:
        yield
    finally:
        crashed = task.done()
        task.cancel()
        with anyio.CancelScope(shield=True), anyio.fail_after(stop_timeout_s):
            await asyncio.gather(task, return_exceptions=True)
    if crashed and not task.cancelled():
        task.result()


async def poll(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, every_s: float = 0.02
) -> None:
    """Wait until `check()` holds, for state that has no notification (JetStream counters)."""
    for _ in range(max(1, int(timeout_s / every_s))):
        if await check():
            return
        await anyio.sleep(every_s)
    raise TimeoutError(f"condition not met within {timeout_s} s")
