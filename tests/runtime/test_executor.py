"""The executor on its own: batches cut to size, call threads, overruns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from runtime.core import Context
from runtime.worker.executor import Executor
from runtime.worker.invocations import Invocation, Outcome


def _executor(fn: Callable[..., Any], **options: Any) -> Executor:
    return Executor(fn, Context(function="tests.fn", models={}), **options)


def _calls(*args: Any) -> list[Invocation]:
    return [
        Invocation(call_id=f"c{i}", attempt=1, args=(a,), kwargs={}) for i, a in enumerate(args)
    ]


async def test_more_inputs_than_a_batch_run_as_batches_of_max_size() -> None:
    def sizes(ctx: Context, items: list[int]) -> list[tuple[int, int]]:
        return [(item, len(items)) for item in items]

    executor = _executor(sizes, batched=True, timeout_s=5, batch_size=4)
    outcomes = await executor.run(_calls(*range(10)))
    assert [o.value for o in outcomes if o] == [
        (0, 4), (1, 4), (2, 4), (3, 4), (4, 4), (5, 4), (6, 4), (7, 4), (8, 2), (9, 2)
    ]  # fmt: skip
    assert executor.sizes == {4: 2, 2: 1}


async def test_in_a_pack_a_bad_input_fails_alone_and_the_other_batches_keep_theirs() -> None:
    ran: list[list[int]] = []

    def inverse(ctx: Context, items: list[int]) -> list[float]:
        ran.append(list(items))
        return [1 / item for item in items]

    executor = _executor(inverse, batched=True, timeout_s=5, batch_size=3)
    outcomes = await executor.run(_calls(1, 2, 4, 5, 0, 8, 10))
    assert [o.value if o and o.error is None else "error" for o in outcomes] == [
        1.0, 0.5, 0.25, 0.2, "error", 0.125, 0.1
    ]  # fmt: skip
    failed = outcomes[4]
    assert failed is not None
    assert failed.error is not None
    assert failed.error.type == "ZeroDivisionError"
    # The batches in one hop; only the failed batch again, input by input.
    assert ran == [[1, 2, 4], [5, 0, 8], [10], [5], [0], [8]]


async def test_an_overrun_in_a_pack_keeps_the_batches_before_and_hands_back_the_rest() -> None:
    def nap(ctx: Context, seconds: list[float]) -> list[float]:
        time.sleep(max(seconds))
        return seconds

    executor = _executor(nap, batched=True, timeout_s=0.3, batch_size=2)
    async with anyio.create_task_group() as group:
        group.start_soon(executor.watch)
        outcomes = await executor.run(_calls(0.0, 0.0, 3.0, 0.0, 0.0, 0.0))
        group.cancel_scope.cancel()
    assert [o.value if o else None for o in outcomes[:2]] == [0.0, 0.0]
    for overran in outcomes[2:4]:
        assert overran is not None
        assert overran.error is not None
        assert overran.error.type == "FunctionTimeout"
    assert outcomes[4:] == [None, None]  # never started: handed back unrun
    assert executor.poisoned


async def test_an_overrun_hands_back_the_calls_waiting_for_the_thread() -> None:
    def nap(ctx: Context, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    executor = _executor(nap, batched=False, timeout_s=0.3, concurrency=1)
    results: dict[str, list[Outcome | None]] = {}
    both_back = anyio.Event()

    async def run(name: str, seconds: float) -> None:
        results[name] = await executor.run(_calls(seconds))
        if len(results) == 2:
            both_back.set()

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(executor.watch)
        group.start_soon(run, "stuck", 3.0)
        await anyio.lowlevel.checkpoint()  # "stuck" is queued for the thread first
        group.start_soon(run, "waiting", 0.0)
        await both_back.wait()
        group.cancel_scope.cancel()
    assert time.monotonic() - started < 2.0  # not held up by the stuck thread
    [stuck] = results["stuck"]
    assert stuck is not None
    assert stuck.error is not None
    assert stuck.error.type == "FunctionTimeout"
    assert results["waiting"] == [None]  # never started: handed back unrun
    assert executor.poisoned


async def test_sync_calls_run_in_order_on_the_call_thread() -> None:
    order: list[int] = []
    threads: set[str] = set()

    def record(ctx: Context, item: int) -> int:
        order.append(item)
        threads.add(threading.current_thread().name)
        return item

    executor = _executor(record, batched=False, timeout_s=5, concurrency=1)
    async with anyio.create_task_group() as group:
        for item in range(5):
            group.start_soon(executor.run, _calls(item))
            await anyio.lowlevel.checkpoint()
    assert order == [0, 1, 2, 3, 4]
    assert threads == {"autan-call-0"}


async def test_closing_ends_the_call_threads() -> None:
    executor = _executor(lambda ctx, x: x, batched=False, timeout_s=5)
    assert [o.value for o in await executor.run(_calls(7)) if o] == [7]
    [thread] = executor._threads._threads  # the one call thread (concurrency=1)
    assert thread.is_alive()
    executor.close()
    await anyio.to_thread.run_sync(thread.join, 5)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        await executor.run(_calls(8))
