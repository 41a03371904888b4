"""Functions the runtime tests deploy: each one exercises one behaviour."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime import App, Batching, Context, Retries, Scaling

app = App("tests")


@app.function(timeout_s=10)
def echo(ctx: Context, value: Any) -> Any:
    return value


@app.function(timeout_s=10)
def describe(ctx: Context, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs, "call_id": ctx.call_id, "attempt": ctx.attempt}


@app.function(timeout_s=10)
def boom(ctx: Context, message: str) -> None:
    raise ValueError(message)


@app.function(timeout_s=10, retries=Retries(max_attempts=3, backoff_s=(0.0,)))
def flaky(ctx: Context, succeed_on: int) -> int:
    """Fails until attempt `succeed_on`, then returns the attempt number."""
    if ctx.attempt < succeed_on:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return ctx.attempt


@app.function(timeout_s=0.5)
def sleepy(ctx: Context, seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.function(timeout_s=0.5)
async def sleepy_async(ctx: Context, seconds: float) -> float:
    import anyio

    await anyio.sleep(seconds)
    return seconds


@app.function(timeout_s=10)
def scale(ctx: Context, array: npt.NDArray[np.float32], factor: float) -> npt.NDArray[np.float32]:
    return array * np.float32(factor)


@app.function(timeout_s=10, batching=Batching(max_size=8, max_delay_ms=20))
def batch_sizes(ctx: Context, items: list[int]) -> list[tuple[int, int]]:
    """Each item comes back with the size of the batch it ran in."""
    return [(item, len(items)) for item in items]


@app.function(timeout_s=10)
def unencodable(ctx: Context, value: int) -> object:
    return object()


@app.function(timeout_s=10, batching=Batching(max_size=16, max_delay_ms=50))
def inverse(ctx: Context, items: list[float]) -> list[float]:
    """Raises for the whole batch when any input is 0: the runtime isolates the bad one."""
    return [1 / item for item in items]


@app.function(timeout_s=10, batching=Batching(max_size=16, max_delay_ms=50))
def checked(ctx: Context, items: list[int]) -> list[int | Exception]:
    """Marks bad inputs itself by returning an exception in their place."""
    return [ValueError(f"{item} is negative") if item < 0 else item * 2 for item in items]


def _runs(ctx: Context) -> dict[int, int]:
    return {}


@app.function(
    timeout_s=10,
    batching=Batching(max_size=4, max_delay_ms=20),
    retries=Retries(max_attempts=2, backoff_s=(0.05,)),
    setup=_runs,
)
def fails_once(ctx: Context, items: list[int]) -> list[Any]:
    """Negative items fail on their first run; each item comes back with how often it ran."""
    results: list[Any] = []
    for item in items:
        ctx.state[item] = runs = ctx.state.get(item, 0) + 1
        failing = item < 0 and runs == 1
        results.append(RuntimeError(f"{item} fails once") if failing else (item, runs))
    return results


@app.function(
    timeout_s=10,
    batching=Batching(max_size=8, max_delay_ms=20),
    scaling=Scaling(max_workers=1),
)
def double_rows(ctx: Context, rows: list[npt.NDArray[np.float32]]) -> list[Any]:
    """Each array doubled, computed on the batch when the rows stack."""
    shapes = {row.shape for row in rows}
    if len(shapes) == 1:
        return list(np.stack(rows) * 2)
    return [row * 2 for row in rows]


@app.function(
    timeout_s=10,
    batching=Batching(max_size=8, max_delay_ms=20),
    scaling=Scaling(max_workers=1),
)
def stacked_rows(ctx: Context, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A batch annotated as an array arrives stacked; the output's rows are the results.
    Each row comes back doubled, with the batch's size and whether the batch is an array
    of its own (C-contiguous, writable) in its last two places."""
    if not isinstance(rows, np.ndarray) or rows.ndim != 2:
        raise TypeError(f"expected the batch stacked, got {type(rows).__name__}")
    out = np.empty((len(rows), rows.shape[1] + 2), dtype=np.float32)
    out[:, :-2] = rows * 2
    out[:, -2] = len(rows)
    out[:, -1] = rows.flags.c_contiguous and rows.flags.writeable
    return out


@app.function(
    timeout_s=10,
    batching=Batching(max_size=4, max_delay_ms=20),
    scaling=Scaling(max_workers=1),
)
def reciprocal_rows(ctx: Context, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """1 / each row. The batch is changed in place first; a row holding a 0 then fails the
    whole batch, and the runtime runs its rows again one by one, as they came."""
    rows += 1
    if (rows == 1).any():
        raise ZeroDivisionError("a row holds 0")
    return np.reciprocal(rows - 1)


@app.function(
    timeout_s=10,
    batching=Batching(max_size=4, max_delay_ms=20),
    scaling=Scaling(max_workers=1),
)
def short_rows(ctx: Context, rows: list[npt.NDArray[np.float32]]) -> list[Any]:
    """Returns one result too few for a batch that holds a row of 7s."""
    out = [row * 2 for row in rows]
    return out[:-1] if any((row == 7).all() for row in rows) else out


@app.function(timeout_s=10, batching=Batching(max_size=4, max_delay_ms=20), emit="tests.tripled")
def tripled(ctx: Context, items: list[int]) -> list[int]:
    """Each result is also published to `tests.tripled`."""
    return [item * 3 for item in items]
