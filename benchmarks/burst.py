"""Burst: 2,000 calls of 10 ms to a function at zero, scaled 0 -> 4 -> 0, beside one warm worker.

Ours: `bench.work` (sleeps 10 ms; Scaling(max_workers=4, target_backlog=16, keep_warm_s=2))
with no worker. Every call is published at once by `work.map.aio(range(N), window=N)`; the
scaler (in this process, as `autan up` runs it) starts workers from the fork server as the
backlog asks; the clock stops at the last result (drained), and the run ends when the scaler
has let every worker go after the keep-warm (back to zero). Every 50 ms a sampler records the
backlog (consumer pending + unacked) and the workers (starting, ready). Every result is
checked: N answers, each input's own, none lost, none failed.

Floor: the same N calls to `bench.work_one`, the same job held to one worker, started before
the clock (a first call, not timed, makes the scaler start it; it stays warm). Sides rotate
each round. Prints both durations, the speed-up, a timeline (one line per 0.5 s) and writes a
plot of the last scaled round to benchmarks/out/burst.png.

    python -m benchmarks.burst [--quick] [--calls N] [--rounds R]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
import time
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from benchmarks.kit.apps import work, work_one
from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import Fleet, running_fleet
from benchmarks.kit.harness import running_stack
from benchmarks.kit.plot import plot_timeline
from benchmarks.kit.report import OUT_DIR, Goal, print_goal, print_table, write_json
from benchmarks.kit.rounds import alternate
from broker import Broker
from runtime import Function, RemoteError
from runtime.client import Session
from runtime.control import ProvidedWorker

__all__ = ["main"]

NAME = "burst"
SCALED, ONE = "bench.work", "bench.work_one"
MAX_WORKERS = work.options.scaling.max_workers
SAMPLE_S = 0.05
LINE_S = 0.5
DRAIN_TIMEOUT_S = 300.0
ZERO_TIMEOUT_S = 60.0
WARMUP_CALLS = 64


@dataclass(frozen=True)
class Sample:
    t_s: float
    backlog: int
    starting: int
    ready: int

    @property
    def workers(self) -> int:
        return self.starting + self.ready


@dataclass(frozen=True)
class Drained:
    """What came back from N calls: the results in order, or the error that stopped them."""

    calls: int
    results: list[int]
    seconds: float
    error: str = ""

    @property
    def correct(self) -> int:
        return sum(1 for i, r in enumerate(self.results) if r == i)

    @property
    def lost(self) -> int:
        return self.calls - len(self.results)

    @property
    def ok(self) -> bool:
        return not self.error and self.correct == self.calls == len(set(self.results))


@dataclass(frozen=True)
class ScaledRun:
    drained: Drained
    zero_s: float  # from the first publish to the last worker's exit
    samples: list[Sample]
    spawned_s: list[float] = field(default_factory=list)  # each worker: its fork returned
    ready_s: list[float] = field(default_factory=list)  # each worker: announced ready

    @property
    def peak(self) -> int:
        return max((s.workers for s in self.samples), default=0)


async def drain(fn: Function[[int], int], calls: int) -> Drained:
    """Publish `calls` calls at once (window = calls) and collect every result in order."""
    results: list[int] = []
    error = ""
    started = time.monotonic()
    try:
        with anyio.fail_after(DRAIN_TIMEOUT_S):
            async with aclosing(fn.map.aio(range(calls), window=calls)) as answers:
                async for value in answers:
                    results.append(value)
    except (RemoteError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return Drained(calls, results, time.monotonic() - started, error)


class Sampler:
    """Backlog and workers of one function every `SAMPLE_S`, and every worker it saw."""

    def __init__(self, broker: Broker, fleet: Fleet, qualname: str, t0: float) -> None:
        self.broker, self.fleet, self.qualname, self.t0 = broker, fleet, qualname, t0
        self.samples: list[Sample] = []
        self.seen: dict[str, ProvidedWorker] = {}

    async def run(self, stop: anyio.Event) -> None:
        tick = 0
        while not stop.is_set():
            now = await self.sample()
            tick += 1
            with anyio.move_on_after(max(0.0, tick * SAMPLE_S - now)):
                await stop.wait()

    async def sample(self) -> float:
        """Record one sample; returns its time (seconds since t0)."""
        backlog = await self.fleet.backlog(self.qualname, self.broker)
        workers = self.fleet.workers(self.qualname)
        self.seen.update({w.worker_id: w for w in workers})
        ready = sum(1 for w in workers if w.state == "ready")
        now = time.time() - self.t0
        self.samples.append(Sample(now, backlog, len(workers) - ready, ready))
        return now

    def since_t0(self, moments: list[float | None]) -> list[float]:
        return sorted(round(m - self.t0, 3) for m in moments if m is not None)


async def run_scaled(fleet: Fleet, broker: Broker, calls: int) -> ScaledRun:
    await fleet.to_zero(SCALED)
    stop = anyio.Event()
    sampler = Sampler(broker, fleet, SCALED, time.time())
    async with anyio.create_task_group() as group:
        group.start_soon(sampler.run, stop)
        drained = await drain(work, calls)
        await fleet.provider.wait_until(
            lambda ws: not any(w.function == SCALED for w in ws), ZERO_TIMEOUT_S
        )
        zero_s = time.time() - sampler.t0
        stop.set()
    await sampler.sample()  # the end: no worker left
    workers = list(sampler.seen.values())
    return ScaledRun(
        drained,
        zero_s,
        sampler.samples,
        sampler.since_t0([w.started_unix_s for w in workers]),
        sampler.since_t0([w.ready_unix_s or None for w in workers]),
    )


async def run_one(fleet: Fleet, calls: int) -> Drained:
    """The floor: one worker, warm before the clock starts; stopped after the round."""
    await fleet.to_zero(ONE)
    await work_one.remote.aio(-1)
    await fleet.provider.wait_until(
        lambda ws: any(w.function == ONE and w.state == "ready" for w in ws), ZERO_TIMEOUT_S
    )
    try:
        return await drain(work_one, calls)
    finally:
        await fleet.to_zero(ONE)


async def measure(args: argparse.Namespace) -> dict[str, list[Any]]:
    async with running_stack() as stack, running_fleet(stack) as fleet:
        session = await Session.open(stack.settings, name="bench-sampler")
        try:
            sides = {
                "scaled": lambda: run_scaled(fleet, session.broker, args.calls),
                "one": lambda: run_one(fleet, args.calls),
            }
            await run_scaled(fleet, session.broker, WARMUP_CALLS)  # warm-up, not counted
            await run_one(fleet, WARMUP_CALLS)
            results: dict[str, list[Any]] = await alternate(sides, args.rounds)
            return results
        finally:
            await session.close()


def print_timeline(run: ScaledRun) -> None:
    print(f"\ntimeline of the last scaled round (one line per {LINE_S:g} s)")
    print("     t s  backlog  workers (ready)")
    mark = 0.0
    for sample in run.samples:
        if sample.t_s + SAMPLE_S / 2 >= mark:
            print(f"  {sample.t_s:6.2f}  {sample.backlog:7d}  {sample.workers:7d} ({sample.ready})")
            mark += LINE_S
    last = run.samples[-1]
    print(f"  {last.t_s:6.2f}  {last.backlog:7d}  {last.workers:7d} ({last.ready})  (end)")


def _drained_row(label: str, runs: list[Drained]) -> list[str]:
    seconds = statistics.median(r.seconds for r in runs)
    return [
        label,
        str(runs[0].calls),
        f"{seconds:.2f}",
        f"{runs[0].calls / seconds:.0f}",
        str(min(r.correct for r in runs)),
        str(max(r.lost for r in runs)),
    ]


def _goals(scaled: list[ScaledRun], one: list[Drained]) -> list[Goal]:
    every = [run.drained for run in scaled] + one
    complete = all(d.ok for d in every)
    peak = max(run.peak for run in scaled)
    calls = every[0].calls
    return [
        Goal(
            f"all {calls} calls answered, each once, none lost or failed",
            float(complete),
            complete,
            {"errors": [d.error for d in every if d.error]},
        ),
        Goal(f"peak workers == max_workers ({MAX_WORKERS})", peak, peak == MAX_WORKERS),
    ]


def report(args: argparse.Namespace, measured: dict[str, list[Any]]) -> None:
    scaled: list[ScaledRun] = measured["scaled"]
    one: list[Drained] = measured["one"]
    ours_s = statistics.median(r.drained.seconds for r in scaled)
    floor_s = statistics.median(r.seconds for r in one)
    print_table(
        f"{NAME}: {args.calls} calls x 10 ms, all published at once, "
        f"{args.rounds} round(s) (medians)",
        ["path", "calls", "drain s", "calls/s", "correct", "lost"],
        [
            _drained_row(
                f"ours   {SCALED} from zero (0 -> {MAX_WORKERS} -> 0)", [r.drained for r in scaled]
            ),
            _drained_row(f"floor  {ONE}, one warm worker", one),
        ],
    )
    last = scaled[-1]
    print(
        f"speed-up ours/floor: {floor_s / ours_s:.2f}x (floor {floor_s:.2f} s, ours {ours_s:.2f} s)"
    )
    print(
        f"peak workers {max(r.peak for r in scaled)}; last round: workers forked at "
        f"{last.spawned_s} s, ready at {last.ready_s} s; back to zero at "
        f"{statistics.median(r.zero_s for r in scaled):.2f} s "
        f"({statistics.median(r.zero_s - r.drained.seconds for r in scaled):.2f} s after the "
        f"last result; keep_warm_s={work.options.scaling.keep_warm_s:g})"
    )
    goals = _goals(scaled, one)
    for goal in goals:
        print_goal(goal)
    print_timeline(last)
    png = plot_timeline(
        [(s.t_s, s.backlog, s.workers, s.ready) for s in last.samples],
        OUT_DIR / f"{NAME}.png",
        title=f"{args.calls} x 10 ms calls to {SCALED} from zero "
        f"(max_workers={MAX_WORKERS}, target_backlog={work.options.scaling.target_backlog}, "
        f"keep_warm_s={work.options.scaling.keep_warm_s:g})",
        marks={"drained": last.drained.seconds, "back to zero": last.zero_s},
    )
    write_json(
        NAME,
        {
            "config": vars(args),
            "ours_drain_s": ours_s,
            "floor_drain_s": floor_s,
            "speed_up": floor_s / ours_s,
            "goals": goals,
            "scaled_rounds": [_scaled_json(r) for r in scaled],
            "floor_rounds": [
                {"seconds": d.seconds, "correct": d.correct, "lost": d.lost, "error": d.error}
                for d in one
            ],
        },
    )
    print(f"written: {png}")


def _scaled_json(run: ScaledRun) -> dict[str, Any]:
    return {
        "drain_s": run.drained.seconds,
        "zero_s": run.zero_s,
        "correct": run.drained.correct,
        "lost": run.drained.lost,
        "error": run.drained.error,
        "peak_workers": run.peak,
        "spawned_s": run.spawned_s,
        "ready_s": run.ready_s,
        "timeline": [asdict(s) for s in run.samples],
    }


def main() -> None:
    sizes = [
        Size("calls", "calls per side and round", 400, 2000),
        Size("rounds", "rounds (sides alternate within each)", 1, 2),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
