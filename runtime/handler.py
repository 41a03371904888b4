"""Settling calls: decode each delivery, run it, then answer, retry or fail it.

Order for each call: record the result (spawned calls, first writer wins), publish
it to the caller, and only then ack. A failed attempt with attempts left is handed
back with its backoff delay; a refused artifact fails every call with the reason.

A pack (many calls in one message, from `.map()` on a batched function) runs as its
items and is answered once, when every item is final, with one result per item; an
item that fails for good gets a dead letter of its own that redrives it alone.
"""

from __future__ import annotations

import base64
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec

from broker import (
    RESULTS_BUCKET,
    CallMsg,
    DeadLetter,
    Delivery,
    ErrorInfo,
    Failure,
    Inline,
    KeyExists,
    KeyNotFound,
    PackResult,
    Payload,
    PullFeed,
    Result,
    RowList,
    Success,
    UnencodableValue,
    decode_call,
    decode_value,
    dlq_subject,
    encode,
    encode_value,
    item_call_id,
    rows,
)
from runtime.executor import Executor, Invocation, Outcome, error_info
from runtime.session import Session
from runtime.spec import FunctionSpec

__all__ = ["LOST_ATTEMPTS_ALLOWED", "CallHandler"]

# Deliveries beyond max_attempts tolerated for attempts lost with a dead worker.
LOST_ATTEMPTS_ALLOWED = 3
# Packs handed back for a retry whose finished items this worker keeps.
_PACKS_REMEMBERED = 256


class _Unit(msgspec.Struct):
    """One delivery to run: a call, or a pack of calls (`pack` holds their inputs)."""

    delivery: Delivery
    call: CallMsg
    invocations: list[Invocation]
    indexes: list[int]  # for a pack: the item of each invocation
    pack: list[Any] | None = None  # for a pack: every item's [args, kwargs]


