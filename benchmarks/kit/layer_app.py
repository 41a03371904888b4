"""The layer benchmark's app, `layerbench`: one function with a 20 MB layer, one without.

heavy(ctx, x)   needs `autan-benchpayload` (a package of 20 MB, from the benchmark's
                wheelhouse): its workers fetch and unpack the layer unless cached
light(ctx, x)   the same body, no requirements: the floor
"""

from __future__ import annotations

from runtime import App, Context

__all__ = ["PAYLOAD_PACKAGE", "app", "heavy", "light"]

PAYLOAD_PACKAGE = "autan-benchpayload==1.0"

app = App("layerbench")


@app.function(timeout_s=60, requirements=[PAYLOAD_PACKAGE])
def heavy(ctx: Context, x: int) -> int:
    import autan_benchpayload  # type: ignore[import-not-found]  # from the layer

    one: int = autan_benchpayload.ONE
    return x + one


@app.function(timeout_s=60)
def light(ctx: Context, x: int) -> int:
    return x + 1
