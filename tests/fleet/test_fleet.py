"""A fleet on one machine: three agents on a three-node NATS cluster, one control plane."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import msgspec
import pytest

from broker import agent_subject
from runtime.control import read_statuses
from runtime.control.nodes import AgentAnswer, Reservation, StartOrder, StopOrder
from tests.faults.conftest import record
from tests.faults.ledger import Ledger
from tests.fleet import app as fl
from tests.fleet.fleet import Fleet
from tests.stack import poll

pytestmark = pytest.mark.timeout(240)


async def test_a_burst_spreads_over_the_agents_and_packs_gpu_memory(
    tmp_path: Path, ledger: Ledger
) -> None:
    async with Fleet.running(tmp_path) as fleet:
        for _ in range(60):
            await ledger.spawn(fl.spread, 0.3)
        most = 0
        with anyio.move_on_after(6):
            while True:
                most = max(most, len(fleet.workers("spread")))
                await anyio.sleep(0.05)
        spread = fleet.per_node("spread")
        report = await ledger.settle(fleet.session)
        assert most == 6, f"{most} workers of a function with max_workers=6"
        assert sorted(spread.values()) == [2, 2, 2], spread

        shared = [await fl.share.spawn.aio(0.5) for _ in range(20)]
        await poll(_at_least(fleet, "share", 5), timeout_s=30)
        per_gpu: dict[tuple[str, int], int] = {}
        for report_ in fleet.provider.nodes():
            for held in report_.workers:
                for device in held.reserved.devices:
                    key = (report_.node, device)
                    per_gpu[key] = per_gpu.get(key, 0) + held.reserved.gpu_memory_mb
        assert max(per_gpu.values()) <= 24 * 1024, per_gpu  # 10 GB shares: two per 24 GB GPU
        assert sum(per_gpu.values()) == 5 * 10 * 1024
        for call in shared:
            assert await call.get_aio(timeout_s=60) in {"a1", "a2", "a3"}

        await fl.huge.spawn.aio(1)
        await poll(_reason_says(fleet, "fleet.huge", "the largest free is"), timeout_s=30)
        rows = {row.function: row for row in await read_statuses(fleet.session.broker)}
        assert (
            "unplaceable: needs 40 GB of GPU memory, the largest free is"
            in rows["fleet.huge"].reason
        )
    record("burst over three agents", report)
    assert (report.accepted, report.completed, report.lost) == (60, 60, 0)


async def test_kill_9_of_an_agent_under_load_loses_nothing(tmp_path: Path, ledger: Ledger) -> None:
    """The agent and its workers die at once (a host lost); the node is declared lost after
    the bound, replacements start on the others, and its calls come back from JetStream."""
    async with Fleet.running(tmp_path) as fleet:
        for _ in range(160):  # 24 at a time, a second each: work left past the loss
            await ledger.spawn(fl.spread, 1.0)
        await poll(_at_least(fleet, "spread", 6), timeout_s=30)
        victim = fleet.agents["a1"]
        assert fleet.per_node("spread")["a1"] >= 1
        assert victim.kill_host() >= 3  # the agent, its fork server, its workers
        killed = time.monotonic()
        await poll(lambda: _node_gone(fleet, "a1"), timeout_s=20, every_s=0.01)
        lost_at = time.monotonic()
        await poll(_ready_elsewhere(fleet, "spread", 6, "a1"), timeout_s=20, every_s=0.01)
        replaced_at = time.monotonic()
        for _ in range(20):
            await ledger.spawn(fl.spread, 0.1)
        report = await ledger.settle(fleet.session)
    record("kill -9 of an agent", report)
    print(f"node lost {lost_at - killed:.2f} s after kill -9; replacements ready "
          f"{replaced_at - lost_at:.2f} s after the loss")  # fmt: skip
    assert replaced_at - lost_at < 2.0
    assert (report.accepted, report.completed, report.lost) == (180, 180, 0)
    assert report.duplicate_results == 0
    assert report.duplicate_executions > 0  # what the lost workers held ran again


async def test_an_agent_stopped_past_the_bound_stops_its_workers_when_it_continues(
    tmp_path: Path, ledger: Ledger
) -> None:
    async with Fleet.running(tmp_path) as fleet:
        for _ in range(160):
            await ledger.spawn(fl.spread, 1.0)
        await poll(_at_least(fleet, "spread", 6), timeout_s=30)
        paused = fleet.agents["a2"]
        paused.signal(signal.SIGSTOP)
        await poll(lambda: _node_gone(fleet, "a2"), timeout_s=20, every_s=0.02)
        await poll(_ready_elsewhere(fleet, "spread", 6, "a2"), timeout_s=20)
        paused.signal(signal.SIGCONT)
        await poll(_says(paused, "this node was lost"), timeout_s=20)
        report = await ledger.settle(fleet.session)
        await poll(_says(paused, "worker exited"), timeout_s=40)
    record("SIGSTOP of an agent, SIGCONT", report)
    assert (report.accepted, report.completed, report.lost) == (160, 160, 0)
    assert report.duplicate_results == 0


def _at_least(fleet: Fleet, fn: str, count: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return sum(w.state == "ready" for w in fleet.workers(fn)) >= count

    return check


def _ready_elsewhere(fleet: Fleet, fn: str, count: int, not_on: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        ready = [w for w in fleet.workers(fn) if w.state == "ready" and w.host != not_on]
        return len(ready) >= count

    return check


async def _node_gone(fleet: Fleet, name: str) -> bool:
    return all(report.node != name for report in fleet.provider.nodes())


def _reason_says(fleet: Fleet, function: str, text: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        rows = await read_statuses(fleet.session.broker)
        return any(row.function == function and text in row.reason for row in rows)

    return check


def _says(agent, text: str):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return text in agent.output()

    return check


async def test_a_new_control_plane_adopts_the_running_workers(
    tmp_path: Path, ledger: Ledger
) -> None:
    """The control plane goes (its agents and workers stay); the next one finds the
    workers in the agents' reports and starts no duplicates."""
    async with Fleet.running(tmp_path) as fleet:
        for _ in range(60):
            await ledger.spawn(fl.spread, 0.3)
        await poll(_at_least(fleet, "spread", 6), timeout_s=30)
        before = {w.worker_id for w in fleet.workers("spread")}
        async with fleet.restarted_control_plane():
            await anyio.sleep(2.0)  # twenty ticks of the new scaler
            after = {w.worker_id for w in fleet.workers("spread")}
            for _ in range(30):
                await ledger.spawn(fl.spread, 0.3)
            report = await ledger.settle(fleet.session)
            assert {w.worker_id for w in fleet.workers("spread")} <= before
        await _orders_of_a_deposed_leader_are_refused(fleet)
    assert after == before
    assert (report.accepted, report.completed, report.lost) == (90, 90, 0)


async def _orders_of_a_deposed_leader_are_refused(fleet: Fleet) -> None:
    """An agent that saw lease revision 100 refuses an order sent under 50 (a leader that
    lost the lease and did not know yet)."""
    broker = fleet.session.broker
    spec = await fleet.session.registry.get("fleet", "spread")

    async def order(message: StartOrder | StopOrder) -> AgentAnswer:
        answer = await broker.request(agent_subject("a1"), msgspec.msgpack.encode(message),
                                      timeout_s=15)  # fmt: skip
        return msgspec.msgpack.decode(answer, type=AgentAnswer)

    started = await order(StartOrder(spec, Reservation(), 100))
    assert started.worker is not None, started.error
    refused = await order(StopOrder(started.worker.worker_id, 50))
    assert "no longer leads" in refused.error
    assert (await order(StopOrder(started.worker.worker_id, 100))).error == ""
