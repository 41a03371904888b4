"""Functions the scaling tests run from zero with forked workers."""

from __future__ import annotations

import time

from runtime import App, Batching, Context, Scaling

app = App("scaled")


@app.function(timeout_s=30, scaling=Scaling(max_workers=2, target_backlog=4, keep_warm_s=1))
def hello(ctx: Context, name: str) -> str:
    return f"hello {name}"


@app.function(timeout_s=30, scaling=Scaling(max_workers=4, target_backlog=2, keep_warm_s=1))
def slow(ctx: Context, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(timeout_s=30, scaling=Scaling(min_warm=1, max_workers=1, keep_warm_s=1))
def warm(ctx: Context, x: int) -> int:
    """Kept warm: only a new version deployed (tests/apps/scaled_v2.py) retires its worker."""
    return x


@app.function(
    timeout_s=30,
    batching=Batching(max_size=4, max_delay_ms=5),
    scaling=Scaling(max_workers=4, target_backlog=8, keep_warm_s=1),
)
def slow_batch(ctx: Context, items: list[float]) -> list[float]:
    """0.2 s a batch, whatever its size: `.map()` sends it packs of many calls."""
    time.sleep(0.2)
    return items