class CallHandler:
    """Runs batches of deliveries of one function and settles each call."""

    def __init__(
        self,
        session: Session,
        spec: FunctionSpec,
        worker_id: str,
        log: Any,
        *,
        cold_start_ms: dict[str, float] | None = None,
    ) -> None:
        self.session = session
        self.spec = spec
        self.worker_id = worker_id
        self.log = log
        self.running: set[Delivery] = set()
        # Calls per delivery, averaged: 1 for single calls, up to max_size for packs.
        self.items_per_delivery = 1.0
        self._reported_items = 1.0  # as the last heartbeat told the scaler
        self.items_shifted = anyio.Event()  # set when that report is off by half or more
        # Carried by the first result only: how this worker came to be.
        self._cold_start_ms = cold_start_ms
        # Packs handed back for a retry: their items that succeeded, run again only elsewhere.
        self._pack_outcomes: OrderedDict[str, dict[int, Outcome]] = OrderedDict()

    async def handle(
        self, batch: Sequence[Delivery], executor: Executor | None, broken: ErrorInfo | None
    ) -> None:
        """Run and settle `batch` (a pack counts as its items in `items_per_delivery`)."""
        units: list[_Unit] = []
        calls = 0
        for delivery in batch:
            call = self._call_of(delivery)
            calls += max(1, call.items)
            refusal = self._refusal(delivery, call, broken)
            if refusal is not None:
                await self._refuse(delivery, call, *refusal)
            elif delivery.num_delivered > 1 and await self._already_settled(call):
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

    def _refusal(
        self, delivery: Delivery, call: CallMsg, broken: ErrorInfo | None
    ) -> tuple[ErrorInfo, str] | None:
        """Why a call must fail without running, if it must."""
        if broken is not None:
            return broken, "rejected"
        if delivery.num_delivered > self.spec.options.retries.max_attempts + (
            LOST_ATTEMPTS_ALLOWED
        ):
            return _lost_error(delivery.num_delivered), "lost"
        if self._expired(call):
            return self._expired_error(call), "expired"
        return None

    def _expired(self, call: CallMsg) -> bool:
        # Trigger events are exempt: replaying old events is deliberate.
        if self.spec.options.on or not call.created_unix_s:
            return False
        return time.time() - call.created_unix_s > self.spec.options.max_age_s

    def _expired_error(self, call: CallMsg) -> ErrorInfo:
        waited_s = time.time() - call.created_unix_s
        return ErrorInfo(
            type="CallExpired",
            message=f"the call waited {waited_s:.0f} s, past max_age_s="
            f"{self.spec.options.max_age_s:g}, before a worker could run it",
        )

    def _call_of(self, delivery: Delivery) -> CallMsg:
        """The call a delivery carries; a trigger's message is the one argument of a call."""
        if not self.spec.options.on:
            return decode_call(delivery.data)
        source = self.spec.source
        return CallMsg(
            call_id=f"{source.stream}-{delivery.stream_seq}",
            app=self.spec.app,
            fn=self.spec.name,
            payload=Inline(encode_value(((delivery.data,), {}))),
            created_unix_s=delivery.stored_unix_s,
            subject=delivery.subject,
        )

    async def keep_alive(self, feed: PullFeed) -> None:
        """Tell JetStream that calls held here (running or queued) are not lost, so that
        none is delivered again elsewhere while this worker still has it."""
        while True:
            await anyio.sleep(feed.ack_wait_s / 3)
            for delivery in [*self.running, *feed.held()]:
                await delivery.in_progress()

    async def _unit(self, delivery: Delivery, call: CallMsg) -> _Unit | None:
        """What to run for a delivery; None when it cannot be read (it is failed here)."""
        try:
            value = decode_value(await self.session.load(call.payload))
            items = _read_pack(value, call.items) if call.items else [value]
            invocations = [_invocation(call, delivery, i, item) for i, item in enumerate(items)]
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            error = ErrorInfo(type="MalformedCall", message=f"the call cannot be read: {exc}")
            await self._fail(delivery, call, error, reason="malformed")
            return None
        if not call.items:
            return _Unit(delivery, call, invocations, [0])
        done = self._pack_outcomes.get(call.call_id, {})
        indexes = [i for i in range(call.items) if i not in done]
        return _Unit(delivery, call, [invocations[i] for i in indexes], indexes, items)

    async def _run(self, units: list[_Unit], executor: Executor) -> None:
        """Run the units, a batch's worth at a time when batched, each group settled as soon
        as it is done (a pack need not wait for the packs taken after it)."""
        if not executor.batched or len(units) == 1:
            await self._run_group(units, executor)
            return
        groups: list[list[_Unit]] = [[]]
        calls = 0
        for unit in units:
            if calls >= executor.batch_size:
                groups.append([])
                calls = 0
            groups[-1].append(unit)
            calls += len(unit.invocations)
        async with anyio.create_task_group() as group:
            for units_of_group in groups:
                group.start_soon(self._run_group, units_of_group, executor)

    async def _run_group(self, units: list[_Unit], executor: Executor) -> None:
        deliveries = [unit.delivery for unit in units]
        self.running.update(deliveries)
        try:
            outcomes = await executor.run([inv for unit in units for inv in unit.invocations])
        finally:
            self.running.difference_update(deliveries)
        start = 0
        for unit in units:
            own = outcomes[start : start + len(unit.invocations)]
            start += len(unit.invocations)
            if unit.pack is None:
                await self._settle(unit.delivery, unit.call, own[0])
            else:
                await self._settle_pack(unit, own)

    async def _settle(self, delivery: Delivery, call: CallMsg, outcome: Outcome | None) -> None:
        if outcome is None:
            await delivery.nak()
            return
        if outcome.error is not None:
            await self._failed_attempt(delivery, call, outcome.error)
            return
        try:
            data = encode_value(outcome.value)
            emitted = self._emitted(outcome.value)
        except UnencodableValue as exc:
            await self._fail(delivery, call, error_info(exc))
            return
        await self._emit(call.call_id, emitted)
        result = Success(
            call_id=call.call_id,
            payload=await self.session.offload(f"results/{call.call_id}", data),
            worker=self.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=self._timings(call, outcome.run_ms),
            cold_start_ms=self._take_cold_start(outcome.run_ms),
        )
        await self._deliver(delivery, call, encode(result))

    def _emitted(self, value: Any) -> bytes | None:
        """What `emit=` publishes for a result (None without `emit`); UnencodableValue."""
        return emitted_bytes(value) if self.spec.options.emit else None

    async def _emit(self, call_id: str, data: bytes | None) -> None:
        subject = self.spec.options.emit
        if data is None or not subject:
            return
        headers = {"Autan-Call-Id": call_id, "Autan-Function": self.spec.qualname}
        await self.session.broker.publish(subject, data, headers=headers)

    def _timings(self, call: CallMsg, run_ms: float) -> dict[str, float]:
        timings = {"run": round(run_ms, 3)}
        if call.created_unix_s:
            timings["total"] = round((time.time() - call.created_unix_s) * 1000, 3)
        return timings

    def _take_cold_start(self, run_ms: float) -> dict[str, float]:
        if self._cold_start_ms is None:
            return {}
        phases = {**self._cold_start_ms, "first_run": round(run_ms, 3)}
        self._cold_start_ms = None
        self.log.info("first call served", **phases)
        return phases

    async def _failed_attempt(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        if await self._retry(delivery, call, error):
            return
        await self._fail(delivery, call, error)

    async def _retry(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> bool:
        """Hand the call back for another attempt after its backoff, if it has one left."""
        retries = self.spec.options.retries
        attempt = delivery.num_delivered
        if attempt >= retries.max_attempts:
            return False
        delay_s = retries.delay_s(attempt)
        self.log.warning(
            "attempt failed; retrying",
            call_id=call.call_id,
            attempt=attempt,
            delay_s=delay_s,
            error=error.type,
        )
        await delivery.nak(delay_s)
        return True

    async def _fail(
        self, delivery: Delivery, call: CallMsg, error: ErrorInfo, reason: str = "failed"
    ) -> None:
        """The call's last word: a Failure to its caller and a dead letter to keep."""
        _log_failure(self.log, call.call_id, reason, error)
        if call.items:  # a pack that cannot be read: one letter for the whole message
            result: PackResult | Failure = PackResult(
                call_id=call.call_id,
                items=[],
                worker=self.worker_id,
                attempts=delivery.num_delivered,
                error=error,
            )
        else:
            result = Failure(
                call_id=call.call_id,
                error=error,
                worker=self.worker_id,
                attempts=delivery.num_delivered,
            )
        call_bytes = encode(call) if self.spec.options.on else delivery.data
        letter = self._letter(call, call.call_id, call_bytes, error, reason, delivery)
        await self._deliver(delivery, call, encode(result), [letter])

    def _letter(
        self,
        call: CallMsg,
        call_id: str,
        call_bytes: bytes,
        error: ErrorInfo,
        reason: str,
        delivery: Delivery,
    ) -> DeadLetter:
        return DeadLetter(
            call_id=call_id,
            app=call.app,
            fn=call.fn,
            reason=reason,
            error=error,
            attempts=delivery.num_delivered,
            call=call_bytes,
            worker=self.worker_id,
            failed_unix_s=time.time(),
        )

    async def _refuse(
        self, delivery: Delivery, call: CallMsg, error: ErrorInfo, reason: str
    ) -> None:
        """Fail a call, or every item of a pack, without running it."""
        if not call.items:
            await self._fail(delivery, call, error, reason)
            return
        try:
            items = _read_pack(decode_value(await self.session.load(call.payload)), call.items)
        except (msgspec.DecodeError, TypeError, ValueError):
            await self._fail(delivery, call, error, reason)
            return
        failed = {i: error for i in range(call.items)}
        await self._finish_pack(delivery, call, items, {}, failed, reason)

    # -- packs -----------------------------------------------------------------

    async def _settle_pack(self, unit: _Unit, outcomes: Sequence[Outcome | None]) -> None:
        """Answer a pack once every item is final; else hand it back, keeping its successes.

        An item that failed with attempts left sends the whole pack back after the
        backoff (JetStream redelivers messages, not items); the items that succeeded
        are kept here and not run again if the pack returns to this worker.
        """
        delivery, call = unit.delivery, unit.call
        done = self._pack_outcomes.pop(call.call_id, {})
        failed: dict[int, ErrorInfo] = {}
        unrun = False
        for index, outcome in zip(unit.indexes, outcomes, strict=True):
            if outcome is None:
                unrun = True
            elif outcome.error is not None:
                failed[index] = outcome.error
            else:
                done[index] = outcome
        if unrun or (failed and await self._retry(delivery, call, next(iter(failed.values())))):
            if unrun:
                await delivery.nak()
            self._remember(call.call_id, done)
            return
        assert unit.pack is not None
        await self._finish_pack(delivery, call, unit.pack, done, failed, "failed")

    def _remember(self, pack_id: str, done: dict[int, Outcome]) -> None:
        self._pack_outcomes[pack_id] = done
        while len(self._pack_outcomes) > _PACKS_REMEMBERED:
            self._pack_outcomes.popitem(last=False)

    async def _finish_pack(
        self,
        delivery: Delivery,
        call: CallMsg,
        items: list[Any],
        done: dict[int, Outcome],
        failed: dict[int, ErrorInfo],
        reason: str,
    ) -> None:
        """One result per item (dead letters for those that failed), then the pack's answer."""
        run_ms = sum(outcome.run_ms for outcome in done.values()) / max(1, len(done))
        if not failed and await self._finish_all_done(delivery, call, done, run_ms):
            return
        encoded: dict[int, bytes] = {}
        for index, outcome in done.items():
            try:
                encoded[index] = encode_value(outcome.value)
                emitted = self._emitted(outcome.value)
            except UnencodableValue as exc:
                failed[index] = error_info(exc)
                encoded.pop(index, None)
                continue
            await self._emit(item_call_id(call.call_id, index), emitted)
        limit = self.session.settings.payload_threshold_bytes // max(1, call.items)
        results: list[Result] = []
        letters: list[DeadLetter] = []
        for index in range(call.items):
            item_id = item_call_id(call.call_id, index)
            if index in encoded:
                payload = await self.session.offload(f"results/{item_id}", encoded[index], limit)
                results.append(Success(item_id, payload, attempts=delivery.num_delivered))
                continue
            error = failed[index]
            _log_failure(self.log, item_id, reason, error)
            results.append(Failure(item_id, error, attempts=delivery.num_delivered))
            item_call = await self._item_call(call, item_id, items[index])
            letters.append(self._letter(call, item_id, item_call, error, reason, delivery))
        answer = self._pack_answer(delivery, call, run_ms, items=results)
        await self._deliver(delivery, call, encode(answer), letters)

    async def _finish_all_done(
        self, delivery: Delivery, call: CallMsg, done: dict[int, Outcome], run_ms: float
    ) -> bool:
        """Answer a pack whose every item succeeded with its values in one list.

        False when a value cannot travel: the caller then answers item by item, failing
        just those items.
        """
        values = [done[index].value for index in range(call.items)]
        try:
            data = encode_value(rows(values))
            emitted = [self._emitted(value) for value in values] if self.spec.options.emit else []
        except UnencodableValue:
            return False
        for index, payload in enumerate(emitted):
            await self._emit(item_call_id(call.call_id, index), payload)
        stored = await self.session.offload(f"results/{call.call_id}", data)
        answer = self._pack_answer(delivery, call, run_ms, values=stored)
        await self._deliver(delivery, call, encode(answer))
        return True

    def _pack_answer(
        self,
        delivery: Delivery,
        call: CallMsg,
        run_ms: float,
        *,
        items: list[Result] | None = None,
        values: Payload | None = None,
    ) -> PackResult:
        return PackResult(
            call_id=call.call_id,
            items=items or [],
            values=values,
            worker=self.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=self._timings(call, run_ms),
            cold_start_ms=self._take_cold_start(run_ms),
        )

    async def _item_call(self, call: CallMsg, item_id: str, item: Any) -> bytes:
        """A pack's item as a call of its own (for its dead letter: redrive runs it alone)."""
        payload = await self.session.offload(f"payloads/{item_id}", encode_value(item))
        single = msgspec.structs.replace(
            call, call_id=item_id, payload=payload, reply=None, record=True, items=0
        )
        return encode(single)

    # -- answers -----------------------------------------------------------------

    async def _deliver(
        self,
        delivery: Delivery,
        call: CallMsg,
        data: bytes,
        letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Record (first writer wins), dead-letter, reply, and only then ack."""
        if call.record and not await self._record_first(call, data):
            await delivery.ack()
            return
        broker = self.session.broker
        for letter in letters:
            subject = dlq_subject(letter.app, letter.fn)
            stored = await broker.submit(subject, f"dlq-{letter.call_id}", encode(letter))
            await stored.acked()
        if call.reply:
            await broker.publish(call.reply, data)
        await delivery.ack()

    async def _already_settled(self, call: CallMsg) -> bool:
        """A redelivered spawned call whose result is recorded (its ack was lost)."""
        if not call.record:
            return False
        bucket = await self.session.broker.bucket(
            RESULTS_BUCKET, ttl_s=self.session.settings.result_ttl_s
        )
        try:
            await bucket.get(call.call_id)
        except KeyNotFound:
            return False
        self.log.info("redelivered call already has a result; not run again", call_id=call.call_id)
        return True

    async def _record_first(self, call: CallMsg, data: bytes) -> bool:
        """Record the result unless one is recorded already (a late or duplicate attempt)."""
        bucket = await self.session.broker.bucket(
            RESULTS_BUCKET, ttl_s=self.session.settings.result_ttl_s
        )
        try:
            await bucket.create(call.call_id, data)
        except KeyExists:
            self.log.info("result already recorded; this one is dropped", call_id=call.call_id)
            return False
        return True


def _invocation(call: CallMsg, delivery: Delivery, index: int, item: Any) -> Invocation:
    args, kwargs = item
    return Invocation(
        call_id=item_call_id(call.call_id, index) if call.items else call.call_id,
        attempt=delivery.num_delivered,
        args=tuple(args),
        kwargs=kwargs,
        subject=call.subject,
    )


def _read_pack(value: Any, items: int) -> list[Any]:
    """A pack's list of `[args, kwargs]`, checked against the count its message gives.

    Arrays that travelled stacked (a RowList) are each the one argument of an item.
    """
    if isinstance(value, RowList) and len(value) == items:
        return [((row,), {}) for row in value]
    if not isinstance(value, list) or len(value) != items:
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise ValueError(f"a pack of {items} calls holds {got} items")
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict)):
            raise ValueError("each item of a pack must be [args, kwargs]")
    return value


def _log_failure(log: Any, call_id: str, reason: str, error: ErrorInfo) -> None:
    log.warning(
        "call failed",
        call_id=call_id,
        reason=reason,
        error=error.type,
        message=error.message[:200],
    )


def _lost_error(deliveries: int) -> ErrorInfo:
    return ErrorInfo(
        type="WorkerLost",
        message=f"the call was delivered {deliveries} times and no worker finished it "
        "(workers crashed or were killed while running it)",
    )


def emitted_bytes(value: Any) -> bytes:
    """What `emit` publishes for a result: bytes as they are, str as UTF-8, others as JSON.

    So the next function in a chain (`on=` the same subject) receives plain bytes.
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    try:
        return msgspec.json.encode(value, enc_hook=_to_json)
    except (TypeError, NotImplementedError) as exc:
        raise UnencodableValue(f"cannot emit the result as JSON: {exc}") from exc


def _to_json(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise NotImplementedError(f"cannot emit a value of type {type(value).__qualname__}")
