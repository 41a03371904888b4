"""Functions whose registry entries and artifacts the deploy tests alter, one per damage."""

from __future__ import annotations

from runtime import App, Context

app = App("tamper")


@app.function(timeout_s=10)
def altered_artifact(ctx: Context, value: str) -> str:
    return f"artifact {value}"


@app.function(timeout_s=10)
def other_python(ctx: Context, value: str) -> str:
    return f"python {value}"


@app.function(timeout_s=10)
def forged(ctx: Context, value: str) -> str:
    return f"forged {value}"


@app.function(timeout_s=3)
def edited_options(ctx: Context, value: str) -> str:
    return f"options {value}"


@app.function(timeout_s=10)
def copied(ctx: Context, value: str) -> str:
    return f"copied {value}"


@app.function(timeout_s=10)
def rolled_back(ctx: Context, value: str) -> str:
    return f"rolled back {value}"
