"""Functions that declare secrets, and report what their workers' environment holds."""

from __future__ import annotations

import os

from runtime import App, Context

app = App("secretive")

NAMES = ("API_TOKEN", "OTHER_TOKEN", "LATE_TOKEN")


def _seen() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in NAMES}


@app.function(secrets=["API_TOKEN"])
def holder(ctx: Context) -> dict[str, str | None]:
    return _seen()


@app.function(secrets=["OTHER_TOKEN"])
def stranger(ctx: Context) -> dict[str, str | None]:
    return _seen()


@app.function(secrets=["LATE_TOKEN"])
def late(ctx: Context) -> dict[str, str | None]:
    return _seen()
