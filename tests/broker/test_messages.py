"""The wire format: msgpack envelopes, numpy arrays as an extension, no pickle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from broker import (
    CallMsg,
    ErrorInfo,
    Failure,
    Inline,
    PackResult,
    RowList,
    StoredRef,
    Success,
    UnencodableValue,
    decode_call,
    decode_pack_result,
    decode_result,
    decode_value,
    encode,
    encode_value,
    item_call_id,
    rows,
)


@pytest.mark.parametrize(
    "value",
    [None, True, 3, -2.5, "text", b"\x00\xff", [1, "a"], {"k": [None, {"n": 1}]}],
)
def test_plain_values_round_trip(value: Any) -> None:
    assert decode_value(encode_value(value)) == value


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.zeros((0, 5), dtype=np.int64),
        np.array(7, dtype=np.uint8),
        np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        np.arange(10, dtype=np.int16)[::2],
    ],
)
def test_numpy_arrays_keep_dtype_and_shape(array: np.ndarray[Any, Any]) -> None:
    decoded = decode_value(encode_value({"a": array}))["a"]
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_numpy_scalars_become_python_numbers() -> None:
    assert decode_value(encode_value([np.float32(1.5), np.int64(2)])) == [1.5, 2]


@pytest.mark.parametrize("value", [object(), np.array([object()]), {1j}])
def test_unencodable_values_say_what_can_travel(value: Any) -> None:
    with pytest.raises(UnencodableValue, match="cannot"):
        encode_value(value)


def test_envelopes_round_trip() -> None:
    call = CallMsg(call_id="c1", app="a", fn="f", payload=Inline(b"\x92\x90\x80"), reply="r")
    assert decode_call(encode(call)) == call
    ok = Success(call_id="c1", payload=StoredRef(key="results/c1", size_bytes=9))
    assert decode_result(encode(ok)) == ok
    failed = Failure(call_id="c1", error=ErrorInfo(type="ValueError", message="bad"))
    assert decode_result(encode(failed)) == failed


def test_arrays_of_one_shape_travel_stacked_and_come_back_as_writable_rows() -> None:
    arrays = [np.arange(4, dtype=np.float32) + i for i in range(5)]
    decoded = decode_value(encode_value(rows(arrays)))
    assert isinstance(decoded, RowList)
    assert len(decoded) == 5
    for got, sent in zip(decoded, arrays, strict=True):
        np.testing.assert_array_equal(got, sent)
        assert got.dtype == np.float32
        assert got.flags.writeable
    # One header and one block of bytes, not five.
    assert len(encode_value(rows(arrays))) < len(encode_value(arrays))


@pytest.mark.parametrize(
    "values",
    [
        [],
        [np.zeros(3)],  # one array: nothing to gain
        [np.zeros(3), np.zeros(4)],  # shapes differ
        [np.zeros(3, np.float32), np.zeros(3, np.float64)],  # dtypes differ
        [np.zeros(3), [0.0, 0.0, 0.0]],  # not all arrays
        [1, 2, 3],
    ],
)
def test_values_that_do_not_stack_travel_as_a_plain_list(values: list[Any]) -> None:
    assert rows(values) is values
    decoded = decode_value(encode_value(rows(values)))
    assert not isinstance(decoded, RowList)
    assert len(decoded) == len(values)


def test_pack_results_round_trip() -> None:
    items: list[Success | Failure] = [
        Success(call_id=item_call_id("p1", 0), payload=Inline(b"\x01")),
        Failure(call_id=item_call_id("p1", 1), error=ErrorInfo(type="ValueError", message="x")),
    ]
    mixed = PackResult(call_id="p1", items=items, attempts=2)
    assert decode_pack_result(encode(mixed)) == mixed
    every = PackResult(call_id="p1", values=Inline(encode_value([1, 2])))
    assert decode_pack_result(encode(every)).values == Inline(encode_value([1, 2]))
    assert item_call_id("p1", 1) == "p1-1"
