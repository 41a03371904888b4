"""Running batches of deliveries: read each call, run what may run, settle every call.

`BatchHandler.handle` takes what the feed delivered: calls that must not run are
failed at once (`intake.refusal`), redelivered calls whose result is recorded are
acked, and the rest run on the executor, a batch's worth at a time. Each call is then
settled by `Answers` (single calls) or `PackSettler` (packs).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from broker import CallMsg, Delivery, ErrorInfo, PullFeed, RowList, decode_value
from runtime.core import FunctionSpec, Link
from runtime.worker.answers import Answers
from runtime.worker.executor import Executor
from runtime.worker.intake import UNREADABLE, Unit, read_call, read_inputs, read_pack, refusal
from runtime.worker.invocations import Outcome
from runtime.worker.packs import PackSettler
from runtime.worker.stats import CallStats
from runtime.worker.streams import Sink, Streams
from runtime.worker.wholepacks import form_batches, joined

__all__ = ["BatchHandler"]


class BatchHandler:
    """Runs batches of deliveries of one function and settles each call."""

    def __init__(
        self,
        link: Link,
        spec: FunctionSpec,
        worker_id: str,
        log: Any,
        *,
        cold_start_ms: dict[str, float] | None = None,
    ) -> None:
        self.link = link
        self.spec = spec
        self.log = log
        self.answers = Answers(link, spec, worker_id, log, cold_start_ms=cold_start_ms)
        self.packs = PackSettler(link, self.answers)
        self.streams = Streams(link, spec)
        self.running: set[Delivery] = set()
        # Calls per delivery, averaged: 1 for single calls, up to max_size for packs.
        self.items_per_delivery = 1.0
        self._reported_items = 1.0  # as the last heartbeat told the scaler
        self.items_shifted = anyio.Event()  # set when that report is off by half or more
        self.outdated = False  # a caller saw a newer deploy: this worker hands over
        self.stats = CallStats()  # reported in heartbeats: the per-function metrics

    async def handle(
        self, batch: Sequence[Delivery], executor: Executor | None, broken: ErrorInfo | None
    ) -> None:
        """Run and settle `batch` (a pack counts as its items in `items_per_delivery`)."""
        units: list[Unit] = []
        calls = 0
        for delivery in batch:
            call = await self._read(delivery)
            if call is None:
                continue
            calls += max(1, call.items)
            refused = refusal(self.spec, delivery, call, broken)
            if call.sequence > self.spec.sequence:
                await self._hand_over(delivery, call)
            elif refused is not None:
                await self._refuse(delivery, call, *refused)
            elif delivery.num_delivered > 1 and await self.answers.already_settled(call):
                await delivery.ack()  # redelivered after its result was recorded: done
            else:
                unit = await self._unit(delivery, call)
                if unit is not None:
                    units.append(unit)
        self.items_per_delivery = 0.8 * self.items_per_delivery + 0.2 * calls / max(1, len(batch))
        ratio = self.items_per_delivery / self._reported_items
        if not 2 / 3 < ratio < 3 / 2:
            self.items_shifted.set()
        if units and executor is not None:
            await self._run(units, executor)

    def report_items_per_delivery(self) -> float:
        """The average to tell the scaler now; `items_shifted` is set again once it moves
        by half or more from this."""
        self._reported_items = self.items_per_delivery
        self.items_shifted = anyio.Event()
        return round(self.items_per_delivery, 2)

    async def keep_alive(self, feed: PullFeed) -> None:
        """Tell JetStream that calls held here (running or queued) are not lost, so that
        none is delivered again elsewhere while this worker still has it."""
        while True:
            await anyio.sleep(feed.ack_wait_s / 3)
            for delivery in [*self.running, *feed.held()]:
                await delivery.in_progress()

    async def _hand_over(self, delivery: Delivery, call: CallMsg) -> None:
        """A call made after a newer deploy than this worker's: back to the queue at once,
        for a worker of that version (this one stops pulling and ends)."""
        if not self.outdated:
            self.outdated = True
            self.log.info("a newer version was deployed; handing over", call_id=call.call_id,
                          deploy=call.sequence, own=self.spec.sequence)  # fmt: skip
        await delivery.nak()

    async def _read(self, delivery: Delivery) -> CallMsg | None:
        """The call a delivery carries; None when it is no call of this function (garbage,
        wrong types, another function's name): dead-lettered at once, never retried."""
        try:
            call = read_call(self.spec, delivery)
        except UNREADABLE as exc:
            reason = f"the message is not a call ({exc})"
        else:
            if (call.app, call.fn) == (self.spec.app, self.spec.name):
                return call
            reason = f"a call of {call.app}.{call.fn} on the subject of {self.spec.qualname}"
        error = ErrorInfo(type="MalformedCall", message=f"{reason}; it was not run")
        await self.answers.unreadable(delivery, error)
        return None

    async def _unit(self, delivery: Delivery, call: CallMsg) -> Unit | None:
        """What to run for a delivery; None when it cannot be read (it is failed here)."""
        try:
            value = decode_value(await self.link.load(call.payload))
            done = self.packs.finished(call.call_id) if call.items else {}
            if self._whole(call, value, done):
                return Unit(delivery, call, [], [], value, rows=value.array)
            invocations, indexes, pack = read_inputs(call, delivery, value, done)
        except UNREADABLE as exc:
            error = ErrorInfo(type="MalformedCall", message=f"the call cannot be read: {exc}")
            await self.answers.fail(delivery, call, error, reason="malformed")
            return None
        if self.spec.options.streams and pack is None:
            sink = await self.streams.open(call)
            invocations = [msgspec.structs.replace(invocations[0], sink=sink)]
        return Unit(delivery, call, invocations, indexes, pack)

    def _whole(self, call: CallMsg, value: Any, done: dict[int, Outcome]) -> bool:
        """Whether a pack runs whole (`wholepacks`): stacked rows, a batch or more of them,
        none run before, and no result to emit one by one."""
        batching = self.spec.options.batching
        return (
            batching is not None
            and isinstance(value, RowList)
            and len(value) == call.items >= batching.max_size
            and not done
            and not self.spec.options.emit
        )

    async def _refuse(
        self, delivery: Delivery, call: CallMsg, error: ErrorInfo, reason: str
    ) -> None:
        """Fail a call, or every item of a pack, without running it."""
        if not call.items:
            await self.answers.fail(delivery, call, error, reason)
            return
        try:
            items = read_pack(decode_value(await self.link.load(call.payload)), call.items)
        except UNREADABLE:
            await self.answers.fail(delivery, call, error, reason)
            return
        await self.packs.refuse(delivery, call, items, error, reason)

    async def _run(self, units: list[Unit], executor: Executor) -> None:
        """Run the units, a batch's worth at a time when batched, each group settled as soon
        as it is done (a pack need not wait for the packs taken after it)."""
        if not executor.batched or len(units) == 1:
            await self._run_group(units, executor)
            return
        groups: list[list[Unit]] = [[unit] for unit in units if unit.rows is not None]
        pending: list[Unit] = []
        calls = 0
        for unit in units:
            if unit.rows is not None:
                continue
            if calls >= executor.batch_size:
                groups.append(pending)
                pending, calls = [], 0
            pending.append(unit)
            calls += len(unit.invocations)
        if pending:
            groups.append(pending)
        async with anyio.create_task_group() as group:
            for units_of_group in groups:
                group.start_soon(self._run_group, units_of_group, executor)

    async def _run_group(self, units: list[Unit], executor: Executor) -> None:
        if units[0].rows is not None:
            await self._run_whole(units[0], executor)
            return
        deliveries = [unit.delivery for unit in units]
        self.running.update(deliveries)
        try:
            outcomes = await executor.run([inv for unit in units for inv in unit.invocations])
        finally:
            self.running.difference_update(deliveries)
        start, now = 0, time.time()
        for unit in units:
            own = outcomes[start : start + len(unit.invocations)]
            start += len(unit.invocations)
            for outcome in own:
                if outcome is not None:
                    self.stats.record(outcome, unit.call.created_unix_s, now)
            if unit.pack is None:
                await self._settle(unit.delivery, unit.call, own[0], unit.invocations[0].sink)
            else:
                await self.packs.settle(unit, own)

    async def _run_whole(self, unit: Unit, executor: Executor) -> None:
        """A pack of stacked rows, run as slices of them and answered with the batches'
        outputs joined; item by item when that cannot be (`wholepacks`)."""
        delivery, call = unit.delivery, unit.call
        batches = form_batches(call, delivery, unit.rows, executor.batch_size, executor.stacked)
        sizes = [len(batch.args[0]) for batch in batches]
        self.running.add(delivery)
        try:
            results = await executor.run_formed(batches)
        finally:
            self.running.discard(delivery)
        now = time.time()
        values = joined(results, sizes)
        run_ms = sum(r.run_ms for r in results if r is not None) / len(results)
        if values is not None and await self.packs.finish_whole(delivery, call, values, run_ms):
            for result, size in zip(results, sizes, strict=True):
                assert result is not None
                self.stats.record(result, call.created_unix_s, now, count=size)
            return
        # Item by item, from the inputs as they came (the function may have changed its batch).
        pack = decode_value(await self.link.load(call.payload))
        invocations, indexes, items = read_inputs(call, delivery, pack, {})
        outcomes = await executor.settle_formed(invocations, sizes, results)
        for outcome in outcomes:
            if outcome is not None:
                self.stats.record(outcome, call.created_unix_s, now)
        await self.packs.settle(Unit(delivery, call, invocations, indexes, items), outcomes)

    async def _settle(
        self, delivery: Delivery, call: CallMsg, outcome: Outcome | None, sink: Sink | None
    ) -> None:
        if sink is not None:
            self.streams.close(sink)
        if outcome is None:
            await delivery.nak()
            return
        if outcome.error is not None and sink is not None and sink.cancelled:
            await self.answers.cancelled(delivery, call, outcome.error)
        elif outcome.error is not None and sink is not None and sink.sent:
            await self.answers.fail(delivery, call, outcome.error)  # items went out: no retry
        elif outcome.error is not None:
            await self.answers.failed_attempt(delivery, call, outcome.error)
        else:
            await self.answers.success(delivery, call, outcome)
