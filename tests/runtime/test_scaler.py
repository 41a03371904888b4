"""Scaling from zero and back with forked workers, a real nats-server and the real scaler."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest

from broker import REGISTRY_BUCKET, Backlog, Broker, calls_source, function_key
from runtime import Call
from runtime.client import Session
from runtime.control import LocalProvider, ProvidedWorker
from runtime.control.scaler import Scaler, _load
from runtime.core import DeployKey
from runtime.ops import deploy_target
from runtime.ops.admin import ls
from tests.apps import scaled
from tests.keys import DEPLOY_KEY
from tests.stack import Stack, poll, serving


class Running:
    """A provider and a scaler serving in the background of one test."""

    def __init__(self, provider: LocalProvider, scaler: Scaler) -> None:
        self.provider = provider
        self.scaler = scaler

    def workers(self, fn: str) -> list[ProvidedWorker]:
        return self.provider.workers(f"scaled.{fn}")


@pytest.fixture
async def running(scaled_stack: Stack) -> AsyncIterator[Running]:
    provider = LocalProvider(scaled_stack.session.settings, stop_grace_s=10)
    scaler = Scaler(scaled_stack.session.broker, provider)
    async with serving(provider, scaler):
        yield Running(provider, scaler)


async def _delivered(broker: Broker) -> bool:
    return (await broker.backlog(calls_source("scaled", "slow"))).num_ack_pending > 0


async def _all_exit(provider: LocalProvider, workers: list[ProvidedWorker]) -> list[int]:
    """Each worker's exit code, once all have exited."""
    with anyio.fail_after(15):
        return [await provider.exit_code(worker.worker_id) for worker in workers]


async def _peak(sample: Callable[[], int], until: anyio.Event) -> int:
    """The highest value of `sample()` until `until` is set (sampled every 20 ms)."""
    peak = 0
    while not until.is_set():
        peak = max(peak, sample())
        with anyio.move_on_after(0.02):
            await until.wait()
    return peak


async def test_first_call_starts_a_worker_then_it_scales_to_zero(
    running: Running, scaled_stack: Stack
) -> None:
    assert running.workers("hello") == []
    value, result = await scaled_stack.session.call_result("scaled", "hello", ("zero",), {})
    assert value == "hello zero"
    assert {"fork", "boot", "connect", "fetch", "unpickle", "first_run"} <= set(
        result.cold_start_ms
    )
    workers = running.workers("hello")
    assert len(workers) == 1
    assert running.scaler.functions["scaled.hello"].last.reason == "activate: 1 waiting, no worker"
    assert await _all_exit(running.provider, workers) == [0]  # keep_warm_s=1: back to zero
    assert running.workers("hello") == []


async def _map_watching_workers(
    running: Running, handle: Any, inputs: list[float]
) -> tuple[list[Any], int]:
    """`handle.map(inputs)`'s results, and the most workers of it seen meanwhile."""
    done = anyio.Event()
    peak = 0

    async def watch() -> None:
        nonlocal peak
        peak = await _peak(lambda: len(running.workers(handle.name)), done)

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        results = [r async for r in handle.map.aio(inputs)]
        done.set()
    return results, peak


async def test_a_burst_scales_out_then_back_to_zero(running: Running) -> None:
    results, peak = await _map_watching_workers(running, scaled.slow, [0.3] * 24)
    assert results == [0.3] * 24
    assert peak == 4
    await _all_exit(running.provider, running.workers("slow"))


async def test_packs_count_as_their_calls_when_scaling(running: Running) -> None:
    # 128 calls in 8 packs of 16: 8 messages, but 128 calls for target_backlog=8.
    results, peak = await _map_watching_workers(running, scaled.slow_batch, [0.5] * 128)
    assert results == [0.5] * 128
    assert peak >= 3
    await _all_exit(running.provider, running.workers("slow_batch"))


