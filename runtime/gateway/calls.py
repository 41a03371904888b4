"""Calls made through the gateway: submitted so that their result is recorded, then waited on.

Every gateway call asks the worker to record its result in the results bucket
(first writer wins, kept `result_ttl_s`), so that a call whose HTTP wait ran out
can still be fetched with `GET /v1/calls/{id}`. A plain sync call also gets its
result live on the link's reply inbox (the worker answers and records at once; a GET
right after the answer may beat the record, so the bridge keeps the results it answered
lately and reads them where the record is not there yet);
spawned and idempotent calls wait on the results bucket instead.

A `CallRecord` in the bucket `autan_gateway_calls` (same TTL) keeps a call's app
(so that a key scoped to other apps cannot read it) and the digest of its request
(so that an Idempotency-Key reused with another body is refused). Async and
idempotent calls, and calls by keys scoped to some apps, are recorded before they
are submitted; other sync calls only when their wait runs out (504), which saves
a write per call where nobody needs it: a call without a record is readable with
keys off or by keys for every app.

Idempotency: the call id is derived from (caller's key, app, function, Idempotency-Key),
so JetStream's duplicate window (`Nats-Msg-Id`, 2 minutes) keeps a repeated
submission from being queued twice, and once a result is recorded, repeats are
answered from it without submitting anything.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from typing import Any

import anyio
import msgspec
import numpy as np

from broker import (
    GATEWAY_CALLS_BUCKET,
    Bucket,
    KeyExists,
    KeyNotFound,
    Result,
    Submission,
    Success,
    decode_result,
)
from runtime.core import FunctionSpec, Link, RemoteError
from runtime.gateway.errors import BadRequest, IdempotencyConflict

__all__ = [
    "CallRecord",
    "Calls",
    "PlannedCall",
    "idempotent_call_id",
    "lookup",
    "request_digest",
    "valid_call_id",
]

_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ANSWERED_KEPT = 4096  # sync results this bridge keeps for a GET that beats the record
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class CallRecord(msgspec.Struct, frozen=True):
    """What the gateway remembers of a call: whose it is and what was asked."""

    app: str
    fn: str
    digest: str
    created_unix_s: float


class PlannedCall(msgspec.Struct, frozen=True, kw_only=True):
    """One call about to be made: `idempotent` when its id came from an Idempotency-Key."""

    call_id: str
    spec: FunctionSpec
    value: bytes  # encode_value([args, kwargs])
    digest: str
    idempotent: bool = False
    remember: bool = False  # record it before submitting, even for a sync call


def idempotent_call_id(principal: str, app: str, fn: str, key: str) -> str:
    """The call id an Idempotency-Key stands for: 22 base-62 characters, like NUIDs."""
    if not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest("Idempotency-Key: use 1 to 255 printable ASCII characters, no spaces")
    seed = "\x00".join(("autan-idempotency", principal, app, fn, key)).encode()
    number = int.from_bytes(hashlib.sha256(seed).digest(), "big")
    digits = []
    for _ in range(22):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(digits)


def valid_call_id(call_id: str) -> bool:
    return bool(_CALL_ID.match(call_id))


def _canonical_hook(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [value.dtype.str, list(value.shape), np.ascontiguousarray(value).tobytes()]
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot digest a {type(value).__qualname__}")


_canonical = msgspec.msgpack.Encoder(enc_hook=_canonical_hook, order="sorted")


def request_digest(app: str, fn: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """A digest of what is asked, independent of dict key order."""
    return hashlib.sha256(_canonical.encode((app, fn, args, kwargs))).hexdigest()


class Calls:
    """Makes gateway calls: live ones, and ones recorded for later (async, idempotent)."""

    def __init__(self) -> None:
        # Results this bridge answered live, the latest few: a worker answers a sync call
        # and records it meanwhile, so a GET of the call right after the answer may come
        # before the record; here it reads what it was just told.
        self._answered: OrderedDict[str, bytes] = OrderedDict()

    def answered(self, call_id: str) -> Result | None:
        """The result of a sync call this bridge answered lately, if it did."""
        data = self._answered.get(call_id)
        return None if data is None else decode_result(data)

    async def call_once(
        self, link: Link, call: PlannedCall, *, wait_s: float | None
    ) -> Success | None:
        """Make `call`; with `wait_s`, its result within that time (None: still pending).

        Returns once JetStream has stored the call. A failed call raises `RemoteError`.
        """
        if wait_s is not None and not call.idempotent:
            if call.remember:
                await _remember(link, call)
            return await self._call_live(link, call, wait_s)
        if not call.idempotent:
            await _claim_and_submit(link, call)  # a new id: nothing to look up first
        else:
            await _claim(link, call)
            data = await _recorded(link, call.call_id)
            if data is not None:
                return _settled(call.call_id, data)
            await (await _submit(link, call, live=False)).acked()
        if wait_s is None:
            return None
        data = await _wait_recorded(link, call.call_id, wait_s)
        return None if data is None else _settled(call.call_id, data)

    async def _call_live(self, link: Link, call: PlannedCall, wait_s: float) -> Success | None:
        submission = await _submit(link, call, live=True)
        try:
            with anyio.move_on_after(wait_s):
                await submission.acked()  # here first: JetStream acks long before a result
                data = await submission.result()
                self._answered[call.call_id] = data
                while len(self._answered) > _ANSWERED_KEPT:
                    self._answered.popitem(last=False)
                return _settled(call.call_id, data)
            await submission.acked()  # a call that was never stored is an error, not pending
        finally:
            submission.forget()
        if not call.remember:  # else recorded before it was submitted
            await _remember(link, call)
        return None


async def _claim_and_submit(link: Link, call: PlannedCall) -> None:
    """Record the call and submit it at once: one round trip of waiting instead of two.

    If the record fails after JetStream stored the call, the caller hears an error for
    a call that runs: a false refusal, never a false acceptance.
    """

    async def submit() -> None:
        await (await _submit(link, call, live=False)).acked()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_claim, link, call)
            group.start_soon(submit)
    except ExceptionGroup as failed:  # the caller maps one error to one HTTP status
        raise failed.exceptions[0] from None


async def lookup(link: Link, call_id: str) -> tuple[CallRecord | None, Result | None]:
    """What the gateway knows of `call_id` and its result, if recorded yet (no waiting)."""
    record = None
    if (data := await _get(await _records(link), call_id)) is not None:
        record = msgspec.json.decode(data, type=CallRecord)
    result = await _recorded(link, call_id)
    return record, None if result is None else decode_result(result)


async def _submit(link: Link, call: PlannedCall, *, live: bool) -> Submission:
    # Recorded even when live: a sync call that outlives its wait can still be fetched.
    return await link.submit(call.spec, call.call_id, call.value, live=live, record=True)


def _settled(call_id: str, data: bytes) -> Success:
    result = decode_result(data)
    if isinstance(result, Success):
        return result
    raise RemoteError.from_info(result.error, call_id)


async def _claim(link: Link, call: PlannedCall) -> None:
    """Record the call, or find the record of the same request; refuse another request."""
    try:
        await (await _records(link)).create(call.call_id, _record(call))
        await link.remember_spawned(call.call_id, call.spec)
    except KeyExists:
        data = await _get(await _records(link), call.call_id)
        if data is None:  # expired between the two reads: claim it afresh
            await _claim(link, call)
            return
        if msgspec.json.decode(data, type=CallRecord).digest != call.digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used for another request (other function or "
                "arguments); use a new key for a new request",
                call_id=call.call_id,
            ) from None


async def _remember(link: Link, call: PlannedCall) -> None:
    await (await _records(link)).put(call.call_id, _record(call))
    await link.remember_spawned(call.call_id, call.spec)


def _record(call: PlannedCall) -> bytes:
    record = CallRecord(call.spec.app, call.spec.name, call.digest, time.time())
    return msgspec.json.encode(record)


async def _records(link: Link) -> Bucket:
    return await link.broker.bucket(GATEWAY_CALLS_BUCKET, ttl_s=link.settings.result_ttl_s)


async def _recorded(link: Link, call_id: str) -> bytes | None:
    return await _get(await link.results(), call_id)


async def _wait_recorded(link: Link, call_id: str, wait_s: float) -> bytes | None:
    try:
        return await (await link.results()).wait_for(call_id, wait_s)
    except KeyNotFound:
        return None


async def _get(bucket: Bucket, key: str) -> bytes | None:
    try:
        return await bucket.get(key)
    except KeyNotFound:
        return None
