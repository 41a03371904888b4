"""Functions that misbehave with the event loop: the worker's guards must stop them."""

from __future__ import annotations

import time

from runtime import App, Context

app = App("guarded")


@app.function(timeout_s=1)
def quick_then_stuck(ctx: Context, seconds: float) -> float:
    """Quick calls make it run on the loop thread; then one sleeps past its timeout."""
    time.sleep(seconds)
    return seconds


@app.function(timeout_s=1)
async def blocks_the_loop(ctx: Context, seconds: float) -> float:
    """An async function that never awaits: no task of the loop can stop it."""
    time.sleep(seconds)  # noqa: ASYNC251
    return seconds
