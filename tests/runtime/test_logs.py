"""What a worker process tells about its calls: `autan logs` (what it logs and its function
prints, tagged with call ids, read back from the logs stream, also while it comes: `-f`),
and the per-function call metrics of the control plane."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from prometheus_client import generate_latest

from runtime import RemoteError
from runtime.control import LocalProvider, ScalerMetrics
from runtime.control.scaler import Scaler
from runtime.core import Settings
from tests.apps import chatty
from tests.stack import Stack, serving

ROOT = Path(__file__).resolve().parents[2]


_metrics = ScalerMetrics()


@pytest.fixture(scope="module")
async def chatty_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with Stack.running(settings, "tests.apps.chatty", start_workers=False) as stack:
        chatty.app.sessions.configure(settings)
        provider = LocalProvider(settings, stop_grace_s=10)  # forked worker processes
        async with serving(provider, Scaler(stack.session.broker, provider, metrics=_metrics)):
            yield stack
        await chatty.app.sessions.aclose()


async def test_the_control_plane_counts_each_functions_calls_and_errors(
    chatty_stack: Stack,
) -> None:
    await chatty.chat.remote.aio(3)
    with pytest.raises(RemoteError, match="negative"):
        await chatty.chat.remote.aio(-1)
    expected = 'autan_call_errors_total{function="chatty.chat",type="ValueError"} 1.0'
    with anyio.fail_after(30):  # workers report in their heartbeats
        while True:
            text = generate_latest(_metrics.registry).decode()
            if expected in text:
                break
            await anyio.sleep(0.2)
    calls = next(line for line in text.splitlines() if line.startswith("autan_calls_total"))
    assert float(calls.split()[-1]) >= 2
    assert 'autan_call_queue_wait_seconds_count{function="chatty.chat"}' in text


def _command(settings: Settings, *args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.ops.cli", "--nats-url", settings.nats_url, *args]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    return {**env, "PYTHONPATH": str(ROOT)}


async def test_logs_follow_sees_a_line_printed_by_a_function(chatty_stack: Stack) -> None:
    settings = chatty_stack.session.settings
    # From a minute back: the line counts whether it comes before `-f` subscribed or after.
    follower = _start(_command(settings, "logs", "chatty.chat", "-f", "--since", "1m"))
    try:
        call = await chatty.chat.spawn.aio(7)
        assert await call.get_aio(timeout_s=60) == 7
        seen = await anyio.to_thread.run_sync(_line_with, follower, "hello 7", 30.0)
        assert call.id in seen
        assert "[stdout]" in seen
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # and its pipes closed


async def test_logs_of_one_call(chatty_stack: Stack) -> None:
    settings = chatty_stack.session.settings
    first = await chatty.chat.spawn.aio(1)
    second = await chatty.chat.spawn.aio(2)
    assert (await first.get_aio(timeout_s=60), await second.get_aio(timeout_s=60)) == (1, 2)
    lines: list[str] = []
    with anyio.fail_after(30):
        while len(lines) < 3:  # shipped in the background, a moment after the result
            done = await anyio.to_thread.run_sync(
                _run, _command(settings, "logs", "chatty.chat", "--call", second.id)
            )
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
    assert any("[stdout] hello 2" in line for line in lines), lines
    assert any("[stderr] oops 2" in line for line in lines), lines
    assert any("[info] chatted n=2" in line for line in lines), lines
    assert all(second.id in line for line in lines), lines  # not the first call's
    missing = await anyio.to_thread.run_sync(_run, _command(settings, "logs", "chatty.nope"))
    assert missing.returncode == 1
    assert "no function 'nope' in app 'chatty'" in missing.stderr


def _start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)


def _line_with(process: subprocess.Popen[str], text: str, timeout_s: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return line
        if not line and process.poll() is not None:
            raise AssertionError(
                f"autan logs -f exited: {process.stderr.read() if process.stderr else ''}"
            )
    raise AssertionError(f"no line with {text!r} within {timeout_s} s")
