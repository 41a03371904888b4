"""A new version of `trig.shout` (tests/apps/triggers.py), deployed over a replayed trigger."""

from __future__ import annotations

from runtime import App, Context

app = App("trig")


@app.function(on="chain.in", emit="chain.mid", timeout_s=20)
def shout(ctx: Context, event: bytes) -> str:
    return event.decode().upper() + "?"
