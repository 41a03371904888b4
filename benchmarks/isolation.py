"""Isolation's cost: zero to first result and a warm echo, workers isolated and not.

Ours: the stack with each function's workers isolated (`LocalProvider(isolate=True)`,
what `autan up` and `autan serve` run where bubblewrap works): a sandbox per function,
an unprivileged user, no view of the data dir, an empty network reached through the
provider's gate. Floor: the same stack with workers forked as the stack's user
(`--unisolated`). Each round runs a fleet of each kind in turn (rotating which goes
first): `cold` calls of `demo.echo` from zero workers, each one after its workers are
stopped (the function's sandbox is up already, as it is from its deploy on), then
`calls` sequential warm calls `await echo.remote.aio(b"16 bytes")`, as a user writes them.

Goals: isolation adds at most 10 ms to the p50 zero-to-first-result, and at most 0.1 ms
to the p50 warm call.

    python -m benchmarks.isolation [--quick] [--rounds R] [--cold C] [--calls N]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
import sys
import time
from typing import Any

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import Fleet, running_fleet
from benchmarks.kit.harness import Stack, running_stack
from benchmarks.kit.report import Goal, print_goal, print_table, summarize, write_json
from functions.echo import echo
from runtime.client import Session
from runtime.control import isolation_unavailable

__all__ = ["main"]

NAME = "isolation"
PAYLOAD = b"0123456789abcdef"
GOAL_COLD_MS = 10.0
GOAL_WARM_MS = 0.1
MODES = {"isolated": True, "unisolated": False}


async def _one_fleet(stack: Stack, isolate: bool, args: argparse.Namespace) -> dict[str, Any]:
    """One fleet's round: cold calls from zero, then warm calls."""
    async with running_fleet(stack, isolate=isolate) as fleet:
        session = await Session.open(stack.settings, name="bench-client")
        try:
            await _cold(fleet, session)  # the sandbox up, the artifact cached: not measured
            cold = [(await _cold(fleet, session)) for _ in range(args.cold)]
            await echo.remote.aio(PAYLOAD)  # a worker again; its first call not measured
            for _ in range(50):
                await echo.remote.aio(PAYLOAD)
            warm = []
            for _ in range(args.calls):
                started = time.perf_counter_ns()
                value = await echo.remote.aio(PAYLOAD)
                warm.append(time.perf_counter_ns() - started)
                if value != PAYLOAD:
                    raise RuntimeError(f"echo returned {value!r}")
            isolated = [w.isolated for w in fleet.provider.workers("demo.echo")]
            if isolated != [isolate]:
                raise RuntimeError(f"expected one worker, isolated={isolate}: {isolated}")
            await fleet.to_zero()
        finally:
            await session.close()
    return {"cold_ms": cold, "warm_ns": warm}


async def _cold(fleet: Fleet, session: Session) -> float:
    await fleet.to_zero()
    return (await fleet.cold_call(session, "demo.echo", PAYLOAD)).total_ms


async def measure(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    if why := isolation_unavailable():
        sys.exit(f"{NAME}: workers cannot be isolated here: {why}")
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    names = list(MODES)
    async with running_stack() as stack:
        for index in range(args.rounds):
            shift = index % len(names)
            for mode in names[shift:] + names[:shift]:
                results[mode].append(await _one_fleet(stack, MODES[mode], args))
            print(f"  round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return results


def report(args: argparse.Namespace, samples: dict[str, list[dict[str, Any]]]) -> None:
    cold = {m: statistics.median(c for r in samples[m] for c in r["cold_ms"]) for m in MODES}
    warm = {m: statistics.median(summarize(r["warm_ns"]).p50_ms for r in samples[m]) for m in MODES}
    warm_p99 = {
        m: statistics.median(summarize(r["warm_ns"]).p99_ms for r in samples[m]) for m in MODES
    }
    print_table(
        f"{NAME}: {args.rounds} rounds; cold: {args.cold} per round (median of all), "
        f"warm: {args.calls} per round (median of round p50s), ms",
        ["side", "zero to result p50", "warm echo p50", "warm echo p99"],
        [
            [
                f"{'ours ' if MODES[m] else 'floor'} {m}",
                f"{cold[m]:.2f}",
                f"{warm[m]:.3f}",
                f"{warm_p99[m]:.3f}",
            ]
            for m in MODES
        ],
    )
    added_cold = cold["isolated"] - cold["unisolated"]
    added_warm = warm["isolated"] - warm["unisolated"]
    print(f"ratios isolated/unisolated: cold {cold['isolated'] / cold['unisolated']:.2f}, "
          f"warm {warm['isolated'] / warm['unisolated']:.2f}")  # fmt: skip
    goals = [
        Goal(f"isolation adds <= {GOAL_COLD_MS} ms to zero-to-result (p50)", added_cold,
             added_cold <= GOAL_COLD_MS),
        Goal(f"isolation adds <= {GOAL_WARM_MS} ms to a warm call (p50)", added_warm,
             added_warm <= GOAL_WARM_MS),
    ]  # fmt: skip
    for goal in goals:
        print_goal(goal)
    write_json(NAME, {"config": vars(args), "cold_p50_ms": cold, "warm_p50_ms": warm,
                      "samples": samples, "goals": goals})  # fmt: skip


def main() -> None:
    sizes = [
        Size("rounds", "rounds (each side once per round)", 2, 5),
        Size("cold", "calls from zero per round and side", 3, 8),
        Size("calls", "warm calls per round and side", 300, 2000),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
