"""Zero to first result: a call to a function with no worker, beside a fresh model process.

Ours: `session.call_result(app, fn, ...)` (what `.remote()` does, with the result's metadata)
to a function that has no worker. The scaler (in this process, as `autan up` runs it) hears the
call, the local provider forks a worker from its fork server, the worker fetches and verifies
the artifact, builds its ONNX Runtime sessions, pulls the call and answers. The clock runs from
just before the publish to the result in hand. Functions: `demo.echo` (no model), `bench.tiny`
(a 64 -> 64 -> 64 MLP, `benchmarks/apps.py`) and `demo.embed` (MiniLM int8 and its tokenizer).
After each call every worker is stopped (`provider.stop_all()`, exits awaited) and the scaler
is back to watching for the next first call. The warm-up round builds each function's
template (`runtime.worker.templates`: loaded, sessions built, setup run) at its first call;
the measured rounds fork from it, as a host that has served the version before does
(`--no-templates`: AUTAN_TEMPLATES=off, each worker loads the function itself).

Floor: a fresh `python -c` process (ORT_DISABLE_TELEMETRY=1) that imports onnxruntime and
numpy, builds an InferenceSession of the same model file with the intra-op threads a first
worker gets, runs it once and prints a line. Its clock runs from just before the process is
started to that line (the exit, reported beside it, comes a little later). `bench.tiny`'s MLP
is the floor of echo and tiny, the MiniLM file the floor of embed. Sides rotate each round.

Goals: p50 at most 20 ms for echo, 30 ms for tiny, 60 ms for embed; and at most 0.5 of the
floor's p50 for echo and tiny.

    python -m benchmarks.cold_start [--quick] [--rounds R] [--no-templates]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import functools
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.kit.apps import FEATURES, TINY_MODEL
from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import ColdCall, Fleet, running_fleet
from benchmarks.kit.harness import ROOT, child_env, running_stack
from benchmarks.kit.report import Goal, print_goal, print_table, summarize_ms, write_json
from benchmarks.kit.rounds import alternate
from functions.embed import embed
from runtime.client import Session

__all__ = ["main"]

NAME = "cold_start"
GOAL_RATIO = 0.5
EMBED_MODEL = Path(embed.options.models["encoder"].path)
PHASES = (
    "fork", "boot", "init", "connect", "registry", "verify", "fetch", "unpickle",
    "sessions", "setup", "subscribe", "ready", "first_run",
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """One function measured from zero, the floor it is held to, and whether a goal applies."""

    qualname: str
    argument: Any
    floor: str
    goal: bool  # the ratio goal applies
    goal_ms: float  # p50 zero to first result


TARGETS = {
    "echo": Target("demo.echo", b"0123456789abcdef", "floor_tiny", goal=True, goal_ms=20),
    "tiny": Target("bench.tiny", [0.5] * FEATURES, "floor_tiny", goal=True, goal_ms=30),
    "embed": Target(
        "demo.embed",
        "A man is playing a guitar on the stage.",
        "floor_embed",
        goal=False,
        goal_ms=60,
    ),
}
FLOORS = {"floor_tiny": TINY_MODEL, "floor_embed": EMBED_MODEL}

# The floor process: dynamic dimensions become 1 (the batch) and 8 (sequence length).
FLOOR_SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = int(sys.argv[2])
options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
types = {"tensor(float)": np.float32, "tensor(int64)": np.int64}
feeds = {
    i.name: np.ones([d if isinstance(d, int) else (8 if n else 1) for n, d in enumerate(i.shape)],
                    dtype=types[i.type])
    for i in session.get_inputs()
}
session.run(None, feeds)
print("done", flush=True)
"""


@dataclass(frozen=True)
class FloorRun:
    """One fresh process: start -> the line it prints after the run, and -> its exit."""

    total_ms: float
    exit_ms: float


async def run_floor(model: Path, threads: int) -> FloorRun:
    started = time.perf_counter_ns()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOR_SCRIPT, str(model), str(threads), cwd=ROOT, env=child_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await process.stdout.readline()
    done = time.perf_counter_ns()
    code = await process.wait()
    exited = time.perf_counter_ns()
    if line.strip() != b"done" or code != 0:
        raise RuntimeError(f"the floor process failed on {model} (said {line!r}, code {code})")
    return FloorRun((done - started) / 1e6, (exited - started) / 1e6)


async def run_ours(fleet: Fleet, session: Session, target: Target) -> ColdCall:
    """One call from zero; then back to zero, so that the next side runs on a quiet host."""
    try:
        cold = await fleet.cold_call(session, target.qualname, target.argument)
    finally:
        await fleet.to_zero()
    if target.qualname == "demo.echo" and cold.value != target.argument:
        raise RuntimeError(f"echo returned {cold.value!r}")
    return cold


def _sides(fleet: Fleet, session: Session) -> dict[str, Callable[[], Awaitable[Any]]]:
    threads = os.cpu_count() or 1  # what the provider gives the first worker on this host
    sides: dict[str, Callable[[], Awaitable[Any]]] = {}
    for name, target in TARGETS.items():
        sides[name] = functools.partial(run_ours, fleet, session, target)
    for name, model in FLOORS.items():
        sides[name] = functools.partial(run_floor, model, threads)
    return sides


