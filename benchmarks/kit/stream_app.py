"""The streaming benchmark's app, `streambench`: a generator and a plain call of one shape.

items(ctx, n, payload)   yields `payload` n times (a generator: streamed)
one(ctx, payload)        returns `payload` (a plain call: the latency to compare with)
"""

from __future__ import annotations

from collections.abc import Iterator

from runtime import App, Context

__all__ = ["app", "items", "one"]

app = App("streambench")


@app.function(timeout_s=300, concurrency=2)
def items(ctx: Context, n: int, payload: bytes) -> Iterator[bytes]:
    for _ in range(n):
        yield payload


@app.function(timeout_s=30)
def one(ctx: Context, payload: bytes) -> bytes:
    return payload
