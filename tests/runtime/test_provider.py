"""The local provider: forked workers that start, serve, stop gracefully, and report exits."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from runtime.provider import LocalProvider
from runtime.workers import WorkerDirectory, WorkerInfo
from tests.apps import scaled
from tests.stack import Stack


async def _ready(stack: Stack, pid: int) -> WorkerInfo:
    directory = await WorkerDirectory.open(stack.session.broker)
    [info] = [
        w
        for w in await directory.wait_until(
            lambda ws: any(w.pid == pid and w.state == "ready" for w in ws), 60
        )
        if w.pid == pid
    ]
    return info


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
async def test_a_worker_starts_serves_and_stops(scaled_stack: Stack, fork: bool) -> None:
    provider = LocalProvider(scaled_stack.session.settings, fork=fork, stop_grace_s=10)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await provider.start("scaled.hello")
        info = await _ready(scaled_stack, worker.pid)
        assert ("fork" in info.cold_start_ms) is fork
        assert {"connect", "manifest", "fetch", "unpickle", "ready"} <= set(info.cold_start_ms)
        assert await scaled.hello.remote.aio("you") == "hello you"
        await provider.stop(worker)
        assert worker.returncode == 0
        assert provider.workers() == []
        group.cancel_scope.cancel()


async def test_a_killed_worker_is_reported(scaled_stack: Stack) -> None:
    provider = LocalProvider(scaled_stack.session.settings)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await provider.start("scaled.hello")
        await _ready(scaled_stack, worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        with anyio.fail_after(10):
            await worker.exited.wait()
        assert worker.returncode == -signal.SIGKILL
        group.cancel_scope.cancel()


async def test_cores_are_shared_between_workers(scaled_stack: Stack) -> None:
    provider = LocalProvider(scaled_stack.session.settings)
    provider.cores = 8
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        first = await provider.start("scaled.hello")
        second = await provider.start("scaled.hello")
        assert (first.threads, second.threads) == (8, 4)
        await provider.stop_all()
        group.cancel_scope.cancel()
