"""Forming model inputs from a batch of calls: pad variable-length sequences, stack arrays."""

from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["pad_batch", "stack_batch", "takes_array"]


def pad_batch(
    sequences: Sequence[Sequence[int] | npt.NDArray[Any]],
    *,
    pad_value: int | float = 0,
    dtype: npt.DTypeLike = np.int64,
    max_length: int | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64]]:
    """Pad sequences to the longest (or cut to `max_length`): `(batch, attention mask)`.

    >>> ids, mask = pad_batch([[101, 7592, 102], [101, 102]])
    >>> ids.tolist(), mask.tolist()
    ([[101, 7592, 102], [101, 102, 0]], [[1, 1, 1], [1, 1, 0]])
    """
    if not sequences:
        raise ValueError("pad_batch needs at least one sequence")
    lengths = [min(len(s), max_length) if max_length else len(s) for s in sequences]
    width = max(lengths)
    batch = np.full((len(sequences), width), pad_value, dtype=dtype)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, (sequence, length) in enumerate(zip(sequences, lengths, strict=True)):
        batch[row, :length] = np.asarray(sequence[:length], dtype=dtype)
        mask[row, :length] = 1
    return batch, mask


def stack_batch(arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """Stack same-shaped inputs along a new first axis; a clear error when shapes differ."""
    if not arrays:
        raise ValueError("stack_batch needs at least one array")
    shapes = {np.shape(a) for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"cannot stack inputs of shapes {sorted(shapes)}: pad them first (pad_batch) "
            "or declare a batch size of one"
        )
    return np.stack(arrays)


def takes_array(fn: Callable[..., Any]) -> bool:
    """Whether `fn(ctx, batch)` annotates `batch` as a numpy array (read where the
    function's module is importable: deploy records it in the signed signature)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that names what this process cannot resolve
        hints = {}
    code = getattr(fn, "__code__", None)
    names = list(code.co_varnames[: code.co_argcount]) if code is not None else []
    if len(names) < 2:
        return False
    hint = hints.get(names[1])
    return hint is np.ndarray or typing.get_origin(hint) is np.ndarray
