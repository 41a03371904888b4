""".map() on a batched function: inputs travel in packs, one message for many calls.

Each item is still a call of its own: its own result, its own retries, its own dead
letter. What changes is how many messages JetStream and both ends handle.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from broker import (
    Inline,
    UnencodableValue,
    decode_call,
    decode_pack_result,
    decode_value,
    encode_value,
    new_call_id,
)
from runtime import Batching, InvalidOption, RemoteError, Scaling
from runtime.client.packs import PACK_BATCHES, pack_size
from runtime.core import FunctionOptions, FunctionSpec
from runtime.ops import DeadLetters
from tests.apps import sample
from tests.stack import Stack


async def test_arrays_go_in_packs_and_each_caller_gets_its_own_row(stack: Stack) -> None:
    rows = [np.full(3, i, dtype=np.float32) for i in range(40)]
    before = await stack.stored_calls()
    results = [r async for r in sample.double_rows.map.aio(rows)]
    # max_size 8, one worker: packs of 8 * PACK_BATCHES inputs, so 2 messages for 40.
    assert await stack.stored_calls() - before == 2
    assert len(results) == 40
    for got, row in zip(results, rows, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, row * 2)


async def test_packs_of_large_inputs_stay_under_the_inline_limit(stack: Stack) -> None:
    rows = [np.full(20_000, i, dtype=np.float32) for i in range(40)]  # 80 KB each
    before = await stack.stored_calls()
    results = [r async for r in sample.double_rows.map.aio(rows)]
    for got, row in zip(results, rows, strict=True):
        np.testing.assert_array_equal(got, row * 2)
    # The first pack (32 rows, 2.5 MB) travels through object storage; once the size
    # of a row is known, packs hold what fits in 512 KiB: 6 rows, so 2 more messages.
    assert await stack.stored_calls() - before == 3


async def test_inputs_that_do_not_stack_still_travel_in_packs(stack: Stack) -> None:
    rows = [np.zeros(n, dtype=np.float32) + n for n in (1, 2, 3, 1, 2)]
    before = await stack.stored_calls()
    results = [r async for r in sample.double_rows.map.aio(rows)]
    assert await stack.stored_calls() - before == 1  # one pack, item by item inside
    for got, row in zip(results, rows, strict=True):
        np.testing.assert_array_equal(got, row * 2)


async def test_a_pack_larger_than_a_batch_runs_as_batches_of_max_size(stack: Stack) -> None:
    results = [r async for r in sample.batch_sizes.map.aio(range(100))]
    assert [item for item, _ in results] == list(range(100))
    assert {size for _, size in results} <= set(range(1, 9))
    assert max(size for _, size in results) == 8


async def test_only_the_failed_item_runs_again_on_retry(stack: Stack) -> None:
    items = [101, 102, -103, 104, 105, 106]
    results = [r async for r in sample.fails_once.map.aio(items)]
    # -103 failed once and ran twice; the others ran once: their results were kept.
    assert results == [[101, 1], [102, 1], [-103, 2], [104, 1], [105, 1], [106, 1]]


async def test_an_item_that_fails_for_good_fails_alone_with_its_dead_letter(
    stack: Stack,
) -> None:
    seen = []
    results = sample.inverse.map.aio([1.0, 2.0, 0.0, 4.0])
    seen.append(await anext(results))
    seen.append(await anext(results))
    assert seen == [1.0, 0.5]  # the items before it come back
    with pytest.raises(RemoteError, match="division by zero") as raised:
        await anext(results)
    await results.aclose()
    item_id = raised.value.call_id
    assert item_id.endswith("-2")
    letter = (await DeadLetters(stack.session.broker).find(item_id)).letter
    assert letter.error.type == "ZeroDivisionError"
    call = decode_call(letter.call)
    # The letter holds the item as a call of its own: redrive runs it alone, recorded.
    assert (call.call_id, call.items, call.reply, call.record) == (item_id, 0, None, True)
    assert isinstance(call.payload, Inline)
    assert decode_value(call.payload.data) == [[0.0], {}]


async def test_a_pack_that_cannot_be_read_is_refused_and_dead_lettered(stack: Stack) -> None:
    spec = await stack.session.registry.get("tests", "inverse")
    pack_id = new_call_id()
    two_items = encode_value([[[1.0], {}], [[2.0], {}]])
    submission = await stack.session.link.submit(
        spec, pack_id, two_items, live=True, record=False, items=3
    )
    answer = decode_pack_result(await submission.result())
    assert answer.error is not None
    assert answer.error.type == "MalformedCall"
    assert "a pack of 3 calls holds 2 items" in answer.error.message
    letter = await DeadLetters(stack.session.broker).find(pack_id)
    assert letter.letter.reason == "malformed"


def _spec(batching: Batching | None, max_workers: int = 1) -> FunctionSpec:
    return FunctionSpec(
        app="a",
        name="f",
        version="v",
        python="3.11",
        artifact="0" * 64,
        artifact_bytes=1,
        options=FunctionOptions(batching=batching, scaling=Scaling(max_workers=max_workers)),
    )


@pytest.mark.parametrize(
    ("batching", "workers", "window", "count", "expected"),
    [
        (None, 1, 1024, None, 1),  # not batched: one call per message
        (Batching(max_size=1), 1, 1024, None, 1),
        (Batching(max_size=32), 1, 1024, None, 32 * PACK_BATCHES),
        (Batching(max_size=32), 1, 50, None, 50),  # never more than the window
        (Batching(max_size=32), 4, 1024, None, 32 * PACK_BATCHES),  # count unknown
        (Batching(max_size=32), 4, 1024, 64, 32),  # 4 workers: a batch each at least
        (Batching(max_size=32), 4, 1024, 400, 100),  # 400 over 4 workers
        (Batching(max_size=32), 4, 1024, 10_000, 32 * PACK_BATCHES),
    ],
)
def test_pack_size(
    batching: Batching | None, workers: int, window: int, count: int | None, expected: int
) -> None:
    assert pack_size(_spec(batching, workers), window, count) == expected


async def test_remote_calls_made_at_once_travel_in_packs(stack: Stack) -> None:
    before = await stack.stored_calls()
    calls = [sample.double_rows.remote.aio(np.full(2, i, dtype=np.float32)) for i in range(50)]
    results = await asyncio.gather(*calls)
    # One worker: packs of 8 * PACK_BATCHES, so 2 messages for 50 calls.
    assert await stack.stored_calls() - before == 2
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, np.full(2, i * 2, dtype=np.float32))
    before = await stack.stored_calls()
    one = np.ones(2, np.float32)
    np.testing.assert_array_equal(await sample.double_rows.remote.aio(one), one * 2)
    assert await stack.stored_calls() - before == 1  # a lone call goes alone


async def test_among_calls_made_at_once_only_the_bad_ones_fail(stack: Stack) -> None:
    calls = [sample.inverse.remote.aio(x) for x in (1.0, 0.0, 4.0)]
    calls.append(sample.inverse.remote.aio(object()))  # type: ignore[arg-type]  # cannot travel
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == 1.0
    assert isinstance(results[1], RemoteError)
    assert results[1].type == "ZeroDivisionError"
    assert results[2] == 0.25
    assert isinstance(results[3], UnencodableValue)


async def test_a_pack_of_rows_runs_whole_and_a_failed_batch_reruns_from_the_rows_as_sent(
    stack: Stack,
) -> None:
    # 12 rows of one shape: one pack of stacked rows, run as 3 slices of 4. The batch
    # holding the 0 fails after changing itself in place: its rows run again one by one,
    # from the inputs as they were sent, so only the 0 fails and the rest come out right.
    rows = [np.full(3, i + 1, dtype=np.float32) for i in range(12)]
    rows[5] = np.zeros(3, dtype=np.float32)
    results = await asyncio.gather(
        *(sample.reciprocal_rows.remote.aio(row) for row in rows), return_exceptions=True
    )
    for index, (got, row) in enumerate(zip(results, rows, strict=True)):
        if index == 5:
            assert isinstance(got, RemoteError)
            assert got.type == "ZeroDivisionError"
        else:
            assert isinstance(got, np.ndarray)
            np.testing.assert_array_equal(got, 1 / row)
    assert [r async for r in sample.reciprocal_rows.map.aio(rows[:4])] == [
        pytest.approx(1 / row) for row in rows[:4]
    ]


async def test_a_batch_with_a_result_missing_fails_its_inputs_and_no_other(stack: Stack) -> None:
    rows = [np.full(2, i, dtype=np.float32) for i in range(12)]
    results = await asyncio.gather(
        *(sample.short_rows.remote.aio(row) for row in rows), return_exceptions=True
    )
    # Rows 4-7 ran together and got 3 results: each fails, saying what was wrong.
    for index, got in enumerate(results):
        if 4 <= index < 8:
            assert isinstance(got, RemoteError)
            assert "must return a list (or an array) of 4 results" in str(got)
        else:
            np.testing.assert_array_equal(got, rows[index] * 2)


def test_pack_size_keeps_packs_under_the_inline_limit() -> None:
    spec = _spec(Batching(max_size=32))
    assert pack_size(spec, 1024, item_bytes=1_600, max_bytes=512 * 1024) == 32 * PACK_BATCHES
    assert pack_size(spec, 1024, item_bytes=80_000, max_bytes=512 * 1024) == 6
    assert pack_size(spec, 1024, item_bytes=10**6, max_bytes=512 * 1024) == 1


async def test_each_item_of_a_pack_is_emitted_once(stack: Stack) -> None:
    emitted: list[tuple[str, bytes]] = []
    all_there = asyncio.Event()

    async def on_message(msg: Any) -> None:
        emitted.append((msg.headers["Autan-Call-Id"], msg.data))
        if len(emitted) == 10:
            all_there.set()

    subscription = await stack.session.broker.nc.subscribe("tests.tripled", cb=on_message)
    try:
        assert [r async for r in sample.tripled.map.aio(range(10))] == [3 * i for i in range(10)]
        await asyncio.wait_for(all_there.wait(), 5)
        await asyncio.sleep(0.1)  # nothing more comes
    finally:
        await subscription.unsubscribe()
    assert sorted(int(data) for _, data in emitted) == [3 * i for i in range(10)]
    assert len({call_id for call_id, _ in emitted}) == 10


async def test_a_map_window_under_one_is_refused(stack: Stack) -> None:
    with pytest.raises(InvalidOption, match=r"map\(window=0\)"):
        [r async for r in sample.double_rows.map.aio([np.ones(2, np.float32)], window=0)]
    with pytest.raises(InvalidOption, match="1 or more"):
        sample.echo.map([1], window=-3)


async def test_a_batch_annotated_as_an_array_arrives_stacked(stack: Stack) -> None:
    rows = [np.full(3, i, dtype=np.float32) for i in range(40)]
    results = [r async for r in sample.stacked_rows.map.aio(rows)]
    assert len(results) == 40
    for got, row in zip(results, rows, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got[:3], row * 2)
    assert {int(r[3]) for r in results} == {8}  # batches of max_size, from packs
    assert {bool(r[4]) for r in results} == {True}  # an array the function may write
    # Calls made one by one are stacked too.
    singles = await asyncio.gather(*(sample.stacked_rows.remote.aio(row) for row in rows[:5]))
    for got, row in zip(singles, rows[:5], strict=True):
        np.testing.assert_array_equal(got[:3], row * 2)
    np.testing.assert_array_equal(sample.stacked_rows.local(rows[1])[:3], rows[1] * 2)


def test_rows_stack_into_one_array_of_their_own() -> None:
    from broker import stack_rows

    block = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = list(block)
    stacked = stack_rows(rows[2:6])
    np.testing.assert_array_equal(stacked, block[2:6])
    assert not np.shares_memory(stacked, block)  # a copy: the caller may reuse its rows
    np.testing.assert_array_equal(stack_rows([rows[3], rows[1]]), block[[3, 1]])
    np.testing.assert_array_equal(stack_rows(list(block[:, :2])), block[:, :2])  # strided
    square = np.arange(8, dtype=np.int64).reshape(2, 2, 2)
    assert stack_rows(list(square)).shape == (2, 2, 2)
    scalars = stack_rows([np.array(1.5, np.float32), np.array(2.5, np.float32)])
    assert scalars.dtype == np.float32
    assert scalars.tolist() == [1.5, 2.5]
