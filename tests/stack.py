"""A deployed app with in-process workers, for integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import anyio

from broker import CALLS_STREAM
from runtime.app import App
from runtime.commands import deploy_target
from runtime.deploy import DeployResult, discover_apps
from runtime.session import Session
from runtime.settings import Settings
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
        results = await deploy_target(session, settings, target)
        [app] = discover_apps(target)
        app.sessions.configure(settings)
        stack = cls(session, results, app)
        try:
            for name in app.functions if start_workers else ():
                await stack.start_worker(name)
            yield stack
        finally:
            await stack.stop_workers()
            await app.sessions.aclose()
            await session.close()

    async def stored_calls(self) -> int:
        """Messages the calls stream has stored so far (its last sequence)."""
        info = await self.session.broker.js.stream_info(CALLS_STREAM)
        return int(info.state.last_seq)

    async def start_worker(self, fn: str) -> Worker:
        worker = Worker(self.session.settings, self.app.name, fn)
        self._tasks[fn] = asyncio.ensure_future(worker.serve())
        waiter = asyncio.ensure_future(worker.ready.wait())
        await asyncio.wait({self._tasks[fn], waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._tasks[fn].done():
            self._tasks[fn].result()
        self.workers[fn] = worker
        return worker

    async def stop_worker(self, fn: str) -> None:
        worker = self.workers.pop(fn)
        worker.stop()
        task = self._tasks.pop(fn)
        with anyio.fail_after(10):
            await task

    async def stop_workers(self) -> None:
        for fn in list(self.workers):
            with suppress(Exception):
                await self.stop_worker(fn)


async def poll(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, every_s: float = 0.02
) -> None:
    """Wait until `check()` holds, for state that has no notification (JetStream counters)."""
    for _ in range(max(1, int(timeout_s / every_s))):
        if await check():
            return
        await anyio.sleep(every_s)
    raise TimeoutError(f"condition not met within {timeout_s} s")
