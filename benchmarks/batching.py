"""Dynamic batching: throughput through the runtime against raw session.run, and latency.

1. The MLP (384 -> 1024 -> 384, Batching(max_size=32)) written two ways: `batching.mlp`
   as a user would (a list of rows in, `np.stack`, `list(out)` out) and `batching.mlp_array`
   annotated with arrays (the batch arrives stacked, the output's rows are the results).
   4,096 single-row calls in flight through one worker, against raw `session.run` at batch
   32 in this process, with the same intra-op threads (default: the cores a first worker is
   given here, all of them). Goal: at least 0.8 of the raw rows/s, for each function and
   each way in: `.map()`, which cuts its inputs into packs (one message per pack), and
   4,096 concurrent `.remote()` calls, which the session packs as they come.
2. Low load: sequential single calls of `batching.mlp`, p50. Goal: at most max_delay_ms + 2.
3. `embed` with batching against without (one worker each, texts in flight). Goal: >= 3x.
   Beside it, what batching gains `session.run` itself on this machine: texts/s at batch 32
   against batch 1, tokenizing and pooling included, in this process.

    python -m benchmarks.batching [--quick] [--threads N]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.kit.batching_app import (
    MLP_PATH,
    app,
    embed_batched,
    embed_single,
    mlp,
    mlp_array,
)
from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.harness import Stack, cpu_seconds, running_stack, thread_cpu_seconds
from benchmarks.kit.report import Goal, print_goal, print_table, summarize, write_json
from benchmarks.kit.rounds import alternate
from functions.embed import MODEL as EMBED_MODEL
from functions.embed import build_tokenizer, encode_feeds, pool
from runtime import Model
from runtime.core import load_models, usable_cores

ROWS = 4096
RAW_BATCH = 32
MAX_DELAY_MS = 5.0
TEXTS = [f"sentence number {i} about a guitar played on a stage" for i in range(64)]


async def _through_runtime(rows: list[Any], handle: Any = mlp) -> float:
    started = time.perf_counter()
    results = [r async for r in handle.map.aio(rows, window=len(rows))]
    assert len(results) == len(rows)
    return len(rows) / (time.perf_counter() - started)


async def _through_remote(rows: list[Any], handle: Any = mlp) -> float:
    started = time.perf_counter()
    results = await asyncio.gather(*(handle.remote.aio(row) for row in rows))
    assert len(results) == len(rows)
    return len(rows) / (time.perf_counter() - started)


# The ways in measured beside the floor: (function, way in).
PATHS = {
    "map list": (mlp, _through_runtime),
    "remote list": (mlp, _through_remote),
    "map array": (mlp_array, _through_runtime),
    "remote array": (mlp_array, _through_remote),
}


def _raw(session: Any, rows: np.ndarray[Any, Any]) -> float:
    started = time.perf_counter()
    for start in range(0, len(rows), RAW_BATCH):
        session.run({"x": rows[start : start + RAW_BATCH]})
    return len(rows) / (time.perf_counter() - started)


async def _low_load_ms(row: Any, calls: int) -> list[int]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        await mlp.remote.aio(row)
        samples.append(time.perf_counter_ns() - started)
    return samples


async def _texts_per_s(handle: Any, texts: list[str]) -> float:
    started = time.perf_counter()
    results = [r async for r in handle.map.aio(texts, window=len(texts))]
    assert len(results) == len(texts)
    return len(texts) / (time.perf_counter() - started)


async def _mlp_figures(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    worker = await stack.start_worker("batching.mlp", threads=args.threads)
    await stack.start_worker("batching.mlp_array", threads=args.threads)
    rows_n = ROWS // 4 if args.quick else ROWS
    rows = np.random.default_rng(0).standard_normal((rows_n, 384)).astype(np.float32)
    session = load_models({"mlp": MLP_PATH}, intra_op_threads=args.threads)["mlp"]
    for handle, _ in PATHS.values():  # warm up every side
        await _through_runtime(list(rows[:256]), handle)
    _raw(session, rows)
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        name: functools.partial(way, list(rows), handle) for name, (handle, way) in PATHS.items()
    }
    sides["raw"] = functools.partial(asyncio.to_thread, _raw, session, rows)
    results = await alternate(sides, args.rounds)
    cores = await _cores_busy(
        stack, worker.process.pid, lambda: _through_runtime(list(rows)), rows_n
    )
    latency = summarize(await _low_load_ms(rows[0], 200 if args.quick else 1000))
    return {"rows": rows_n, "rates": {k: float(np.median(v)) for k, v in results.items()},
            "low_load": latency, "cores": cores}  # fmt: skip


async def _cores_busy(
    stack: Stack, worker_pid: int, run: Callable[[], Awaitable[float]], rows_per_run: int
) -> dict[str, float]:
    """Cores each process kept busy during `.map()` rounds for 2 s: where the CPU goes.

    The worker is split into its event loop (the main thread) and its call thread (the
    busiest other one), with the call thread's CPU per batch. /proc counts CPU time in
    ticks of 10 ms: a shorter window would not resolve it.
    """
    assert stack.server.process is not None
    pids = {"worker": worker_pid, "nats-server": stack.server.process.pid, "caller": os.getpid()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    threads_before = thread_cpu_seconds(worker_pid)
    started = time.perf_counter()
    rows = 0
    while time.perf_counter() - started < 2.0:
        await run()
        rows += rows_per_run
    elapsed = time.perf_counter() - started
    cores = {name: (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    threads = {
        tid: (seconds - threads_before.get(tid, 0.0)) / elapsed
        for tid, seconds in thread_cpu_seconds(worker_pid).items()
    }
    cores["worker loop"] = threads.pop(worker_pid, 0.0)
    cores["worker call thread"] = max(threads.values(), default=0.0)
    batches_per_s = rows / elapsed / RAW_BATCH
    cores["call thread ms per batch"] = cores["worker call thread"] / batches_per_s * 1000
    return cores


def _raw_embed(session: Any, tokenizer: Any, texts: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        feeds = encode_feeds(tokenizer, texts[start : start + batch])
        [hidden] = session.run(feeds, outputs=["last_hidden_state"])
        pool(hidden, feeds["attention_mask"])
    return len(texts) / (time.perf_counter() - started)


async def _embed_figures(stack: Stack, args: argparse.Namespace) -> dict[str, float]:
    await stack.start_worker("batching.embed_batched", threads=args.threads)
    await stack.start_worker("batching.embed_single", threads=args.threads)
    texts = TEXTS[:32] if args.quick else TEXTS * 4
    await _texts_per_s(embed_batched, texts[:16])
    await _texts_per_s(embed_single, texts[:16])
    model = Path(Model.file(EMBED_MODEL).path)
    session = load_models({"encoder": model}, intra_op_threads=args.threads)["encoder"]
    tokenizer = build_tokenizer()
    results = await alternate(
        {
            "batched": lambda: _texts_per_s(embed_batched, texts),
            "single": lambda: _texts_per_s(embed_single, texts),
            "raw32": lambda: asyncio.to_thread(_raw_embed, session, tokenizer, texts, 32),
            "raw1": lambda: asyncio.to_thread(_raw_embed, session, tokenizer, texts, 1),
        },
        args.rounds,
    )
    return {k: float(np.median(v)) for k, v in results.items()}


def _report(figures: dict[str, Any], embed: dict[str, float], args: argparse.Namespace) -> None:
    rates = figures["rates"]
    print_table(
        f"batching: {figures['rows']} single-row calls in flight, 1 worker, "
        f"{args.threads} intra-op thread(s), medians of {args.rounds} rounds",
        ["path", "rows/s", "of raw"],
        [
            *[
                [f"ours   {name}: {figures['rows']} calls through "
                 f"{'.map()' if name.startswith('map') else 'concurrent .remote()'}",
                 f"{rates[name]:.0f}", f"{rates[name] / rates['raw']:.2f}"]
                for name in PATHS
            ],
            [f"floor  session.run, batch {RAW_BATCH}, this process", f"{rates['raw']:.0f}", "1"],
        ],
    )  # fmt: skip
    print("list: mlp(ctx, rows: list[...]) -> list (np.stack in it); "
          "array: mlp_array(ctx, rows: NDArray) -> NDArray")  # fmt: skip
    cores = dict(figures["cores"])
    per_batch_ms = cores.pop("call thread ms per batch")
    busy = ", ".join(f"{name} {busy:.2f}" for name, busy in cores.items())
    print(f"cores busy during .map() rounds ({os.cpu_count()} here): {busy}")
    print(
        f"the call thread's CPU per batch of {RAW_BATCH} (the function, session.run included): "
        f"{per_batch_ms:.3f} ms; session.run alone here: {RAW_BATCH / rates['raw'] * 1000:.3f} ms"
    )
    goals = [
        Goal(f"{name} >= 0.8 x raw rows/s", rates[name] / rates["raw"],
             rates[name] / rates["raw"] >= 0.8)
        for name in PATHS
    ]  # fmt: skip
    low = figures["low_load"]
    print(f"low load: p50 {low.p50_ms:.3f} ms, p99 {low.p99_ms:.3f} ms (one call in flight)")
    goals.append(Goal(f"p50 at low load <= {MAX_DELAY_MS + 2:g} ms", low.p50_ms,
                      low.p50_ms <= MAX_DELAY_MS + 2))  # fmt: skip
    speedup = embed["batched"] / embed["single"]
    print_table(
        "embed: texts in flight, one worker each",
        ["path", "texts/s"],
        [["with Batching(max_size=32)", f"{embed['batched']:.1f}"],
         ["without batching", f"{embed['single']:.1f}"],
         ["floor  session.run, batch 32, this process", f"{embed['raw32']:.1f}"],
         ["floor  session.run, batch 1, this process", f"{embed['raw1']:.1f}"]],
    )  # fmt: skip
    print(f"what batching gains session.run itself here: {embed['raw32'] / embed['raw1']:.2f}x")
    goals.append(Goal("embed with batching >= 3x without", speedup, speedup >= 3))
    for goal in goals:
        print_goal(goal)
    write_json("batching", {"mlp": figures, "embed": embed, "goals": goals,
                                   "config": vars(args)})  # fmt: skip


async def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, float]]:
    args.threads = args.threads or usable_cores()  # what a first worker is given here
    async with running_stack() as stack:
        await stack.deploy("benchmarks.kit.batching_app")
        app.sessions.configure(stack.settings)
        try:
            return await _mlp_figures(stack, args), await _embed_figures(stack, args)
        finally:
            await app.sessions.aclose()


def report(args: argparse.Namespace, measured: tuple[dict[str, Any], dict[str, float]]) -> None:
    _report(*measured, args)


def main() -> None:
    sizes = [
        Size("rounds", "rounds (sides alternate within each)", 2, 5),
        Size("threads", "intra-op threads, both sides (0: this host's usable cores)", 0, 0),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