async def test_draining_a_worker_loses_no_call(running: Running) -> None:
    calls: list[Call[float]] = [await scaled.slow.spawn.aio(0.4) for _ in range(12)]
    await running.provider.wait_until(
        lambda ws: sum(w.function == "scaled.slow" and w.state == "ready" for w in ws) >= 2, 30
    )
    victim = running.workers("slow")[0]
    await running.provider.stop(victim.worker_id)
    assert await running.provider.exit_code(victim.worker_id) == 0
    results = [await call.get_aio(timeout_s=30) for call in calls]
    assert results == [0.4] * 12
    await _all_exit(running.provider, running.workers("slow"))


async def test_a_call_on_a_killed_worker_is_delivered_again(
    running: Running, scaled_stack: Stack
) -> None:
    pending = asyncio.ensure_future(scaled_stack.session.call_result("scaled", "slow", (1.0,), {}))
    broker = scaled_stack.session.broker
    await poll(lambda: _delivered(broker), timeout_s=30)
    [victim] = running.workers("slow")
    assert victim.pid > 0  # forked (0: a process group)
    os.kill(victim.pid, signal.SIGKILL)
    with anyio.fail_after(30):
        value, result = await pending
    assert value == 1.0
    assert result.attempts == 2
    assert result.worker != victim.worker_id
    await _all_exit(running.provider, running.workers("slow"))


def _ready(version: str | None = None) -> Callable[[list[ProvidedWorker]], bool]:
    def check(workers: list[ProvidedWorker]) -> bool:
        return any(
            w.function == "scaled.warm" and w.state == "ready" and version in (None, w.version)
            for w in workers
        )

    return check


async def test_a_new_version_retires_the_old_workers(running: Running, scaled_stack: Stack) -> None:
    await running.provider.wait_until(_ready(), 30)  # min_warm=1
    [old] = running.workers("warm")
    assert await scaled.warm.remote.aio(2) == 2
    [result] = await deploy_target(scaled_stack.session.link, "tests.apps.scaled_v2")
    assert result.changed
    assert result.version != old.version
    async with await Session.open(scaled_stack.session.settings) as fresh:  # as a new process
        assert await fresh.call("scaled", "warm", (2,), {}) == 20  # once deploy returned
    with anyio.fail_after(20):
        code = await running.provider.exit_code(old.worker_id)
    assert code == 0  # drained and stopped, not killed
    await running.provider.wait_until(_ready(result.version), 30)
    assert await scaled.warm.remote.aio(2) == 20  # the new code


async def test_a_function_without_its_consumer_does_not_stop_the_others(
    running: Running, scaled_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """A registered function whose consumer is gone (removed by hand, say) is reported
    and skipped; the scaler goes on scaling the others, and `autan ls` lists them all."""
    session = scaled_stack.session
    hello = await session.registry.get("scaled", "hello")
    ghost = msgspec.structs.replace(hello, name="ghost")  # registered, no consumer made
    await session.registry.put(DeployKey.parse(DEPLOY_KEY).sign(ghost))
    try:

        async def ghost_skipped() -> bool:  # once the scaler has read the registry again
            tracked = running.scaler.functions.get("scaled.ghost")
            return tracked is not None and tracked.missing

        await poll(ghost_skipped, timeout_s=10)
        value, _ = await session.call_result("scaled", "hello", ("still",), {})
        assert value == "hello still"
        assert running.scaler.functions["scaled.ghost"].last.reason.startswith("no consumer")
        assert await ls(session.settings) == 0
        listing = capsys.readouterr().out
        assert re.search(r"^scaled\.ghost\s+[0-9a-f]{16}\s+0\s+\?\s", listing, re.M), listing
        assert "scaled.ghost: no consumer 'fn_scaled_ghost'" in listing
        assert "deploy the function again" in listing
    finally:
        registry = await session.broker.bucket(REGISTRY_BUCKET)
        await registry.delete(function_key("scaled", "ghost"))
    await _all_exit(running.provider, running.workers("hello"))


def test_the_load_counts_calls_not_messages() -> None:
    backlog = Backlog(num_pending=8, num_ack_pending=2, num_waiting=1)
    load = _load(backlog, 0.5, [], departing=0, calls_per_message=16)
    assert (load.backlog, load.waiting) == (160, 128)
    assert _load(backlog, 0.5, [], departing=0).backlog == 10
