"""A second version of `scaled.warm`: other code under the same name, deployed over it."""

from __future__ import annotations

from runtime import App, Context, Scaling

app = App("scaled")


@app.function(timeout_s=30, scaling=Scaling(min_warm=1, max_workers=1, keep_warm_s=1))
def warm(ctx: Context, x: int) -> int:
    return x * 10
