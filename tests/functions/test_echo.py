"""`echo` hands back whatever it is given, untouched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from functions import echo


@pytest.mark.parametrize(
    "value",
    ["hello", b"\x00\xffbytes", {"a": [1, 2.5, None], "b": {"c": "d"}}, 42, [1, "two", 3.0]],
    ids=["str", "bytes", "dict", "int", "list"],
)
def test_echo_returns_its_input(value: Any) -> None:
    assert echo.local(value) == value


def test_echo_returns_a_numpy_array_unchanged() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = echo.local(array)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, array)
