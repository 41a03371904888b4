"""The last steps of a call: record, dead-letter, reply, emit, and only then ack.

Order for each call: record the result (spawned calls, first writer wins), store its
dead letters, publish it to the caller, and only then ack. A failed attempt with
attempts left is handed back with its backoff delay; the last one gets a `Failure`
for its caller and a dead letter to keep.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from broker import (
    CallMsg,
    DeadLetter,
    Delivery,
    ErrorInfo,
    Failure,
    KeyExists,
    KeyNotFound,
    PackResult,
    Success,
    UnencodableValue,
    dlq_subject,
    encode,
    encode_value,
    items_subject,
)
from runtime.core import FunctionSpec, Link
from runtime.worker.invocations import Outcome, error_info

__all__ = ["Answers", "emitted_bytes", "log_failure"]


class Answers:
    """Settles calls of one function: its results, failures, retries and dead letters."""

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
        self.worker_id = worker_id
        self.log = log
        # Carried by the first result only: how this worker came to be.
        self._cold_start_ms = cold_start_ms

    async def success(self, delivery: Delivery, call: CallMsg, outcome: Outcome) -> None:
        """Answer a call that ran: its value, or a failure when the value cannot travel."""
        try:
            data = encode_value(outcome.value)
            emitted = self.emitted(outcome.value)
        except UnencodableValue as exc:
            await self.fail(delivery, call, error_info(exc))
            return
        await self.emit(call.call_id, emitted)
        result = Success(
            call_id=call.call_id,
            payload=await self.link.offload(f"results/{call.call_id}", data),
            worker=self.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=self.timings(call, outcome.run_ms),
            cold_start_ms=self.take_cold_start(outcome.run_ms),
        )
        await self.deliver(delivery, call, encode(result))

    async def failed_attempt(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        if await self.retry(delivery, call, error):
            return
        await self.fail(delivery, call, error)

    async def retry(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> bool:
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

    async def fail(
        self, delivery: Delivery, call: CallMsg, error: ErrorInfo, reason: str = "failed"
    ) -> None:
        """The call's last word: a Failure to its caller and a dead letter to keep."""
        log_failure(self.log, call.call_id, reason, error)
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
        letter = self.letter(call, call.call_id, call_bytes, error, reason, delivery)
        await self.deliver(delivery, call, encode(result), [letter])

    async def cancelled(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        """A streamed call its caller stopped reading: settled, with no dead letter (the
        caller asked for it)."""
        self.log.info("streamed call cancelled by its caller", call_id=call.call_id)
        result = Failure(
            call_id=call.call_id, error=error, worker=self.worker_id,
            attempts=delivery.num_delivered,
        )  # fmt: skip
        await self.deliver(delivery, call, encode(result))

    async def unreadable(self, delivery: Delivery, error: ErrorInfo) -> None:
        """A message that is no call of this function: kept as it came, as a dead letter
        (named by its stream sequence), then acked. Nobody can be told: it names no inbox."""
        call_id = f"{self.spec.source.stream}-{delivery.stream_seq}"
        log_failure(self.log, call_id, "malformed", error)
        letter = DeadLetter(
            call_id=call_id,
            app=self.spec.app,
            fn=self.spec.name,
            reason="malformed",
            error=error,
            attempts=delivery.num_delivered,
            call=delivery.data,
            worker=self.worker_id,
            failed_unix_s=time.time(),
        )
        stored = await self.link.broker.submit(
            dlq_subject(letter.app, letter.fn), f"dlq-{call_id}", encode(letter)
        )
        await stored.acked()
        await delivery.ack()

    def letter(
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

    # -- what goes out -------------------------------------------------------------------

    async def deliver(
        self,
        delivery: Delivery,
        call: CallMsg,
        data: bytes,
        letters: Sequence[DeadLetter] = (),
    ) -> None:
        """Record (first writer wins), dead-letter, reply, and only then ack.

        A call both recorded and answered live (the HTTP bridge's sync call) is answered
        first and recorded meanwhile (ack after both): its caller does not wait for the
        record's round trip. Its live answer and its record then differ only if it ran
        twice with different results, as two live answers of a `.remote()` call may (the
        caller keeps the first)."""
        if call.record and self.spec.options.streams:  # its readers' end, after its items
            subject = items_subject(call.app, call.fn, call.call_id)
            await self.link.broker.items.keep(subject, f"{call.call_id}-end", data)
        if call.record and call.reply and not letters and not self.spec.options.streams:
            await self.link.broker.publish(call.reply, data)
            await self._record_first(call, data)
            await delivery.ack()
            return
        if call.record and not await self._record_first(call, data):
            await delivery.ack()
            return
        broker = self.link.broker
        for letter in letters:
            subject = dlq_subject(letter.app, letter.fn)
            stored = await broker.submit(subject, f"dlq-{letter.call_id}", encode(letter))
            await stored.acked()
        if call.reply:
            await broker.publish(call.reply, data)
        await delivery.ack()

    def emitted(self, value: Any) -> bytes | None:
        """What `emit=` publishes for a result (None without `emit`); UnencodableValue."""
        return emitted_bytes(value) if self.spec.options.emit else None

    async def emit(self, call_id: str, data: bytes | None) -> None:
        subject = self.spec.options.emit
        if data is None or not subject:
            return
        headers = {"Autan-Call-Id": call_id, "Autan-Function": self.spec.qualname}
        await self.link.broker.publish(subject, data, headers=headers)

    def timings(self, call: CallMsg, run_ms: float) -> dict[str, float]:
        timings = {"run": round(run_ms, 3)}
        if call.created_unix_s:
            timings["total"] = round((time.time() - call.created_unix_s) * 1000, 3)
        return timings

    def take_cold_start(self, run_ms: float) -> dict[str, float]:
        """The worker's cold-start phases, for its first result only."""
        if self._cold_start_ms is None:
            return {}
        phases = {**self._cold_start_ms, "first_run": round(run_ms, 3)}
        self._cold_start_ms = None
        self.log.info("first call served", **phases)
        return phases

    # -- the results bucket ------------------------------------------------------------

    async def already_settled(self, call: CallMsg) -> bool:
        """A redelivered spawned call whose result is recorded (its ack was lost)."""
        if not call.record:
            return False
        try:
            await (await self.link.results()).get(call.call_id)
        except KeyNotFound:
            return False
        self.log.info("redelivered call already has a result; not run again", call_id=call.call_id)
        return True

    async def _record_first(self, call: CallMsg, data: bytes) -> bool:
        """Record the result unless one is recorded already (a late or duplicate attempt)."""
        try:
            await (await self.link.results()).create(call.call_id, data)
        except KeyExists:
            self.log.info("result already recorded; this one is dropped", call_id=call.call_id)
            return False
        return True


def log_failure(log: Any, call_id: str, reason: str, error: ErrorInfo) -> None:
    log.warning(
        "call failed",
        call_id=call_id,
        reason=reason,
        error=error.type,
        message=error.message[:200],
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
