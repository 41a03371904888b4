"""Settling packs: many calls in one message, answered once, each item a call of its own.

A pack (from `.map()` on a batched function, or `.remote()` calls made at once) runs as
its items and is answered once, when every item is final, with one `PackResult`. An
item that failed with attempts left sends the whole pack back after its backoff
(JetStream redelivers messages, not items); the items that succeeded are kept here and
not run again if the pack returns to this worker. An item that fails for good gets a
dead letter of its own that redrives it alone.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from broker import (
    CallMsg,
    DeadLetter,
    Delivery,
    ErrorInfo,
    Failure,
    PackResult,
    Payload,
    Result,
    Success,
    UnencodableValue,
    encode,
    encode_value,
    item_call_id,
    rows,
)
from runtime.core import Link
from runtime.worker.answers import Answers, log_failure
from runtime.worker.intake import Unit
from runtime.worker.invocations import Outcome, error_info

__all__ = ["PackSettler"]

# Packs handed back for a retry whose finished items this worker keeps.
_PACKS_REMEMBERED = 256


class PackSettler:
    """Answers the packs of one function, remembering the finished items of retried ones."""

    def __init__(self, link: Link, answers: Answers) -> None:
        self.link = link
        self.answers = answers
        # Packs handed back for a retry: their items that succeeded, run again only elsewhere.
        self._outcomes: OrderedDict[str, dict[int, Outcome]] = OrderedDict()

    def finished(self, pack_id: str) -> dict[int, Outcome]:
        """The items of a pack this worker ran to success before it was handed back."""
        return self._outcomes.get(pack_id, {})

    async def settle(self, unit: Unit, outcomes: Sequence[Outcome | None]) -> None:
        """Answer a pack once every item is final; else hand it back, keeping its successes."""
        delivery, call = unit.delivery, unit.call
        done = self._outcomes.pop(call.call_id, {})
        failed: dict[int, ErrorInfo] = {}
        unrun = False
        for index, outcome in zip(unit.indexes, outcomes, strict=True):
            if outcome is None:
                unrun = True
            elif outcome.error is not None:
                failed[index] = outcome.error
            else:
                done[index] = outcome
        first_error = next(iter(failed.values()), None)
        if unrun or (first_error and await self.answers.retry(delivery, call, first_error)):
            if unrun:
                await delivery.nak()
            self._remember(call.call_id, done)
            return
        assert unit.pack is not None
        await self.finish(delivery, call, unit.pack, done, failed, "failed")

    async def refuse(
        self, delivery: Delivery, call: CallMsg, items: list[Any], error: ErrorInfo, reason: str
    ) -> None:
        """Fail every item of a pack without running it."""
        failed = {i: error for i in range(call.items)}
        await self.finish(delivery, call, items, {}, failed, reason)

    def _remember(self, pack_id: str, done: dict[int, Outcome]) -> None:
        self._outcomes[pack_id] = done
        while len(self._outcomes) > _PACKS_REMEMBERED:
            self._outcomes.popitem(last=False)

    async def finish(
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
        encoded = await self._encode_and_emit(call, done, failed)
        limit = self.link.settings.payload_threshold_bytes // max(1, call.items)
        results: list[Result] = []
        letters: list[DeadLetter] = []
        for index in range(call.items):
            item_id = item_call_id(call.call_id, index)
            if index in encoded:
                payload = await self.link.offload(f"results/{item_id}", encoded[index], limit)
                results.append(Success(item_id, payload, attempts=delivery.num_delivered))
                continue
            error = failed[index]
            log_failure(self.answers.log, item_id, reason, error)
            results.append(Failure(item_id, error, attempts=delivery.num_delivered))
            item_call = await self._item_call(call, item_id, items[index])
            letters.append(self.answers.letter(call, item_id, item_call, error, reason, delivery))
        answer = self._answer(delivery, call, run_ms, items=results)
        await self.answers.deliver(delivery, call, encode(answer), letters)

    async def _encode_and_emit(
        self, call: CallMsg, done: dict[int, Outcome], failed: dict[int, ErrorInfo]
    ) -> dict[int, bytes]:
        """Each successful item's encoded value (emitted when asked); an item whose value
        cannot travel moves to `failed`."""
        encoded: dict[int, bytes] = {}
        for index, outcome in done.items():
            try:
                encoded[index] = encode_value(outcome.value)
                emitted = self.answers.emitted(outcome.value)
            except UnencodableValue as exc:
                failed[index] = error_info(exc)
                encoded.pop(index, None)
                continue
            await self.answers.emit(item_call_id(call.call_id, index), emitted)
        return encoded

    async def finish_whole(
        self, delivery: Delivery, call: CallMsg, values: Any, run_ms: float
    ) -> bool:
        """Answer a pack whose every item succeeded with `values`, their results joined
        (`wholepacks.joined`). False when they cannot travel (nothing was sent): the
        caller then settles the pack item by item."""
        try:
            data = encode_value(values)
        except UnencodableValue:
            return False
        await self._answer_values(delivery, call, data, run_ms)
        return True

    async def _answer_values(
        self, delivery: Delivery, call: CallMsg, data: bytes, run_ms: float
    ) -> None:
        """Answer a pack with every item's value, `data` (stored when large)."""
        stored = await self.link.offload(f"results/{call.call_id}", data)
        answer = self._answer(delivery, call, run_ms, values=stored)
        await self.answers.deliver(delivery, call, encode(answer))

    async def _finish_all_done(
        self, delivery: Delivery, call: CallMsg, done: dict[int, Outcome], run_ms: float
    ) -> bool:
        """Answer a pack whose every item succeeded with its values in one list.

        False when a value cannot travel: the caller then answers item by item, failing
        just those items.
        """
        values = [done[index].value for index in range(call.items)]
        emit = self.answers.spec.options.emit
        try:
            data = encode_value(rows(values))
            emitted = [self.answers.emitted(value) for value in values] if emit else []
        except UnencodableValue:
            return False
        for index, payload in enumerate(emitted):
            await self.answers.emit(item_call_id(call.call_id, index), payload)
        await self._answer_values(delivery, call, data, run_ms)
        return True

    def _answer(
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
            worker=self.answers.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=self.answers.timings(call, run_ms),
            cold_start_ms=self.answers.take_cold_start(run_ms),
        )

    async def _item_call(self, call: CallMsg, item_id: str, item: Any) -> bytes:
        """A pack's item as a call of its own (for its dead letter: redrive runs it alone)."""
        payload = await self.link.offload(f"payloads/{item_id}", encode_value(item))
        single = msgspec.structs.replace(
            call, call_id=item_id, payload=payload, reply=None, record=True, items=0
        )
        return encode(single)
