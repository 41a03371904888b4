"""The local provider keeps a worker process running: a killed worker comes back."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import anyio

from runtime.provider import LocalProvider
from runtime.workers import WorkerDirectory, WorkerInfo
from tests.apps import sample
from tests.stack import Stack


def _process_of(function: str, exclude: set[int]) -> Callable[[list[WorkerInfo]], bool]:
    """A worker process of `function` other than this test process and `exclude`."""

    def match(workers: list[WorkerInfo]) -> bool:
        return any(
            w.function == function
            and w.state == "ready"
            and w.pid not in exclude
            and w.pid != os.getpid()
            for w in workers
        )

    return match


async def test_a_killed_worker_is_restarted_and_serves_again(stack: Stack) -> None:
    provider = LocalProvider(stack.session.settings, stop_grace_s=5)
    directory = await WorkerDirectory.open(stack.session.broker)
    async with anyio.create_task_group() as group:
        await group.start(provider.keep_running, "tests.describe")
        first = await directory.wait_until(_process_of("tests.describe", set()), 60)
        [pid] = [w.pid for w in first if w.function == "tests.describe" and w.pid != os.getpid()]
        os.kill(pid, signal.SIGKILL)
        await directory.wait_until(_process_of("tests.describe", {pid}), 60)
        await stack.stop_worker("describe")  # only the provider's process serves now
        result = await sample.describe.remote.aio("after restart")
        assert result["args"] == ["after restart"]
        group.cancel_scope.cancel()
    await stack.start_worker("describe")
