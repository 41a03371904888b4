"""Running user code: sync functions in threads, async ones on the loop, under `timeout_s`.

A sync function that overruns its timeout cannot be interrupted: its call is
answered with FunctionTimeout, the calls queued behind it are handed back, and
the worker reports itself poisoned so that a fresh process replaces it.

A thread hop costs about 0.1 ms. A sync function whose last `INLINE_AFTER` calls
each ran under `INLINE_MAX_MS` (echo, small lookups) runs on the loop instead;
its first slower call sends it back to threads for good.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from broker import ErrorInfo
from runtime.core import Context
from runtime.worker.batchform import as_batch, split_batch
from runtime.worker.guards import Alarm, CallOverran
from runtime.worker.invocations import Invocation, Outcome, error_info, timeout_error
from runtime.worker.logship import CURRENT_CALL
from runtime.worker.threads import CallThreads

__all__ = ["INLINE_AFTER", "INLINE_MAX_MS", "Executor"]

INLINE_AFTER = 32
INLINE_MAX_MS = 0.5
QUICK_MS = 1.0


class _Progress:
    """Which invocation a call thread is on, and since when (read by the watchdog).

    `current` is (0, inf) while the chunk waits for a thread; `abandoned` tells a
    thread not to start (or go on with) a chunk nobody awaits any more.
    """

    __slots__ = ("abandoned", "current", "outcomes", "overrun", "scope")

    def __init__(self, count: int, scope: anyio.CancelScope) -> None:
        self.current = (0, math.inf)
        self.outcomes: list[Outcome | None] = [None] * count
        self.overrun: int | None = None
        self.abandoned = False
        self.scope = scope


class Executor:
    """Runs invocations of one function with its context, batching and timeout."""

    def __init__(
        self,
        fn: Callable[..., Any],
        ctx: Context,
        *,
        batched: bool,
        timeout_s: float,
        concurrency: int = 1,
        batch_size: int = 32,
        alarm: bool = False,
        stacked: bool = False,
    ) -> None:
        """`alarm`: interrupt calls on the loop thread at their timeout with SIGALRM (in a
        worker process, where the loop runs on the main thread and nothing else uses it).
        `stacked`: a batched function whose batch is annotated as an array (deploy read
        the annotation: `Signature.stacked`) gets it stacked."""
        self.fn = fn
        self.ctx = ctx
        self.batched = batched
        self.stacked = batched and stacked
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.concurrency = max(1, concurrency)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
        # A generator: each call's items go out through its `Invocation.sink`.
        self.streams = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        self._limiter = anyio.CapacityLimiter(self.concurrency)
        self._threads = CallThreads(self.concurrency)
        self._running: set[_Progress] = set()
        self.poisoned = False
        self.inline = False
        self._fast_streak = 0
        self._average_ms = QUICK_MS  # unknown: taken as slow until calls show otherwise
        self._inline_allowed = self.concurrency == 1 and not self.streams
        self._alarm = Alarm(enabled=alarm)
        # Calls run together so far, by count: the size of each batch a batched function ran.
        self.sizes: Counter[int] = Counter()

    def close(self) -> None:
        """No more calls: the call threads end when what they hold is done."""
        self._threads.close()

    async def watch(self) -> None:
        """The watchdog of sync calls: run it beside `run` (in the worker's task group).

        One long-lived task ticking a few times per timeout costs less than watching
        each batch with a task of its own.
        """
        tick_s = min(0.1, self.timeout_s / 10)
        while True:
            await anyio.sleep(tick_s)
            now = time.monotonic()
            for progress in list(self._running):
                index, started = progress.current
                if now - started >= self.timeout_s and progress.outcomes[index] is None:
                    progress.overrun = index
                    progress.scope.cancel()
                    self._hand_back_waiting()

    def _hand_back_waiting(self) -> None:
        """After an overrun: chunks still waiting for a thread are handed back unrun.

        The stuck thread will not take them, and the worker is replaced anyway.
        """
        self.poisoned = True
        for progress in self._running:
            if progress.current[1] == math.inf:
                progress.abandoned = True
                progress.scope.cancel()

    def take_n(self) -> int:
        """How many calls to take at once: a batch, or what runs at once.

        Calls taken together are answered when all are done. Quick calls (inline, async,
        or a recent average under `QUICK_MS`) are taken 32 at a time for throughput;
        slower sync calls `concurrency` at a time, so each is answered after its own run
        and other workers can take the rest.
        """
        if self.batched:
            return self.batch_size
        if self.streams:  # long calls that answer as they go: as many as run at once
            return self.concurrency
        if self.inline or self.is_async or self._average_ms < QUICK_MS:
            return max(32, self.concurrency)
        return self.concurrency

    async def run(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        """One outcome per call, in order; None for a call handed back unrun (poisoned)."""
        if self.batched:
            return await self._run_batch(calls)
        self.sizes[len(calls)] += 1
        if self.is_async:
            return await self._run_async(calls)
        return await self._run_threads(calls)

    # -- batched ---------------------------------------------------------------

    async def _run_batch(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        """One call with every input; a failing batch is run input by input to find the culprit.

        A batched function may also return an exception in place of one item's result:
        that item fails, the others succeed.
        """
        outcomes: list[Outcome | None] = [None] * len(calls)
        positions = []
        for index, call in enumerate(calls):
            if len(call.args) != 1 or call.kwargs:
                outcomes[index] = Outcome(error=_batch_arity_error(self.ctx.function))
            else:
                positions.append(index)
        # Batches of `batch_size` (more than one for a pack), dispatched together, so that
        # the call thread goes from one to the next in one hop, without the loop in between.
        chunks = [
            positions[start : start + self.batch_size]
            for start in range(0, len(positions), self.batch_size)
        ]
        if not chunks:
            return outcomes
        for chunk in chunks:
            self.sizes[len(chunk)] += 1
        results = await self._dispatch(
            [as_batch([calls[i] for i in chunk], self.stacked) for chunk in chunks]
        )
        for chunk, result in zip(chunks, results, strict=True):
            await self._settle_batch(calls, chunk, result, outcomes)
        return outcomes

    async def run_formed(self, batches: Sequence[Invocation]) -> list[Outcome | None]:
        """Batches formed by the caller (a pack's stacked rows, sliced), dispatched
        together: one outcome per batch, its value the function's whole return."""
        for batch in batches:
            self.sizes[len(batch.args[0])] += 1
        return await self._dispatch(batches)

    async def settle_formed(
        self, calls: Sequence[Invocation], sizes: Sequence[int], results: Sequence[Outcome | None]
    ) -> list[Outcome | None]:
        """Each input's outcome from the outcome of the formed batch it was in (`calls` in
        batch order, `sizes[i]` inputs in batch i); a failed batch runs input by input."""
        outcomes: list[Outcome | None] = [None] * len(calls)
        start = 0
        for size, result in zip(sizes, results, strict=True):
            await self._settle_batch(calls, list(range(start, start + size)), result, outcomes)
            start += size
        return outcomes

    async def _settle_batch(
        self,
        calls: Sequence[Invocation],
        positions: list[int],
        result: Outcome | None,
        outcomes: list[Outcome | None],
    ) -> None:
        """Each input's outcome from its batch's; a failed batch is run input by input."""
        failed = result is not None and result.error is not None
        if failed and len(positions) > 1 and not self.poisoned:
            await self._run_alone(calls, positions, outcomes)
            return
        for offset, index in enumerate(positions):
            outcomes[index] = split_batch(result, offset, len(positions))

    async def _run_alone(
        self, calls: Sequence[Invocation], positions: list[int], outcomes: list[Outcome | None]
    ) -> None:
        """Run each input as a batch of its own, so that one bad input fails alone."""
        singles = [as_batch([calls[i]], self.stacked) for i in positions]
        results = await self._dispatch(singles)
        for index, result in zip(positions, results, strict=True):
            outcomes[index] = split_batch(result, 0, 1)

    async def _dispatch(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        return await (self._run_async(calls) if self.is_async else self._run_threads(calls))

    # -- async functions -------------------------------------------------------

    async def _run_async(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        if len(calls) == 1:
            async with self._limiter:
                return [await self._call_async(calls[0])]
        outcomes: list[Outcome | None] = [None] * len(calls)

        async def one(index: int, call: Invocation) -> None:
            async with self._limiter:
                outcomes[index] = await self._call_async(call)

        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(one, index, call)
        return outcomes

    async def _call_async(self, call: Invocation) -> Outcome:
        started = time.perf_counter()
        ctx = self.ctx.for_call(call.call_id, call.attempt, call.subject)
        CURRENT_CALL.set(call.call_id)  # this task's: what its prints are tagged with
        try:
            with anyio.fail_after(self.timeout_s):
                if call.sink is not None:
                    value = await call.sink.drain_async(self.fn(ctx, *call.args, **call.kwargs))
                else:
                    value = await self.fn(ctx, *call.args, **call.kwargs)
        except TimeoutError:
            return Outcome(error=timeout_error(self.timeout_s), run_ms=_ms(started))
        except MemoryError as exc:
            self.poisoned = True
            return Outcome(error=error_info(exc), run_ms=_ms(started))
        except Exception as exc:
            return Outcome(error=error_info(exc), run_ms=_ms(started))
        return Outcome(value=value, run_ms=_ms(started))

    # -- sync functions ----------------------------------------------------------

    async def _run_threads(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        if self.inline:
            return self._run_inline(calls)
        chunks = [list(range(i, len(calls), self.concurrency)) for i in range(self.concurrency)]
        outcomes: list[Outcome | None] = [None] * len(calls)

        async def chunk(indexes: list[int]) -> None:
            results = await self._run_chunk([calls[i] for i in indexes])
            for index, outcome in zip(indexes, results, strict=True):
                outcomes[index] = outcome

        if len(calls) == 1 or self.concurrency == 1:
            return await self._run_chunk(list(calls))
        async with anyio.create_task_group() as group:
            for indexes in chunks:
                if indexes:
                    group.start_soon(chunk, indexes)
        return outcomes

    async def _run_chunk(self, calls: list[Invocation]) -> list[Outcome | None]:
        """Run calls one after another in one thread hop, watched by `watch` for overruns."""
        with anyio.CancelScope() as scope:
            progress = _Progress(len(calls), scope)

            def work() -> None:
                for index, call in enumerate(calls):
                    if progress.abandoned or self.poisoned:
                        return  # handed back unrun
                    progress.current = (index, time.monotonic())
                    progress.outcomes[index] = self._call_sync(call)

            self._running.add(progress)
            try:
                await self._threads.submit(work)
            finally:
                progress.abandoned = True  # when cancelled: not to start, or not to go on
                self._running.discard(progress)
        if progress.overrun is not None:
            self.poisoned = True
            progress.outcomes[progress.overrun] = Outcome(error=timeout_error(self.timeout_s))
        self._learn(progress.outcomes)
        return progress.outcomes

    def _learn(self, outcomes: Sequence[Outcome | None]) -> None:
        """Track the run time; promote to inline runs after a streak of very fast calls."""
        for outcome in outcomes:
            fast = outcome is not None and outcome.run_ms < INLINE_MAX_MS
            self._fast_streak = self._fast_streak + 1 if fast else 0
            if outcome is not None:
                self._average_ms = 0.8 * self._average_ms + 0.2 * outcome.run_ms
        if self._inline_allowed and self._fast_streak >= INLINE_AFTER:
            self.inline = True
            self.ctx.log.info("calls run in under 0.5 ms: running them on the loop")

    def _run_inline(self, calls: Sequence[Invocation]) -> list[Outcome | None]:
        outcomes: list[Outcome | None] = []
        with self._alarm.around_calls():
            for call in calls:
                outcomes.append(self._call_inline(call))
                if self.poisoned:  # the rest go back: this worker is replaced
                    outcomes += [None] * (len(calls) - len(outcomes))
                    break
        return outcomes

    def _call_inline(self, call: Invocation) -> Outcome:
        """One call on the loop thread; SIGALRM (in a worker process) ends it at its timeout."""
        started = time.perf_counter()
        try:
            with self._alarm.deadline(self.timeout_s):
                outcome = self._call_sync(call)
        except CallOverran:
            self.poisoned = True  # what the interrupted code left behind is unknown
            self.inline = self._inline_allowed = False
            self.ctx.log.error("a call on the loop ran past its timeout; replacing this worker")
            return Outcome(error=timeout_error(self.timeout_s), run_ms=_ms(started))
        if outcome.run_ms > self.timeout_s * 1000:
            outcome = Outcome(error=timeout_error(self.timeout_s), run_ms=outcome.run_ms)
        if outcome.run_ms > INLINE_MAX_MS * 4:
            self.inline = self._inline_allowed = False
            self.ctx.log.info("a call ran long: back to threads", run_ms=outcome.run_ms)
        return outcome

    def _call_sync(self, call: Invocation) -> Outcome:
        started = time.perf_counter()
        ctx = self.ctx.for_call(call.call_id, call.attempt, call.subject)
        token = CURRENT_CALL.set(call.call_id)  # this thread's: what its prints are tagged with
        try:
            value = self.fn(ctx, *call.args, **call.kwargs)
            if call.sink is not None:
                value = call.sink.drain_sync(value)
        except MemoryError as exc:
            self.poisoned = True  # the heap is suspect: a fresh worker takes over
            return Outcome(error=error_info(exc), run_ms=_ms(started))
        except Exception as exc:
            return Outcome(error=error_info(exc), run_ms=_ms(started))
        finally:
            CURRENT_CALL.reset(token)
        return Outcome(value=value, run_ms=_ms(started))


def _batch_arity_error(function: str) -> ErrorInfo:
    return ErrorInfo(
        type="TypeError",
        message=f"{function} is batched: call it with exactly one positional input",
    )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
