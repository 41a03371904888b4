"""From deliveries to what runs: read each call, say why it must not run, read its inputs.

A delivery carries a `CallMsg` (or, for a trigger, the event whose bytes are the one
argument of a call). A call may have to fail without running: its artifact was
refused, it was delivered too often (its workers kept dying), or it waited past
`max_age_s`. Otherwise its payload becomes one `Invocation`, or one per item of a pack.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from broker import (
    CallMsg,
    Delivery,
    ErrorInfo,
    Inline,
    RowList,
    decode_call,
    encode_value,
    item_call_id,
)
from runtime.core import LOST_ATTEMPTS_ALLOWED, FunctionSpec
from runtime.worker.invocations import Invocation

__all__ = [
    "UNREADABLE",
    "Unit",
    "read_call",
    "read_inputs",
    "read_pack",
    "refusal",
]

#: What cannot be read in a call's payload.
UNREADABLE = (msgspec.DecodeError, TypeError, ValueError)


class Unit(msgspec.Struct):
    """One delivery to run: a call, or a pack of calls (`pack` holds their inputs)."""

    delivery: Delivery
    call: CallMsg
    invocations: list[Invocation]
    indexes: list[int]  # for a pack: the item of each invocation
    pack: list[Any] | None = None  # for a pack: every item's [args, kwargs]
    rows: Any = None  # for a pack run whole (`wholepacks`): its stacked rows, one per item


def read_call(spec: FunctionSpec, delivery: Delivery) -> CallMsg:
    """The call a delivery carries; a trigger's message is the one argument of a call."""
    if not spec.options.on:
        return decode_call(delivery.data)
    source = spec.source
    return CallMsg(
        call_id=f"{source.stream}-{delivery.stream_seq}",
        app=spec.app,
        fn=spec.name,
        payload=Inline(encode_value(((delivery.data,), {}))),
        created_unix_s=delivery.stored_unix_s,
        subject=delivery.subject,
    )


def refusal(
    spec: FunctionSpec, delivery: Delivery, call: CallMsg, broken: ErrorInfo | None
) -> tuple[ErrorInfo, str] | None:
    """Why a call must fail without running (the error and the dead letter's reason)."""
    if broken is not None:
        return broken, "rejected"
    if delivery.num_delivered > spec.options.retries.max_attempts + LOST_ATTEMPTS_ALLOWED:
        return _lost_error(delivery.num_delivered), "lost"
    if _expired(spec, call):
        return _expired_error(spec, call), "expired"
    return None


def read_inputs(
    call: CallMsg, delivery: Delivery, value: Any, done: dict[int, Any]
) -> tuple[list[Invocation], list[int], list[Any] | None]:
    """The invocations of a call whose payload decoded to `value`: for a pack, those of
    its items not in `done` (run before), their indexes, and every item's input.

    Raises one of `UNREADABLE` when the payload is not what the call says it holds.
    """
    items = read_pack(value, call.items) if call.items else [value]
    invocations = [_invocation(call, delivery, i, item) for i, item in enumerate(items)]
    if not call.items:
        return invocations, [0], None
    indexes = [i for i in range(call.items) if i not in done]
    return [invocations[i] for i in indexes], indexes, items


def read_pack(value: Any, items: int) -> list[Any]:
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


def _invocation(call: CallMsg, delivery: Delivery, index: int, item: Any) -> Invocation:
    args, kwargs = item
    return Invocation(
        call_id=item_call_id(call.call_id, index) if call.items else call.call_id,
        attempt=delivery.num_delivered,
        args=tuple(args),
        kwargs=kwargs,
        subject=call.subject,
    )


def _expired(spec: FunctionSpec, call: CallMsg) -> bool:
    # Trigger events are exempt: replaying old events is deliberate.
    if spec.options.on or not call.created_unix_s:
        return False
    return time.time() - call.created_unix_s > spec.options.max_age_s


def _expired_error(spec: FunctionSpec, call: CallMsg) -> ErrorInfo:
    waited_s = time.time() - call.created_unix_s
    return ErrorInfo(
        type="CallExpired",
        message=f"the call waited {waited_s:.0f} s, past max_age_s="
        f"{spec.options.max_age_s:g}, before a worker could run it",
    )


def _lost_error(deliveries: int) -> ErrorInfo:
    return ErrorInfo(
        type="WorkerLost",
        message=f"the call was delivered {deliveries} times and no worker finished it "
        "(workers crashed or were killed while running it)",
    )
