"""Calls end to end: a real nats-server, file storage, in-process workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pytest

from broker import UnencodableValue
from runtime import Call, CallNotFound, FunctionNotFound, FunctionTimeout, RemoteError
from tests.apps import sample
from tests.stack import Stack


async def test_remote_returns_the_result(stack: Stack) -> None:
    assert await sample.echo.remote.aio("hello") == "hello"
    assert await sample.echo.remote.aio({"a": [1, 2.5, None], "b": b"\x00"}) == {
        "a": [1, 2.5, None],
        "b": b"\x00",
    }


async def test_positional_and_keyword_arguments(stack: Stack) -> None:
    result = await sample.describe.remote.aio(1, "two", flag=True)
    assert result["args"] == [1, "two"]
    assert result["kwargs"] == {"flag": True}
    assert result["attempt"] == 1
    assert len(result["call_id"]) == 22


async def test_numpy_arrays_travel_as_arrays(stack: Stack) -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = await sample.scale.remote.aio(array, 2.0)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, array * 2)


async def test_large_payloads_travel_by_reference(stack: Stack) -> None:
    big = np.ones((1024, 1024), dtype=np.float32)  # 4 MiB, over the 512 KiB threshold
    result = await sample.scale.remote.aio(big, 3.0)
    np.testing.assert_array_equal(result, big * 3)
    stored = await (await stack.session.link.store()).list("payloads/")
    assert any(info.size_bytes > 4 * 1024 * 1024 for info in stored)


async def test_map_keeps_input_order(stack: Stack) -> None:
    values = list(range(500))
    results = [r async for r in sample.echo.map.aio(values, window=64)]
    assert results == values


async def test_spawn_then_get_from_another_session(stack: Stack) -> None:
    call = await sample.echo.spawn.aio("later")
    again = Call.from_id(call.id, sample.app)
    assert await again.get_aio(timeout_s=10) == "later"
    assert await call.get_aio(timeout_s=10) == "later"


async def test_an_unknown_call_id_is_told_at_once(stack: Stack) -> None:
    """Not a wait for the whole timeout, as if it were pending."""
    started = time.monotonic()
    with pytest.raises(CallNotFound, match="no spawned call nothing-like-this"):
        await Call.from_id("nothing-like-this", stack.app).get_aio(timeout_s=30)
    assert time.monotonic() - started < 5


async def test_a_pending_call_times_out_as_pending(stack: Stack) -> None:
    call = await sample.sleepy.spawn.aio(0.3)  # its timeout_s is 0.5: it ends soon
    with pytest.raises(TimeoutError, match=r"still pending after 0\.01 s"):
        await call.get_aio(timeout_s=0.01)
    assert await call.get_aio(timeout_s=10) == 0.3


async def test_user_exception_reaches_the_caller(stack: Stack) -> None:
    with pytest.raises(RemoteError) as raised:
        await sample.boom.remote.aio("broken input")
    assert raised.value.type == "ValueError"
    assert raised.value.remote_message == "broken input"
    assert ", in boom" in raised.value.remote_traceback
    # The user's file and line, not cloudpickle's "<dynamic-code>".
    assert 'File "tests/apps/sample.py", line 28, in boom' in raised.value.remote_traceback


async def test_spawned_failure_is_recorded(stack: Stack) -> None:
    call = await sample.boom.spawn.aio("spawned failure")
    with pytest.raises(RemoteError, match="spawned failure"):
        await call.get_aio(timeout_s=10)


async def test_retries_until_an_attempt_succeeds(stack: Stack) -> None:
    assert await sample.flaky.remote.aio(3) == 3


async def test_retries_exhausted_gives_the_last_error(stack: Stack) -> None:
    with pytest.raises(RemoteError, match="attempt 3 fails"):
        await sample.flaky.remote.aio(99)


async def test_async_function_timeout(stack: Stack) -> None:
    with pytest.raises(FunctionTimeout, match=r"timeout_s=0\.5"):
        await sample.sleepy_async.remote.aio(5.0)
    assert await sample.sleepy_async.remote.aio(0.01) == 0.01


async def test_sync_function_timeout_replaces_the_worker(stack: Stack) -> None:
    worker = stack.workers["sleepy"]
    with pytest.raises(FunctionTimeout):
        await sample.sleepy.remote.aio(3.0)
    await stack.stop_worker("sleepy")
    assert worker.exit_code == 75
    await stack.start_worker("sleepy")
    assert await sample.sleepy.remote.aio(0.01) == 0.01


async def test_batched_function_forms_batches(stack: Stack) -> None:
    results = [r async for r in sample.batch_sizes.map.aio(range(64), window=64)]
    assert [item for item, _ in results] == list(range(64))
    assert max(size for _, size in results) > 1
    assert all(size <= 8 for _, size in results)


async def test_unencodable_result_is_an_error(stack: Stack) -> None:
    with pytest.raises(RemoteError, match="cannot send a value of type object"):
        await sample.unencodable.remote.aio(1)


async def test_unknown_function_names_the_deployed_ones(stack: Stack) -> None:
    before = await stack.stored_calls()
    with pytest.raises(
        FunctionNotFound, match=r"no function 'echoo' in app 'tests'; deployed: .*echo"
    ):
        await stack.session.call("tests", "echoo", ("x",), {})
    assert await stack.stored_calls() == before


async def test_unencodable_argument_fails_before_publishing(stack: Stack) -> None:
    before = await stack.stored_calls()
    with pytest.raises(UnencodableValue, match="type object"):
        await sample.echo.remote.aio(object())
    assert await stack.stored_calls() == before


async def _gather(calls: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_one_bad_input_fails_only_its_call(stack: Stack) -> None:
    inputs = [1.0, 2.0, 0.0, 4.0, 5.0, 0.0, 8.0]
    results = await _gather([sample.inverse.remote.aio(x) for x in inputs])
    good = [r for r in results if not isinstance(r, BaseException)]
    bad = [r for r in results if isinstance(r, RemoteError)]
    assert good == [1.0, 0.5, 0.25, 0.2, 0.125]
    assert [e.type for e in bad] == ["ZeroDivisionError", "ZeroDivisionError"]


async def test_a_batched_function_can_fail_one_item(stack: Stack) -> None:
    results = await _gather([sample.checked.remote.aio(x) for x in [3, -1, 5]])
    assert results[0] == 6
    assert results[2] == 10
    assert isinstance(results[1], RemoteError)
    assert results[1].type == "ValueError"
    assert results[1].remote_message == "-1 is negative"


async def test_many_concurrent_callers_each_get_their_own_result(stack: Stack) -> None:
    results = await _gather([sample.batch_sizes.remote.aio(i) for i in range(200)])
    assert [item for item, _ in results] == list(range(200))
