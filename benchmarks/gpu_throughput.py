"""GPU rows/s through the runtime against raw onnxruntime-gpu at its best batch size.

Ready to run in one go on a host with an NVIDIA GPU and `autan[gpu]` installed:

    python -m benchmarks.gpu_throughput [--rows 65536]

1. Raw: the MLP (384 -> 1024 -> 384) on CUDA, rows/s at batch 32 ... 4096; the best one
   is the floor. 2. Ours: single-row calls through one `gpu=True` worker with
   Batching(max_size=<best>). Goal: at least 0.9 of the floor. On a host where no CUDA
   provider works it says so, writes that to the JSON and exits 0: the GPU path is then
   unproven, never silently measured on the CPU.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import time
from typing import Any

import numpy as np

from benchmarks.batching_app import MLP_PATH, build_mlp
from benchmarks.report import Goal, print_goal, print_table, write_json
from runtime.models import NoGpuProvider, load_models

SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def _raw_rates(session: Any, rows: np.ndarray[Any, Any]) -> dict[int, float]:
    rates = {}
    for size in SIZES:
        for start in range(0, min(len(rows), 4 * size), size):  # warm this shape up
            session.run({"x": rows[start : start + size]})
        started = time.perf_counter()
        for start in range(0, len(rows), size):
            session.run({"x": rows[start : start + size]})
        rates[size] = len(rows) / (time.perf_counter() - started)
    return rates


async def _through_runtime(rows: np.ndarray[Any, Any], best: int) -> float:
    os.environ["AUTAN_BENCH_GPU_BATCH"] = str(best)
    from benchmarks.gpu_app import app, mlp_gpu
    from benchmarks.harness import running_stack

    async with running_stack() as stack:
        await stack.deploy("benchmarks.gpu_app")
        app.sessions.configure(stack.settings)
        await stack.start_worker("gpubench.mlp_gpu")
        try:
            [_ async for _ in mlp_gpu.map.aio(list(rows[:best]), window=best)]
            started = time.perf_counter()
            results = [r async for r in mlp_gpu.map.aio(list(rows), window=4 * best)]
            elapsed = time.perf_counter() - started
        finally:
            await app.sessions.aclose()
    assert len(results) == len(rows)
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536)
    args = parser.parse_args()
    build_mlp()
    try:
        session = load_models({"mlp": MLP_PATH}, gpu=True)["mlp"]
    except NoGpuProvider as exc:
        print(f"no GPU: {exc}\nthe GPU path is unproven on this host")
        write_json("gpu_throughput", {"unproven": str(exc)})
        return
    rows = np.random.default_rng(0).standard_normal((args.rows, 384)).astype(np.float32)
    rates = _raw_rates(session, rows)
    best = max(rates, key=lambda size: rates[size])
    ours = asyncio.run(_through_runtime(rows, best))
    print_table(
        f"MLP on {session.providers[0]}, {args.rows} rows",
        ["path", "rows/s"],
        [*[[f"floor  session.run, batch {s}", f"{r:.0f}"] for s, r in rates.items()],
         [f"ours   single-row calls, Batching(max_size={best})", f"{ours:.0f}"]],
    )  # fmt: skip
    goal = Goal(
        "ours >= 0.9 x raw at its best batch", ours / rates[best], ours >= 0.9 * rates[best]
    )
    print_goal(goal)
    write_json("gpu_throughput", {"raw": rates, "best": best, "ours": ours, "goal": goal,
                                  "providers": list(session.providers)})  # fmt: skip


if __name__ == "__main__":
    main()
