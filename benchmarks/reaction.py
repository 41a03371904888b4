"""Reaction: from the first call published to a function with no worker to its worker process.

The scaler runs in this process (as `autan up` runs it) with the local provider and its fork
server. Each round: every worker stopped and the scaler watching at zero, then
`session.call_result(...)` to the function; the clock starts just before the publish
(`time.time()`) and stops when the provider's fork returned the worker's pid
(`ProvidedWorker.started_unix_s`, the same clock in this process). The worker's own `fork` phase
(provider asks -> the child runs) says how much of it is the fork; the rest is the scaler
hearing the call, reading the backlog and deciding. The scaler's 0.1 s tick is no floor: a
call to a function at zero wakes it at once. Goal: p50 under 100 ms.

    python -m benchmarks.reaction [--quick] [--rounds R] [--function APP.FN]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import statistics
from typing import Any

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import ColdCall, running_fleet
from benchmarks.kit.harness import running_stack
from benchmarks.kit.report import Goal, print_goal, print_table, summarize_ms, write_json
from benchmarks.kit.rounds import alternate
from runtime.client import Session

__all__ = ["main"]

NAME = "reaction"
GOAL_P50_MS = 100.0
ARGUMENTS: dict[str, Any] = {"demo.echo": b"0123456789abcdef"}  # others take 1


async def measure(args: argparse.Namespace) -> list[ColdCall]:
    args.rounds = max(10, args.rounds)
    argument = ARGUMENTS.get(args.function, 1)
    colds: list[ColdCall] = []
    async with running_stack() as stack, running_fleet(stack) as fleet:
        session = await Session.open(stack.settings, name="bench-client")
        try:
            await fleet.to_zero()
            await fleet.cold_call(session, args.function, argument)  # warm-up, not counted

            async def from_zero() -> ColdCall:
                await fleet.to_zero()
                return await fleet.cold_call(session, args.function, argument)

            colds = (await alternate({"ours": from_zero}, args.rounds))["ours"]
            await fleet.to_zero()
        finally:
            await session.close()
    return colds


def report(args: argparse.Namespace, colds: list[ColdCall]) -> None:
    reaction = summarize_ms([c.reaction_ms for c in colds])
    fork = summarize_ms([c.phases_ms.get("fork", 0.0) for c in colds])
    detect = summarize_ms([c.reaction_ms - c.phases_ms.get("fork", 0.0) for c in colds])
    total = summarize_ms([c.total_ms for c in colds])
    fork_share = statistics.median(c.phases_ms.get("fork", 0.0) / c.reaction_ms for c in colds)
    rows = [
        [label, f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.mean_ms:.2f}"]
        for label, s in (
            ("reaction: call published -> worker pid", reaction),
            ("  of which fork (provider asks -> child runs)", fork),
            ("  of which the rest (hear, read backlog, decide)", detect),
            ("zero to first result (context)", total),
        )
    ]
    print_table(
        f"{NAME}: {args.function} from zero, {args.rounds} rounds (ms)",
        ["", "p50", "p99", "mean"],
        rows,
    )
    print(f"share of the reaction spent in fork (median of rounds): {fork_share:.0%}")
    goal = Goal(
        f"reaction p50 < {GOAL_P50_MS:g} ms", reaction.p50_ms, reaction.p50_ms < GOAL_P50_MS
    )
    print_goal(goal)
    write_json(
        NAME,
        {
            "config": vars(args),
            "reaction": reaction,
            "fork": fork,
            "rest": detect,
            "zero_to_result": total,
            "fork_share_median": fork_share,
            "samples": [
                {
                    "reaction_ms": round(c.reaction_ms, 3),
                    "total_ms": round(c.total_ms, 3),
                    "phases_ms": c.phases_ms,
                }
                for c in colds
            ],
            "goal": goal,
        },
    )


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--function", default="demo.echo", help="APP.FN to call (demo.echo)")

    sizes = [Size("rounds", "calls from zero (at least 10)", 10, 40)]
    run_benchmark(__doc__, measure, report, sizes=sizes, extra=extra)


if __name__ == "__main__":
    main()
