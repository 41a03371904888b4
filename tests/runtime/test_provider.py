"""The local provider: forked workers that start, serve, stop gracefully, and report exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import anyio
import pytest

from runtime.control import LocalProvider, ProvidedWorker, Provider
from runtime.core import FunctionSpec, WorkerDirectory, WorkerInfo
from tests.apps import scaled
from tests.stack import Stack


async def _ready(stack: Stack, worker: ProvidedWorker) -> WorkerInfo:
    directory = await WorkerDirectory.open(stack.session.broker)
    [info] = [
        w
        for w in await directory.wait_until(
            lambda ws: any(w.worker_id == worker.worker_id and w.state == "ready" for w in ws), 60
        )
        if w.worker_id == worker.worker_id
    ]
    return info


async def _hello(stack: Stack) -> FunctionSpec:
    return await stack.session.registry.get("scaled", "hello")


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "spawned"])
async def test_a_worker_starts_serves_and_stops(scaled_stack: Stack, fork: bool) -> None:
    # Typed as the protocol: the scaler's view, checked by mypy.
    provider: Provider = LocalProvider(scaled_stack.session.settings, fork=fork, stop_grace_s=10)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await provider.start(await _hello(scaled_stack))
        assert worker.state == "starting"
        info = await _ready(scaled_stack, worker)
        # A worker forked from its function's template, built for it: its pid is known
        # once the template forked it.
        [worker] = provider.workers()
        assert info.pid == worker.pid
        assert ("fork" in info.cold_start_ms) is fork
        assert info.template == ("built" if fork else "")
        title = (await anyio.Path(f"/proc/{worker.pid}/cmdline").read_bytes()).replace(b"\0", b" ")
        assert title.startswith(b"autan worker scaled.hello@")
        loaded = {"template"} if fork else {"verify", "fetch", "unpickle"}  # where it loaded
        assert {"connect", "ready"} | loaded <= set(info.cold_start_ms)
        assert await scaled.hello.remote.aio("you") == "hello you"
        await provider.stop(worker.worker_id)
        assert [w.state for w in provider.workers()] in ([], ["stopping"])
        assert await provider.exit_code(worker.worker_id) == 0
        assert provider.workers() == []
        group.cancel_scope.cancel()


async def test_a_killed_worker_is_reported(scaled_stack: Stack) -> None:
    provider = LocalProvider(scaled_stack.session.settings)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        worker = await provider.start(await _hello(scaled_stack))
        await _ready(scaled_stack, worker)
        [worker] = provider.workers()  # its pid, now that its template forked it
        assert worker.pid > 0
        os.kill(worker.pid, signal.SIGKILL)
        with anyio.fail_after(10):
            assert await provider.exit_code(worker.worker_id) == -signal.SIGKILL
        group.cancel_scope.cancel()


async def test_cores_are_shared_between_workers(scaled_stack: Stack) -> None:
    provider = LocalProvider(scaled_stack.session.settings)
    provider.cores = 8
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        first = await provider.start(await _hello(scaled_stack))
        second = await provider.start(await _hello(scaled_stack))
        assert (first.threads, second.threads) == (8, 4)
        assert provider.capacity().workers == 2
        group.cancel_scope.cancel()  # serve stops them all
    assert provider.workers() == []


@pytest.mark.parametrize(
    "entry", ["runtime.ops.cli", "runtime.worker.main", "runtime.worker.forkserver"]
)
def test_titles_hold_when_telemetry_off_comes_first_in_the_environment(entry: str) -> None:
    # `ORT_DISABLE_TELEMETRY=1 autan up`: the variable is the environment's first. Set
    # again on import, it would hide argv from setproctitle and leave `ps` with bare
    # `python3.11 -m ...` lines.
    env = {"ORT_DISABLE_TELEMETRY": "1", **os.environ}
    code = (
        f"import {entry}\n"
        "from runtime.core import set_title\n"
        "set_title('autan worker probe')\n"
        "print(open('/proc/self/cmdline', 'rb').read().split(b'\\0')[0].decode())"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "autan worker probe"
