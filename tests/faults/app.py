"""Functions the fault cases run. Each execution is written to AUTAN_FAULTS_LOG, so that
the ledger can count executions, not only results."""

from __future__ import annotations

import os
import time

from runtime import App, Batching, Context, Retries, Scaling

app = App("faults")


def _record(ctx: Context, event: str, call_id: str = "") -> None:
    path = os.environ.get("AUTAN_FAULTS_LOG")
    if path:
        call_id = call_id or ctx.call_id
        line = f"{event} {call_id} {ctx.attempt} {os.getpid()} {time.time():.6f}\n"
        with open(path, "a") as log:  # one short append: atomic with O_APPEND
            log.write(line)


@app.function(
    timeout_s=30,
    concurrency=10,
    scaling=Scaling(max_workers=2, target_backlog=10, keep_warm_s=30),
)
def work(ctx: Context, seconds: float) -> float:
    _record(ctx, "start")
    time.sleep(seconds)
    _record(ctx, "end")
    return seconds


@app.function(
    timeout_s=30,
    retries=Retries(max_attempts=3, backoff_s=(0.3, 0.6)),
    scaling=Scaling(max_workers=1, keep_warm_s=30),
)
def poison(ctx: Context, value: int) -> int:
    _record(ctx, "start")
    raise RuntimeError(f"poison {value} always fails")


@app.function(
    timeout_s=30,
    memory_mb=1024,
    retries=Retries(max_attempts=2, backoff_s=(0.1,)),
    scaling=Scaling(max_workers=1, keep_warm_s=30),
)
def hog(ctx: Context, megabytes: int) -> int:
    _record(ctx, "start")
    block = bytearray(megabytes * 1024 * 1024)
    return len(block)


@app.function(timeout_s=30, scaling=Scaling(min_warm=2, max_workers=2, keep_warm_s=30))
def pausable(ctx: Context, seconds: float) -> int:
    _record(ctx, "start")
    time.sleep(seconds)
    _record(ctx, "end")
    return os.getpid()


@app.function(
    timeout_s=30,
    batching=Batching(max_size=8, max_delay_ms=5),
    scaling=Scaling(max_workers=2, target_backlog=16, keep_warm_s=30),
)
def doubled(ctx: Context, items: list[int]) -> list[int]:
    """0.1 s a batch. Items share the batch's context: each is logged by its value."""
    for item in items:
        _record(ctx, "start", f"item-{item}")
    time.sleep(0.1)
    return [item * 2 for item in items]
