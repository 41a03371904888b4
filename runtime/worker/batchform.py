"""A batched function's input formed from its calls, and each call's result read back.

A batched function takes the inputs of many calls at once: a list, one per call, or,
when its input is annotated as an array (`np.ndarray`, `npt.NDArray[...]`), one array
stacked along a new first axis (`broker.stack_rows`, a copy). It returns a list (or
tuple) of one result per input, or an array whose first axis is the batch; an exception
in place of one result fails that input alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from broker import ErrorInfo, stack_rows
from runtime.worker.invocations import Invocation, Outcome, error_info

__all__ = ["as_batch", "split_batch"]


def as_batch(calls: Sequence[Invocation], stacked: bool) -> Invocation:
    """One invocation of a batched function with the inputs of `calls` (named for the
    first): their list, or (`stacked`) their stack."""
    first = calls[0]
    items = [call.args[0] for call in calls]
    batch: Any = _stack(items) if stacked else items
    return Invocation(call_id=first.call_id, attempt=first.attempt, args=(batch,), kwargs={})


def _stack(items: list[Any]) -> Any:
    """`items` stacked; left a list when they do not stack (inputs of several shapes: the
    function then fails on the batch, which runs input by input, each stacked alone)."""
    first = items[0]
    if isinstance(first, np.ndarray) and all(
        type(item) is np.ndarray and item.dtype == first.dtype and item.shape == first.shape
        for item in items
    ):
        return stack_rows(items)
    if len({(np.shape(item), np.asarray(item).dtype) for item in items}) > 1:
        return items
    return np.stack(items)


def split_batch(result: Outcome | None, offset: int, count: int) -> Outcome | None:
    """Item `offset`'s outcome from a batch's outcome."""
    if result is None or result.error is not None:
        return result
    values = result.value
    if not isinstance(values, list | tuple | np.ndarray) or len(values) != count:
        got = len(values) if isinstance(values, list | tuple | np.ndarray) else None
        what = f"{got} results" if got is not None else type(values).__name__
        return Outcome(
            error=ErrorInfo(
                type="TypeError",
                message=f"a batched function must return a list (or an array) of {count} "
                f"results, one per input; it returned {what}",
            ),
            run_ms=result.run_ms,
        )
    value = values[offset]
    if isinstance(value, BaseException):
        return Outcome(error=error_info(value), run_ms=result.run_ms)
    return Outcome(value=value, run_ms=result.run_ms)
