"""A function that logs and prints: what `autan logs` shows."""

from __future__ import annotations

import sys

from runtime import App, Context, Scaling

app = App("chatty")


@app.function(timeout_s=10, scaling=Scaling(max_workers=1, keep_warm_s=30))
def chat(ctx: Context, n: int) -> int:
    if n < 0:
        raise ValueError(f"negative: {n}")
    print(f"hello {n}")
    ctx.log.info("chatted", n=n)
    print(f"oops {n}", file=sys.stderr)
    return n
