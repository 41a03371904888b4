"""Functions of the fleet benchmark: a short step that many workers share, and one that
waits at zero for the failover timing."""

from __future__ import annotations

import time

from runtime import App, Context, Scaling

app = App("fleetbench")


@app.function(
    timeout_s=30,
    concurrency=4,
    scaling=Scaling(max_workers=6, target_backlog=64, keep_warm_s=2),
)
def step(ctx: Context, i: int) -> int:
    time.sleep(0.01)
    return i


@app.function(timeout_s=30, scaling=Scaling(max_workers=1, keep_warm_s=1))
def wake(ctx: Context, i: int) -> str:
    return ctx.node