async def measure(args: argparse.Namespace) -> dict[str, list[Any]]:
    templates = not args.no_templates
    async with running_stack() as stack, running_fleet(stack, templates=templates) as fleet:
        session = await Session.open(stack.settings, name="bench-client")
        try:
            await fleet.to_zero()
            sides = _sides(fleet, session)
            for side in sides.values():  # warm-up: caches, the model disk cache, the registry
                await side()
            return await alternate(sides, args.rounds)
        finally:
            await session.close()


def _median_phases(colds: list[ColdCall]) -> dict[str, float]:
    names = [p for p in PHASES if any(p in c.phases_ms for c in colds)]
    return {p: statistics.median(c.phases_ms.get(p, 0.0) for c in colds) for p in names}


def _results(samples: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for name, target in TARGETS.items():
        colds: list[ColdCall] = samples[name]
        floors: list[FloorRun] = samples[target.floor]
        ours, floor = (
            summarize_ms([c.total_ms for c in colds]),
            summarize_ms([f.total_ms for f in floors]),
        )
        results[name] = {
            "function": target.qualname,
            "ours": ours,
            "floor": floor,
            "floor_exit": summarize_ms([f.exit_ms for f in floors]),
            "ratio_p50": ours.p50_ms / floor.p50_ms,
            "reaction": summarize_ms([c.reaction_ms for c in colds]),
            "phases_ms": _median_phases(colds),
            "samples_ms": [round(c.total_ms, 3) for c in colds],
            "per_round_phases_ms": [c.phases_ms for c in colds],
        }
    return results


def _print_results(results: dict[str, dict[str, Any]], rounds: int) -> None:
    rows = [
        [
            f"{r['function']:<11} vs {TARGETS[name].floor}",
            f"{r['ours'].p50_ms:.1f}",
            f"{r['ours'].p99_ms:.1f}",
            f"{r['floor'].p50_ms:.1f}",
            f"{r['floor_exit'].p50_ms:.1f}",
            f"{r['ratio_p50']:.2f}",
            f"{r['reaction'].p50_ms:.1f}",
        ]
        for name, r in results.items()
    ]
    print_table(
        f"{NAME}: zero to first result, {rounds} rounds (p50/p99 over rounds, ms)",
        [
            "function vs floor",
            "ours p50",
            "ours p99",
            "floor p50",
            "floor exit",
            "ratio",
            "reaction p50",
        ],
        rows,
    )
    names = list(results)
    phase_names = [p for p in PHASES if any(p in results[n]["phases_ms"] for n in names)]
    print_table(
        "worker cold-start phases (medians of rounds, ms; 'ready' is spawn to ready)",
        ["phase", *names],
        [[p, *(f"{results[n]['phases_ms'].get(p, 0.0):.1f}" for n in names)] for p in phase_names],
    )


def _goals(results: dict[str, dict[str, Any]]) -> list[Goal]:
    ratios = [
        Goal(
            f"{r['function']}: p50 zero-to-result / fresh-process floor <= {GOAL_RATIO}",
            r["ratio_p50"],
            r["ratio_p50"] <= GOAL_RATIO,
        )
        for name, r in results.items()
        if TARGETS[name].goal
    ]
    absolute = [
        Goal(
            f"{r['function']}: p50 zero-to-result <= {TARGETS[name].goal_ms:g} ms",
            r["ours"].p50_ms,
            r["ours"].p50_ms <= TARGETS[name].goal_ms,
        )
        for name, r in results.items()
    ]
    return absolute + ratios


def report(args: argparse.Namespace, samples: dict[str, list[Any]]) -> None:
    results = _results(samples)
    _print_results(results, args.rounds)
    print("floor: fresh `python -c` to the line printed after session.run ('floor exit': to exit)")
    goals = _goals(results)
    for goal in goals:
        print_goal(goal)
    print(f"(embed: ratio {results['embed']['ratio_p50']:.2f}, reported)")
    for _name, r in results.items():
        hits = sum(1 for phases in r["per_round_phases_ms"] if "sessions" not in phases
                   and "template" not in phases and "unpickle" not in phases)  # fmt: skip
        print(f"{r['function']}: forked from a ready template in {hits} of "
              f"{len(r['per_round_phases_ms'])} rounds")  # fmt: skip
    write_json(
        NAME,
        {
            "config": vars(args),
            "floor_threads": os.cpu_count(),
            "results": results,
            "floor_samples_ms": {k: [round(f.total_ms, 3) for f in samples[k]] for k in FLOORS},
            "goals": goals,
        },
    )


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-templates", action="store_true",
                        help="AUTAN_TEMPLATES=off: each worker loads its function")  # fmt: skip


def main() -> None:
    sizes = [Size("rounds", "rounds (each side once per round)", 3, 15)]
    run_benchmark(__doc__, measure, report, sizes=sizes, extra=_flags)


if __name__ == "__main__":
    main()
