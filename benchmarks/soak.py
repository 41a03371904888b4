"""Soak: N concurrent clients for T minutes through the scaler, then the ledger.

Each client spawns `bench.work` (10 ms) and waits for its result, again and again;
a third of the calls go to `demo.echo` instead. Every few seconds: the backlog,
the workers, and the resident memory of the nats-server and of each worker.
At the end every accepted call must have one result: lost and duplicates are 0.

    python -m benchmarks.soak [--clients 50] [--minutes 10] [--quick]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import Fleet, running_fleet
from benchmarks.kit.harness import Stack, running_stack
from benchmarks.kit.report import Goal, print_goal, print_table, write_json
from broker import BrokerUnavailable, QueueFull
from runtime import RemoteError
from runtime.client import Session
from runtime.ops import DeadLetters

SAMPLE_EVERY_S = 5.0


@dataclass
class Tally:
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    answered: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


async def _client(session: Session, tally: Tally, index: int, deadline: float) -> None:
    calls = 0
    while time.monotonic() < deadline:
        app, fn, arg = ("demo", "echo", index) if calls % 3 == 2 else ("bench", "work", index)
        calls += 1
        started = time.perf_counter()
        try:
            call_id = await session.spawn(app, fn, (arg,), {})
        except (BrokerUnavailable, QueueFull):
            tally.refused += 1
            continue
        tally.accepted.append(call_id)
        try:
            await session.result(call_id, 120)
            tally.answered += 1
        except RemoteError:
            tally.failed += 1
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def _sampler(stack: Stack, fleet: Fleet, tally: Tally, started: float) -> None:
    assert stack.server.process is not None
    while True:
        workers = fleet.workers("bench.work") + fleet.workers("demo.echo")
        tally.samples.append({
            "t_s": round(time.monotonic() - started, 1),
            "answered": tally.answered,
            "backlog": await fleet.backlog("bench.work"),
            "workers": len(workers),
            "nats_rss_mb": round(_rss_mb(stack.server.process.pid), 1),
            "worker_rss_mb": [round(_rss_mb(w.pid), 1) for w in workers],
        })  # fmt: skip
        await anyio.sleep(SAMPLE_EVERY_S)


async def _ledger(session: Session, tally: Tally) -> dict[str, int]:
    completed, failed = 0, set()
    for call_id in tally.accepted:
        try:
            await session.result(call_id, 60)
            completed += 1
        except RemoteError:
            failed.add(call_id)
        except TimeoutError:
            pass
    letters = {item.letter.call_id for item in await DeadLetters(session.broker).list()}
    dead = len(failed & letters)
    return {
        "accepted": len(tally.accepted),
        "refused": tally.refused,
        "completed": completed,
        "dead_lettered": dead,
        "lost": len(tally.accepted) - completed - dead,
        "duplicate_results": len((set(tally.accepted) - failed) & letters),
    }


async def _run(args: argparse.Namespace) -> tuple[Tally, dict[str, int], float]:
    async with running_stack() as stack, running_fleet(stack) as fleet:
        session = await Session.open(stack.settings, name="soak")
        tally = Tally()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_sampler, stack, fleet, tally, started)
                async with anyio.create_task_group() as clients:
                    for index in range(args.clients):
                        clients.start_soon(_client, session, tally, index, deadline)
                elapsed = time.monotonic() - started
                group.cancel_scope.cancel()
            return tally, await _ledger(session, tally), elapsed
        finally:
            await session.close()


def _report(tally: Tally, ledger: dict[str, int], elapsed: float, args: argparse.Namespace) -> None:
    print_table(
        f"soak: {args.clients} clients for {elapsed / 60:.1f} min (bench.work 10 ms, demo.echo)",
        ["accepted", "refused", "completed", "dead-lettered", "lost", "duplicate results",
         "calls/s", "p50 ms", "p99 ms"],
        [[str(ledger["accepted"]), str(ledger["refused"]), str(ledger["completed"]),
          str(ledger["dead_lettered"]), str(ledger["lost"]), str(ledger["duplicate_results"]),
          f"{ledger['accepted'] / elapsed:.0f}", f"{statistics.median(tally.latencies_ms):.1f}",
          f"{statistics.quantiles(tally.latencies_ms, n=100)[98]:.1f}"]],
    )  # fmt: skip
    rows = [
        [f"{s['t_s']:.0f}", str(s["answered"]), str(s["backlog"]), str(s["workers"]),
         f"{s['nats_rss_mb']:.0f}", ",".join(f"{m:.0f}" for m in s["worker_rss_mb"]) or "-"]
        for s in tally.samples[:: max(1, len(tally.samples) // 12)]
    ]  # fmt: skip
    print_table("over time", ["t s", "answered", "backlog", "workers", "nats MB",
                              "worker MB"], rows)  # fmt: skip
    bad = ledger["lost"] + ledger["duplicate_results"]
    goal = Goal("lost == 0 and duplicate results == 0", bad, bad == 0)
    print_goal(goal)
    write_json("soak", {"config": vars(args), "ledger": ledger, "elapsed_s": elapsed,
                               "samples": tally.samples, "goal": goal})  # fmt: skip


def report(args: argparse.Namespace, measured: tuple[Tally, dict[str, int], float]) -> None:
    _report(*measured, args)


def main() -> None:
    sizes = [
        Size("clients", "callers at once", 10, 50),
        Size("minutes", "how long", 1 / 3, 10.0, float),
    ]
    run_benchmark(__doc__, _run, report, sizes=sizes)


if __name__ == "__main__":
    main()
