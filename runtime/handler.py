"""Settling calls: decode each delivery, run it, then answer, retry or fail it.

Order for each call: record the result (spawned calls, first writer wins), publish
it to the caller, and only then ack. A failed attempt with attempts left is handed
back with its backoff delay; a refused artifact fails every call with the reason.
"""

from __future__ import annotations

import base64
import time
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
    PullFeed,
    Result,
    Success,
    UnencodableValue,
    decode_call,
    decode_value,
    dlq_subject,
    encode,
    encode_value,
)
from runtime.executor import Executor, Invocation, Outcome, error_info
from runtime.session import Session
from runtime.spec import FunctionSpec

__all__ = ["LOST_ATTEMPTS_ALLOWED", "CallHandler"]

# Deliveries beyond max_attempts tolerated for attempts lost with a dead worker.
LOST_ATTEMPTS_ALLOWED = 3


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
        # Carried by the first result only: how this worker came to be.
        self._cold_start_ms = cold_start_ms

    async def handle(
        self, batch: Sequence[Delivery], executor: Executor | None, broken: ErrorInfo | None
    ) -> None:
        runnable: list[tuple[Delivery, CallMsg, Invocation]] = []
        for delivery in batch:
            call = self._call_of(delivery)
            if broken is not None:
                await self._fail(delivery, call, broken, reason="rejected")
            elif delivery.num_delivered > self.spec.options.retries.max_attempts + (
                LOST_ATTEMPTS_ALLOWED
            ):
                await self._fail(delivery, call, _lost_error(delivery.num_delivered), "lost")
            elif self._expired(call):
                await self._fail(delivery, call, self._expired_error(call), reason="expired")
            elif delivery.num_delivered > 1 and await self._already_settled(call):
                await delivery.ack()  # redelivered after its result was recorded: done
            else:
                runnable.append((delivery, call, await self._invocation(delivery, call)))
        if runnable and executor is not None:
            await self._run(runnable, executor)

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

    async def _run(
        self, runnable: list[tuple[Delivery, CallMsg, Invocation]], executor: Executor
    ) -> None:
        deliveries = [delivery for delivery, _, _ in runnable]
        self.running.update(deliveries)
        try:
            outcomes = await executor.run([inv for _, _, inv in runnable])
        finally:
            self.running.difference_update(deliveries)
        for (delivery, call, _), outcome in zip(runnable, outcomes, strict=True):
            await self._settle(delivery, call, outcome)

    async def _invocation(self, delivery: Delivery, call: CallMsg) -> Invocation:
        args, kwargs = decode_value(await self.session.load(call.payload))
        return Invocation(
            call_id=call.call_id,
            attempt=delivery.num_delivered,
            args=tuple(args),
            kwargs=kwargs,
            subject=call.subject,
        )

    async def _settle(self, delivery: Delivery, call: CallMsg, outcome: Outcome | None) -> None:
        if outcome is None:
            await delivery.nak()
            return
        if outcome.error is not None:
            await self._failed_attempt(delivery, call, outcome.error)
            return
        emit = self.spec.options.emit
        try:
            data = encode_value(outcome.value)
            emitted = emitted_bytes(outcome.value) if emit else b""
        except UnencodableValue as exc:
            await self._fail(delivery, call, error_info(exc))
            return
        if emit:
            await self._emit(emit, call, emitted)
        result = Success(
            call_id=call.call_id,
            payload=await self.session.offload(f"results/{call.call_id}", data),
            worker=self.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=self._timings(call, outcome),
            cold_start_ms=self._take_cold_start(outcome),
        )
        await self._deliver(delivery, call, result)

    async def _emit(self, subject: str, call: CallMsg, data: bytes) -> None:
        headers = {"Autan-Call-Id": call.call_id, "Autan-Function": self.spec.qualname}
        await self.session.broker.publish(subject, data, headers=headers)

    def _timings(self, call: CallMsg, outcome: Outcome) -> dict[str, float]:
        timings = {"run": round(outcome.run_ms, 3)}
        if call.created_unix_s:
            timings["total"] = round((time.time() - call.created_unix_s) * 1000, 3)
        return timings

    def _take_cold_start(self, outcome: Outcome) -> dict[str, float]:
        if self._cold_start_ms is None:
            return {}
        phases = {**self._cold_start_ms, "first_run": round(outcome.run_ms, 3)}
        self._cold_start_ms = None
        self.log.info("first call served", **phases)
        return phases

    async def _failed_attempt(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        retries = self.spec.options.retries
        attempt = delivery.num_delivered
        if attempt < retries.max_attempts:
            delay_s = retries.delay_s(attempt)
            self.log.warning(
                "attempt failed; retrying",
                call_id=call.call_id,
                attempt=attempt,
                delay_s=delay_s,
                error=error.type,
            )
            await delivery.nak(delay_s)
            return
        await self._fail(delivery, call, error)

    async def _fail(
        self, delivery: Delivery, call: CallMsg, error: ErrorInfo, reason: str = "failed"
    ) -> None:
        """The call's last word: a Failure to its caller and a dead letter to keep."""
        self.log.warning(
            "call failed",
            call_id=call.call_id,
            reason=reason,
            error=error.type,
            message=error.message[:200],
        )
        result = Failure(
            call_id=call.call_id,
            error=error,
            worker=self.worker_id,
            attempts=delivery.num_delivered,
        )
        letter = DeadLetter(
            call_id=call.call_id,
            app=call.app,
            fn=call.fn,
            reason=reason,
            error=error,
            attempts=delivery.num_delivered,
            call=encode(call) if self.spec.options.on else delivery.data,
            worker=self.worker_id,
            failed_unix_s=time.time(),
        )
        await self._deliver(delivery, call, result, letter)

    async def _deliver(
        self, delivery: Delivery, call: CallMsg, result: Result, letter: DeadLetter | None = None
    ) -> None:
        """Record (first writer wins), dead-letter, reply, and only then ack."""
        data = encode(result)
        if call.record and not await self._record_first(call, data):
            await delivery.ack()
            return
        if letter is not None:
            broker = self.session.broker
            subject = dlq_subject(call.app, call.fn)
            stored = await broker.submit(subject, f"dlq-{call.call_id}", encode(letter))
            await stored.acked()
        if call.reply:
            await self.session.broker.publish(call.reply, data)
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
