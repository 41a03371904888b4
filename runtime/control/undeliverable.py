"""Calls JetStream gave up on become dead letters: nothing accepted stays unanswered.

Every function's consumer has a bound on deliveries (`FunctionOptions.max_deliveries`),
two beyond the point where a worker itself fails a call as lost. A message that reaches
it is one no worker could settle: it crashed the workers that took it, or none could read
it. The server stops delivering it and says so in an advisory; `Undeliverable` keeps it
as a dead letter (reason `undeliverable`), tells its caller (a live reply, and the results
bucket for a spawned call), and removes it from the calls stream. Trigger events stay in
their stream (it keeps events for replay); their consumer has moved past them.
"""

from __future__ import annotations

import time

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import (
    BrokerUnavailable,
    CallMsg,
    DeadLetter,
    ErrorInfo,
    Failure,
    KeyExists,
    PackResult,
    StoredMessage,
    Undelivered,
    decode_call,
    dlq_subject,
    encode,
)
from runtime.core import FunctionSpec, Link

__all__ = ["Undeliverable"]

log = structlog.get_logger("autan.scaler")

_WORKER = "control-plane"


class Undeliverable:
    """Listens for MAX_DELIVERIES advisories and settles each such call as failed."""

    def __init__(self, link: Link) -> None:
        self.link = link

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        feed = await self.link.broker.undelivered()
        task_status.started()
        try:
            while True:
                stuck = await feed.next()
                try:
                    await self.settle(stuck)
                except BrokerUnavailable as exc:
                    log.warning("cannot dead-letter an undeliverable call", error=str(exc),
                                stream=stuck.stream, seq=stuck.stream_seq)  # fmt: skip
        finally:
            with anyio.CancelScope(shield=True):
                await feed.close()

    async def settle(self, stuck: Undelivered) -> None:
        """Dead-letter the message `stuck` names, answer its caller, remove it."""
        spec = await self._spec(stuck)
        stored = await self.link.broker.stored_message(stuck.stream, stuck.stream_seq)
        if spec is None or stored is None:
            return  # not one of ours, or settled meanwhile
        call = _call(spec, stored)
        error = ErrorInfo(
            type="Undeliverable",
            message=f"JetStream delivered the call {stuck.deliveries} times and no worker "
            "settled it (workers crashed on it, or could not read it); it was not retried",
        )
        letter = DeadLetter(
            call_id=call.call_id if call else f"{stuck.stream}-{stuck.stream_seq}",
            app=spec.app,
            fn=spec.name,
            reason="undeliverable",
            error=error,
            attempts=stuck.deliveries,
            call=stored.data,
            worker=_WORKER,
            failed_unix_s=time.time(),
        )
        log.warning("call undeliverable; dead-lettered", function=spec.qualname,
                    call_id=letter.call_id, deliveries=stuck.deliveries)  # fmt: skip
        submitted = await self.link.broker.submit(
            dlq_subject(spec.app, spec.name), f"dlq-{letter.call_id}", encode(letter)
        )
        await submitted.acked()
        if call is not None:
            await self._answer(call, error)
        if spec.trigger is None:
            await self.link.broker.delete_message(stuck.stream, stuck.stream_seq)

    async def _spec(self, stuck: Undelivered) -> FunctionSpec | None:
        for spec in await self.link.registry.all():
            if (spec.source.stream, spec.source.consumer) == (stuck.stream, stuck.consumer):
                return spec
        return None

    async def _answer(self, call: CallMsg, error: ErrorInfo) -> None:
        """The caller's Failure: recorded for a spawned call (first writer wins), published
        to a live caller's inbox."""
        answer: Failure | PackResult = (
            PackResult(call_id=call.call_id, error=error, worker=_WORKER)
            if call.items
            else Failure(call_id=call.call_id, error=error, worker=_WORKER)
        )
        failure = encode(answer)
        if call.record:
            try:
                await (await self.link.results()).create(call.call_id, failure)
            except KeyExists:
                return  # a worker did settle it, after all
        if call.reply:
            await self.link.broker.publish(call.reply, failure)


def _call(spec: FunctionSpec, stored: StoredMessage) -> CallMsg | None:
    """The call the message holds, when it is one of this function's."""
    if spec.trigger is not None:
        return None  # an event: nobody waits for it
    try:
        call = decode_call(stored.data)
    except (msgspec.DecodeError, TypeError, ValueError):
        return None
    return call if (call.app, call.fn) == (spec.app, spec.name) else None
