"""Functions called by messages on subjects, chained through `emit`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from runtime import App, Context, Scaling

app = App("trig")


@app.function(on="uploads.>", emit="uploads-seen", timeout_s=10,
              scaling=Scaling(max_workers=2, keep_warm_s=60))  # fmt: skip
def classify(ctx: Context, event: bytes) -> dict[str, Any]:
    return {"subject": ctx.subject, "size": len(event), "call_id": ctx.call_id}


@app.function(on="chain.in", emit="chain.mid", timeout_s=10)
def shout(ctx: Context, event: bytes) -> str:
    return event.decode().upper()


@app.function(on="chain.mid", emit="chain.out", timeout_s=10)
def exclaim(ctx: Context, event: bytes) -> bytes:
    return event + b"!"


@app.function(on="lines.in", emit="lines.out", timeout_s=10)
def split_lines(ctx: Context, event: bytes) -> Iterator[bytes]:
    """A generator on a trigger: each line of the event is emitted as it is split off."""
    yield from event.splitlines()
