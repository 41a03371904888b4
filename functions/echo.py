"""`echo`: returns its input, so that timing it measures the runtime and nothing else.

The overhead benchmarks compare it with the broker's floors; keep the body empty of work.
"""

from __future__ import annotations

from typing import Any

from functions.app import app
from runtime import Context

__all__ = ["echo"]


@app.function(timeout_s=30)
def echo(ctx: Context, value: Any) -> Any:
    """Return `value` unchanged (any wire value: str, bytes, numbers, lists, dicts, arrays).

    >>> echo.local({"a": [1, 2]})
    {'a': [1, 2]}
    """
    return value
