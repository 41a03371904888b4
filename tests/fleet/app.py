"""Functions the fleet tests place on node agents."""

from __future__ import annotations

import time

from runtime import GPU, App, Context, Scaling
from tests.faults.app import _record

app = App("fleet")


@app.function(
    timeout_s=30, concurrency=4, scaling=Scaling(max_workers=6, target_backlog=4, keep_warm_s=30)
)
def spread(ctx: Context, seconds: float) -> str:
    _record(ctx, "start")
    time.sleep(seconds)
    _record(ctx, "end")
    return ctx.node


@app.function(
    timeout_s=30,
    gpu=GPU(memory_gb=10),
    scaling=Scaling(max_workers=5, target_backlog=2, keep_warm_s=30),
)
def share(ctx: Context, seconds: float) -> str:
    time.sleep(seconds)
    return ctx.node


@app.function(timeout_s=30, gpu=GPU(memory_gb=40), scaling=Scaling(max_workers=1))
def huge(ctx: Context, x: int) -> int:
    return x
