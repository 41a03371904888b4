"""Embed overhead: a warm `demo.embed` call against `session.run` alone on the same input.

Ours: `await embed.remote.aio(text)`, one call in flight, one worker process started with
`--threads N`. Floor: in this process, the same model file's ONNX Runtime session, built by
`runtime.core.load_models` with the same N intra-op threads, run on exactly the feeds
`embed` builds for that text (`encode_feeds(build_tokenizer(), [text])`). Both sides use
N=1 by default (`--threads 0` gives both ONNX Runtime's default). Rounds alternate the sides.
Goal: under 1 ms added at p50 (ours - floor).

    python -m benchmarks.embed_overhead [--quick] [--calls N] [--rounds R] [--threads N]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.harness import running_stack
from benchmarks.kit.report import (
    Goal,
    Summary,
    median_summary,
    print_goal,
    print_table,
    write_json,
)
from benchmarks.kit.rounds import timed_rounds
from functions.embed import build_tokenizer, embed, encode_feeds, pool
from runtime.core import ModelHandle, load_models

__all__ = ["main"]

NAME = "embed_overhead"
GOAL_ADDED_MS = 1.0
TEXT = "A man is playing a guitar on the stage."
OUTPUT = "last_hidden_state"
Feeds = dict[str, npt.NDArray[np.int64]]


async def time_ours(calls: int) -> list[int]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        await embed.remote.aio(TEXT)
        samples.append(time.perf_counter_ns() - started)
    return samples


class Floor:
    """`session.run` alone, in this process, on the feeds `embed` gives the model for TEXT."""

    def __init__(self, threads: int) -> None:
        path = Path(embed.options.models["encoder"].path)
        self.model: ModelHandle = load_models({"encoder": path}, intra_op_threads=threads)[
            "encoder"
        ]
        self.feeds: Feeds = encode_feeds(build_tokenizer(), [TEXT])
        self.session: Any = self.model.session

    def vector(self) -> npt.NDArray[np.float32]:
        (hidden,) = self.model.run(self.feeds, outputs=[OUTPUT])
        vectors = pool(hidden, self.feeds["attention_mask"])
        vector: npt.NDArray[np.float32] = vectors[0]
        return vector

    async def time_runs(self, calls: int) -> list[int]:
        # Blocking on purpose: nothing else needs this loop while the floor runs.
        samples, run, feeds = [], self.session.run, self.feeds
        for _ in range(calls):
            started = time.perf_counter_ns()
            run([OUTPUT], feeds)
            samples.append(time.perf_counter_ns() - started)
        return samples


async def _check_same_vector(floor: Floor) -> None:
    ours = np.asarray(await embed.remote.aio(TEXT), dtype=np.float32)
    if not np.allclose(ours, floor.vector(), rtol=0, atol=1e-5):
        raise RuntimeError("the worker's vector differs from session.run + pool on the same text")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack() as stack:
        worker = await stack.start_worker("demo.embed", threads=args.threads)
        floor = Floor(args.threads)
        await _check_same_vector(floor)
        timers = {"ours": time_ours, "floor": floor.time_runs}
        rounds = await timed_rounds(
            timers, calls=args.calls, warmup=args.warmup, rounds=args.rounds
        )
        return {
            "tokens": int(floor.feeds["input_ids"].shape[1]),
            "rounds": rounds,
            "worker_cold_start_ms": {"spawn_to_ready": worker.spawn_to_ready_ms}
            | worker.phases_ms(),
        }


def _rows(medians: dict[str, Summary], threads: int) -> list[list[str]]:
    labels = {
        "ours": "ours   await embed.remote.aio(text)",
        "floor": f"floor  session.run, same feeds, {threads or 'default'} thread(s)",
    }
    return [
        [labels[k], f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}"]
        for k, s in medians.items()
    ]


def _print_cold_start(phases: dict[str, float]) -> None:
    shown = "  ".join(f"{k} {v:.1f}" for k, v in phases.items())
    print(f"worker cold start (ms, worker's own phases after spawn_to_ready): {shown}")


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    rounds: dict[str, list[Summary]] = measured["rounds"]
    medians = {k: median_summary(v) for k, v in rounds.items()}
    added_ms = medians["ours"].p50_ms - medians["floor"].p50_ms
    ratio = medians["ours"].p50_ms / medians["floor"].p50_ms
    print_table(
        f"{NAME}: demo.embed, one {measured['tokens']}-token text, one call in flight, "
        f"{args.rounds} rounds x {args.calls} calls (medians of rounds)",
        ["path", "p50 ms", "p99 ms", "mean ms"],
        _rows(medians, args.threads),
    )
    print(f"added at p50: {added_ms:.3f} ms   ratio p50 ours/floor: {ratio:.2f}")
    goal = Goal(f"added p50 < {GOAL_ADDED_MS} ms", added_ms, added_ms < GOAL_ADDED_MS)
    print_goal(goal)
    _print_cold_start(measured["worker_cold_start_ms"])
    per_round = [o.p50_ms - f.p50_ms for o, f in zip(rounds["ours"], rounds["floor"], strict=True)]
    write_json(
        NAME,
        {
            "config": vars(args),
            "text": TEXT,
            "medians": medians,
            "added_p50_ms": added_ms,
            "ratio_p50": ratio,
            "per_round_added_p50_ms": per_round,
            "goal": goal,
            **measured,
        },
    )


def main() -> None:
    sizes = [
        Size("calls", "sequential calls per side and round", 100, 500),
        Size("rounds", "rounds (sides alternate within each)", 3, 5),
        Size("warmup", "calls per side before measuring", 20, 50),
        Size("threads", "intra-op threads, both sides (0: ORT default)", 1, 1),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
