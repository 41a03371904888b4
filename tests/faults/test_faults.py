"""Faults injected on purpose; after each, the ledger: nothing lost, no result twice.

Each case runs its own nats-server, scaler and forked workers (ack_wait_s=2).
`AUTAN_LEDGER_OUT=path pytest tests/faults` collects the ledgers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from runtime import RemoteError
from runtime.ops import DeadLetters, deploy_target
from tests.faults import app as fx
from tests.faults.cluster import Cluster
from tests.faults.conftest import record
from tests.faults.ledger import Ledger, Report
from tests.stack import poll

pytestmark = pytest.mark.timeout(120)


async def _started(ledger: Ledger, count: int, event: str = "start") -> None:
    """Until `count` executions have started (the log is a file: polled)."""

    async def enough() -> bool:
        return sum(ledger.executions(event).values()) >= count

    await poll(enough, timeout_s=60, every_s=0.05)


async def test_kill_9_a_worker_mid_batch(tmp_path: Path, ledger: Ledger) -> None:
    async with Cluster.running(tmp_path) as cluster:
        for _ in range(100):
            await ledger.spawn(fx.work, 1.0)
        await _started(ledger, 20)
        os.kill(ledger.busy_pids()[0], signal.SIGKILL)  # a worker with a call under way
        report = await ledger.settle(cluster.session)
    record("kill -9 worker mid-batch", report)
    assert (report.accepted, report.completed, report.lost) == (100, 100, 0)
    assert report.duplicate_results == 0
    assert report.duplicate_executions <= 10  # at most the victim's calls in flight


async def test_kill_9_a_worker_mid_pack(tmp_path: Path, ledger: Ledger) -> None:
    """`.map()` on a batched function sends packs; a worker killed holding some loses none."""
    async with Cluster.running(tmp_path):

        async def collect() -> list[int]:
            return [value async for value in fx.doubled.map.aio(range(400))]

        results = asyncio.ensure_future(collect())
        await _started(ledger, 80)
        running_pid = int(ledger.log_path.read_text().splitlines()[-1].split()[3])
        os.kill(running_pid, signal.SIGKILL)  # mid-batch: it sleeps 0.1 s after logging
        values = await asyncio.wait_for(results, 90)
    executions = ledger.executions()
    duplicates = sum(count - 1 for count in executions.values())
    report = Report(
        accepted=400,
        refused=0,
        completed=sum(v == 2 * i for i, v in enumerate(values)),
        dead_lettered=0,
        lost=400 - len(values),
        duplicate_results=len(values) - 400 if len(values) > 400 else 0,
        duplicate_executions=duplicates,
    )
    record("kill -9 worker mid-pack", report)
    assert values == [2 * i for i in range(400)]
    assert set(executions) == {f"item-{i}" for i in range(400)}
    # The victim's packs in hand run again elsewhere: at most two (packs of 32, as 400
    # inputs over 2 workers make them).
    assert 0 < duplicates <= 64


async def test_kill_9_nats_server_under_load(tmp_path: Path, ledger: Ledger) -> None:
    async with Cluster.running(tmp_path) as cluster:
        for _ in range(30):
            await ledger.spawn(fx.work, 0.2)
        await _started(ledger, 5)
        cluster.kill_nats()
        for _ in range(2):  # refused (or unconfirmed): never a false acceptance
            assert not await ledger.spawn(fx.work, 0.2)
        cluster.restart_nats()
        for _ in range(20):
            await ledger.spawn(fx.work, 0.2)
        report = await ledger.settle(cluster.session)
    record("kill -9 nats-server, restart", report)
    assert report.refused == 2
    assert report.lost == 0
    assert report.completed == report.accepted == 50
    assert report.duplicate_results == 0


async def test_sigstop_a_worker_past_the_ack_deadline(tmp_path: Path, ledger: Ledger) -> None:
    async with Cluster.running(tmp_path) as cluster:
        await cluster.ready_workers("pausable", 2)
        await ledger.spawn(fx.pausable, 3.0)
        await _started(ledger, 1)
        stopped_pid = int(ledger.log_path.read_text().split()[3])
        os.kill(stopped_pid, signal.SIGSTOP)
        try:
            winner = await cluster.session.result(ledger.accepted[0], 30)
        finally:
            os.kill(stopped_pid, signal.SIGCONT)
        await _started(ledger, 2, "end")  # the stale execution finishes; its result is refused
        report = await ledger.settle(cluster.session)
        assert await cluster.session.result(ledger.accepted[0], 5) == winner
    record("SIGSTOP past ack deadline", report)
    assert winner != stopped_pid
    assert (report.completed, report.lost, report.duplicate_results) == (1, 0, 0)
    assert report.duplicate_executions == 1


async def test_a_poison_call_is_dead_lettered_after_its_attempts(
    tmp_path: Path, ledger: Ledger
) -> None:
    async with Cluster.running(tmp_path) as cluster:
        await ledger.spawn(fx.poison, 7)
        for _ in range(10):
            await ledger.spawn(fx.work, 0.05)
        report = await ledger.settle(cluster.session)
        letters = await DeadLetters(cluster.session.broker).list("faults", "poison")
    record("poison call", report)
    poison_id = ledger.accepted[0]
    starts = [line.split() for line in ledger.log_path.read_text().splitlines()]
    times = [float(s[4]) for s in starts if s[1] == poison_id and s[0] == "start"]
    assert len(times) == 3  # exactly max_attempts
    assert times[1] - times[0] >= 0.3
    assert times[2] - times[1] >= 0.6
    assert [item.letter.attempts for item in letters] == [3]
    assert (report.completed, report.dead_lettered, report.lost) == (10, 1, 0)


async def test_memory_exhaustion_replaces_the_worker(tmp_path: Path, ledger: Ledger) -> None:
    async with Cluster.running(tmp_path) as cluster:
        await ledger.spawn(fx.hog, 4096)  # 4 GiB under a 1 GiB limit
        with pytest.raises(RemoteError, match="MemoryError"):
            await cluster.session.result(ledger.accepted[0], 60)
        for _ in range(5):
            await ledger.spawn(fx.work, 0.05)
        report = await ledger.settle(cluster.session)
    record("memory exhaustion", report)
    pids = {line.split()[3] for line in ledger.log_path.read_text().splitlines()
            if line.split()[1] == ledger.accepted[0]}  # fmt: skip
    assert len(pids) == 2  # each attempt on a fresh worker
    assert (report.completed, report.dead_lettered, report.lost) == (5, 1, 0)


async def test_scale_down_while_calls_are_in_flight(tmp_path: Path, ledger: Ledger) -> None:
    async with Cluster.running(tmp_path) as cluster:
        for _ in range(40):
            await ledger.spawn(fx.work, 0.5)
        workers = await cluster.ready_workers("work", 2)
        await _started(ledger, 10)
        await cluster.provider.stop(workers[0].worker_id)  # what the scaler does on scale-down
        report = await ledger.settle(cluster.session)
    record("scale-down with calls in flight", report)
    assert (report.completed, report.lost, report.duplicate_results) == (40, 0, 0)
    assert report.duplicate_executions == 0  # a drain finishes what it started


async def test_a_full_queue_refuses_and_keeps_what_it_accepted(
    tmp_path: Path, ledger: Ledger
) -> None:
    async with Cluster.running(tmp_path, max_queued_calls=20) as cluster:
        for _ in range(200):
            await ledger.spawn(fx.work, 0.5)
        report = await ledger.settle(cluster.session)
    record("full queue", report)
    assert report.refused > 0
    assert report.accepted + report.refused == 200
    assert (report.completed, report.lost) == (report.accepted, 0)


@pytest.mark.timeout(180)
async def test_redeploy_under_load_leaves_no_call_to_the_ack_wait(
    tmp_path: Path, ledger: Ledger
) -> None:
    """Sixteen clients call while the function is redeployed four times (each time the
    old version's workers are retired): every call succeeds once, none waits the 30 s ack
    deadline (a worker stopping had dropped calls sent to its standing pull requests)."""
    source = await anyio.Path(fx.__file__).read_text()
    async with Cluster.running(tmp_path, ack_wait_s=30.0) as cluster:
        latencies: list[float] = []
        stop = anyio.Event()

        async def client() -> None:
            while not stop.is_set():
                started = time.monotonic()
                call = await fx.work.spawn.aio(0.01)
                ledger.accepted.append(call.id)
                assert await call.get_aio() == 0.01
                latencies.append(time.monotonic() - started)

        async with anyio.create_task_group() as group:
            for _ in range(16):
                group.start_soon(client)
            await anyio.sleep(2)
            for version in (2, 3, 4, 5):  # new code: the same functions, other line numbers
                variant = tmp_path / f"faults_v{version}.py"
                await anyio.Path(variant).write_text("\n" * version + source)
                await deploy_target(cluster.session.link, str(variant))
                await anyio.sleep(2)
            stop.set()
        report = await ledger.settle(cluster.session)
    record("redeploy under load", report)
    assert report.accepted > 100
    assert (report.completed, report.lost, report.duplicate_results) == (report.accepted, 0, 0)
    assert report.duplicate_executions == 0
    assert max(latencies) < 10, f"slowest call {max(latencies):.1f} s"


@pytest.mark.timeout(180)
async def test_kill_9_of_the_nats_node_leading_the_calls_stream(
    tmp_path: Path, ledger: Ledger
) -> None:
    """On a three-node cluster the calls stream keeps three copies: the death of the member
    that leads it loses nothing, and calls are accepted again once another leads."""
    async with Cluster.running(tmp_path, nats_nodes=3) as cluster:
        assert cluster.nats_cluster is not None
        assert cluster.session.broker.replicas == 3
        info = await cluster.session.broker.js.stream_info("AUTAN_CALLS")
        assert info.config.num_replicas == 3
        for _ in range(30):
            await ledger.spawn(fx.work, 0.2)
        await _started(ledger, 5)
        leader = await cluster.nats_cluster.leader_of("AUTAN_CALLS")
        cluster.nats_cluster.server(leader).kill()
        killed_at = time.monotonic()
        while len(ledger.accepted) < 50 and time.monotonic() - killed_at < 60:
            if not await ledger.spawn(fx.work, 0.2):
                await anyio.sleep(0.2)  # refused while a new leader is elected
        report = await ledger.settle(cluster.session)
    record("kill -9 the calls stream's NATS leader", report)
    assert report.accepted == 50
    assert report.lost == 0
    assert report.completed == 50
    assert report.duplicate_results == 0
