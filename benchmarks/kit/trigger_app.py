"""The trigger benchmark's app, `trigbench`: one function fed by a subject, emitting to another.

    relay(ctx, event)   every message on `bench.events` is a call; it returns the message's
                        bytes, which the worker publishes on `bench.emitted`

`benchmarks.http_bridge` deploys it beside `demo` and times an event published to its
result emitted.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from runtime import App, Context

__all__ = ["EMITTED", "EVENTS", "app", "relay"]

EVENTS = "bench.events"
EMITTED = "bench.emitted"

app = App("trigbench")


@app.function(on=EVENTS, emit=EMITTED, timeout_s=30)
def relay(ctx: Context, event: bytes) -> bytes:
    """The event's bytes, unchanged (so timing it measures the trigger path alone)."""
    return event
