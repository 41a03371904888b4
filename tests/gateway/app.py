"""The functions the gateway tests call through HTTP: each shows one mapping rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime import App, Context

app = App("gw")


@app.function(timeout_s=10)
def echo(ctx: Context, value: Any) -> Any:
    return value


@app.function(timeout_s=10)
def describe(ctx: Context, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs, "call_id": ctx.call_id}


@app.function(timeout_s=10)
def boom(ctx: Context, message: str) -> None:
    raise ValueError(message)


@app.function(timeout_s=10)
def nap(ctx: Context, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(timeout_s=30)
def gate(ctx: Context, path: str) -> str:
    """Returns once `path` exists: the test decides when the call finishes."""
    deadline = time.monotonic() + 25
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)
    return "opened"


@app.function(timeout_s=10)
def record(ctx: Context, path: str) -> str:
    """Appends its call id to `path`, so that a test can count executions."""
    with Path(path).open("a") as file:
        file.write(ctx.call_id + "\n")
    return ctx.call_id


@app.function(timeout_s=10)
def grid(ctx: Context, rows: int, cols: int) -> npt.NDArray[np.float32]:
    return np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)


@app.function(timeout_s=10)
def double(ctx: Context, array: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    return array * 2


@app.function(timeout_s=10)
def blob(ctx: Context, size: int) -> bytes:
    return bytes(range(size))


@app.function(timeout_s=10)
def length(ctx: Context, data: bytes) -> int:
    return len(data)


@app.function(timeout_s=30, concurrency=2)
def count(ctx: Context, n: int, log: str = "", fail_at: int = -1) -> Iterator[int]:
    """0 to n-1, each noted in `log`; `fail_at`: ValueError in place of that item."""
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"item {i} is bad")
            if log:
                with open(log, "a") as file:
                    file.write(f"yield {i}\n")
            yield i
    finally:
        if log:
            with open(log, "a") as file:
                file.write("closed\n")
