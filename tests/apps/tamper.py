"""Functions whose stored artifacts the deploy tests alter, one per kind of damage."""

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
def forged_manifest(ctx: Context, value: str) -> str:
    return f"manifest {value}"
