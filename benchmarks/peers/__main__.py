"""Autan beside Ray Serve and Celery with Redis, on the same workloads, in one run.

Each system runs on this host's loopback only, one worker (replica) per function, the
same 16-byte echo and the same MLP (384 -> 1024 -> 384, `benchmarks.kit.mlp_model`, one
intra-op thread everywhere):

1. warm echo, one call in flight: p50 and p99 of `calls` sequential calls;
2. 20,000 echo calls in flight: calls per second;
3. the MLP, 4,096 single-row calls in flight: rows per second;
4. echo from zero: the first result of a call to a function with no worker.

Ours: `echo.remote.aio`, `echo.map.aio`, `mlp.map.aio` (Batching(max_size=32, 5 ms)), and
`benchmarks.cold_start`'s path (the scaler starts a worker from the function's template).
Ray Serve, tuned per its performance guide: a deployment per function on one replica with
`max_ongoing_requests` raised (128; 5 by default), `@serve.batch(max_batch_size=32,
batch_wait_timeout_s=0.005)` for the MLP, calls through a `DeploymentHandle`, at most 1,024
in flight as `.map()` keeps (20,000 at once stalled it); from zero: a
new actor's first result (`ray.remote` class, created and called). Celery with Redis (broker
and results), tuned per its optimizing guide: a prefork pool of one process per core,
prefetch multiplier 8, pickle; 20,000 calls as `group` of tasks, MLP rows in chunks of 32
per task (it has no batching of its own); from zero: a worker process started with a task
waiting, to its result. Rounds run one system after another; the tables quote medians.
A peer that is not installed is left out and said so. On a 2-core machine, at the full
sizes Ray Serve stopped answering (its replica idle, the calls pending); `--quick` runs.

    python -m benchmarks.peers [--quick] [--rounds R] [--calls N]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # air-gapped: no usage report

import argparse
import importlib.util
import shutil
from typing import Any

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.report import print_table, write_json
from benchmarks.peers.sides import autan_side, celery_side, ray_side

__all__ = ["main"]

WORKLOADS = {
    "echo_p50_ms": "warm echo p50 (ms, one in flight)",
    "echo_p99_ms": "warm echo p99 (ms)",
    "many_per_s": "{many:,} echo calls in flight (calls/s)",
    "mlp_rows_per_s": "MLP, {rows:,} rows in flight (rows/s)",
    "zero_ms": "echo from zero to first result (ms)",
}
LOWER_IS_BETTER = {"echo_p50_ms", "echo_p99_ms", "zero_ms"}


def _available() -> dict[str, str]:
    """Each peer: "" when it can run here, else why not."""
    ray = "" if importlib.util.find_spec("ray") else "ray not installed (autan[peers])"
    celery = "" if importlib.util.find_spec("celery") else "celery not installed (autan[peers])"
    if not celery and shutil.which("redis-server") is None:
        celery = "redis-server not on the path (apt-get install redis-server)"
    return {"Ray Serve": ray, "Celery+Redis": celery}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"Autan": await autan_side(args)}
    for name, missing in _available().items():
        if missing:
            figures[name] = {"missing": missing}
            continue
        side = ray_side if name == "Ray Serve" else celery_side
        figures[name] = await side(args)
    return figures


def report(args: argparse.Namespace, figures: dict[str, Any]) -> None:
    systems = [name for name, got in figures.items() if "missing" not in got]
    rows = []
    for key, label in WORKLOADS.items():
        ours = figures["Autan"].get(key)
        row = [label.format(many=args.many, rows=args.rows)]
        for name in systems:
            value = figures[name].get(key)
            if value is None:
                row.append("n/a")
                continue
            cell = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
            if name != "Autan" and ours:
                ratio = value / ours if key in LOWER_IS_BETTER else ours / value
                cell += f" ({ratio:.1f}x)"
            row.append(cell)
        rows.append(row)
    print_table(
        f"peers: medians of {args.rounds} rounds; (Nx): how many times Autan is better",
        ["workload", *systems],
        rows,
    )
    for name, got in figures.items():
        if "missing" in got:
            print(f"{name}: left out: {got['missing']}")
        for note in got.get("notes", []):
            print(f"{name}: {note}")
    write_json("peers", {"figures": figures, "config": vars(args)})


def main() -> None:
    sizes = [
        Size("rounds", "rounds per system and workload", 2, 5),
        Size("calls", "sequential calls per round (warm echo)", 200, 1000),
        Size("many", "calls in flight (throughput)", 5000, 20000),
        Size("rows", "MLP rows in flight", 1024, 4096),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
