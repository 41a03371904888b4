"""Packs of stacked rows run whole: no object per item on the way in or out.

A pack whose items are rows of one stacked array (`broker.RowList`: `.map()` of arrays of
one shape, or `.remote()` calls of them made at once), holding at least a batch, is cut
into batches that are slices of that array (a view for a function that takes its batch
as an array, a list of row views for one that takes a list). When every batch succeeds
with one result per input, the pack is answered with the batches' outputs joined: arrays
of one row shape in one copy, anything else as one list. The general path would make an
invocation, an outcome and a statistics record per item, about half of what a worker's
event loop spent on such a pack.

Anything else (a batch that failed, a result of the wrong length or with an exception in
it, a value that cannot travel) goes the general way, item by item, from the batches'
outcomes, with the inputs read again from the message: a function that changed its batch
in place before it failed leaves the inputs as they came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from broker import CallMsg, Delivery, as_rows, item_call_id, rows
from runtime.worker.invocations import Invocation, Outcome

__all__ = ["form_batches", "joined"]


def form_batches(
    call: CallMsg, delivery: Delivery, array: np.ndarray[Any, Any], size: int, stacked: bool
) -> list[Invocation]:
    """The batches of a pack of stacked rows, each named for its first item."""
    return [
        Invocation(
            call_id=item_call_id(call.call_id, start),
            attempt=delivery.num_delivered,
            args=(array[start : start + size] if stacked else list(array[start : start + size]),),
            kwargs={},
            subject=call.subject,
        )
        for start in range(0, len(array), size)
    ]


def joined(results: Sequence[Outcome | None], sizes: Sequence[int]) -> Any | None:
    """What answers the pack: every batch's results in order, ready to encode; None
    unless every batch succeeded with exactly one result (no exception) per input."""
    outputs: list[Any] = []
    for result, size in zip(results, sizes, strict=True):
        if result is None or result.error is not None:
            return None
        value = result.value
        if isinstance(value, np.ndarray):
            if value.ndim == 0 or len(value) != size:
                return None
        elif (
            not isinstance(value, list | tuple)
            or len(value) != size
            or any(isinstance(item, BaseException) for item in value)
        ):
            return None
        outputs.append(value)
    first = outputs[0]
    if (
        isinstance(first, np.ndarray)
        and not first.dtype.hasobject
        and all(
            isinstance(out, np.ndarray)
            and out.dtype == first.dtype
            and out.shape[1:] == first.shape[1:]
            for out in outputs
        )
    ):
        return as_rows(first if len(outputs) == 1 else np.concatenate(outputs))
    return rows([item for out in outputs for item in out])
