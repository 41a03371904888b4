"""Deadlines enforced from outside the user's code: a call that holds the event loop
(on the loop thread, or an async function that never awaits) is ended at its timeout, and
its worker process replaced; the HTTP and Python callers hear FunctionTimeout, not silence."""

from __future__ import annotations

import time

import anyio
import pytest

from runtime import FunctionTimeout
from runtime.control import LocalProvider, ProvidedWorker
from runtime.core import WorkerDirectory
from runtime.worker.executor import INLINE_AFTER
from tests.apps import guarded
from tests.stack import Stack


async def _ready_worker(stack: Stack, provider: LocalProvider, fn: str) -> ProvidedWorker:
    worker = await provider.start(await stack.session.registry.get("guarded", fn))
    directory = await WorkerDirectory.open(stack.session.broker)
    await directory.wait_until(
        lambda ws: any(w.worker_id == worker.worker_id and w.state == "ready" for w in ws), 60
    )
    return worker


@pytest.mark.timeout(90)
async def test_a_call_on_the_loop_thread_is_cut_at_its_timeout(guarded_stack: Stack) -> None:
    provider = LocalProvider(guarded_stack.session.settings, stop_grace_s=10)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await _ready_worker(guarded_stack, provider, "quick_then_stuck")
        for _ in range(INLINE_AFTER + 8):  # quick calls: they move onto the loop thread
            assert await guarded.quick_then_stuck.remote.aio(0.0) == 0.0
        started = time.monotonic()
        with pytest.raises(FunctionTimeout):
            await guarded.quick_then_stuck.remote.aio(60.0)
        assert time.monotonic() - started < 10  # the call's timeout_s is 1
        with anyio.fail_after(30):
            assert await provider.exit_code(worker.worker_id) == 75  # replaced
        group.cancel_scope.cancel()


@pytest.mark.timeout(90)
async def test_an_async_call_that_blocks_the_loop_ends_its_worker(guarded_stack: Stack) -> None:
    provider = LocalProvider(guarded_stack.session.settings, stop_grace_s=10)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await _ready_worker(guarded_stack, provider, "blocks_the_loop")
        call = await guarded.blocks_the_loop.spawn.aio(600.0)
        started = time.monotonic()
        with anyio.fail_after(30):
            assert await provider.exit_code(worker.worker_id) == 75
        assert time.monotonic() - started < 20  # timeout_s 1, and the guard's grace
        assert call.id
        group.cancel_scope.cancel()
