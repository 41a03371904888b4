"""Reading a streamed call: the items a generator function yields, as they come.

Shared by the client (`fn.remote_gen`) and the HTTP bridge (Server-Sent Events, NDJSON):
publish the call, then read what its worker sends to this connection's result subject,
items then the result, telling the worker every half window how far it got, and that it
stopped when the reader leaves early (`broker.StreamControl`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import anyio

from broker import (
    STREAM_WINDOW,
    BrokerError,
    Failure,
    StreamControl,
    StreamItem,
    StreamSubmission,
    Success,
    control_subject,
    decode_stream_message,
    decode_value,
    encode,
    encode_value,
    items_subject,
)
from runtime.core.errors import CallNotFound, RemoteError
from runtime.core.link import Link
from runtime.core.options import InvalidOption
from runtime.core.spec import FunctionSpec, split_qualname

__all__ = ["kept_items", "stream_call"]


async def stream_call(
    link: Link, spec: FunctionSpec, call_id: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AsyncGenerator[Any, None]:
    """The items `spec` yields for this call, in order (see the module's docstring).

    An error raised mid-stream is raised here (RemoteError), at its place. A stream cut by
    its worker's death is run again by another, whose first items, already given here,
    are skipped. Closing the generator early tells the worker to stop.
    """
    if not spec.options.streams:
        raise InvalidOption(f"{spec.qualname} returns one result: call it with .remote()")
    submission = await link.submit_stream(spec, call_id, encode_value((args, kwargs)))
    control = control_subject(spec.app, spec.name, call_id)
    items = _items(link, call_id, _live(submission), start=0)
    told = 0
    ended = False
    try:
        await submission.acked()
        async for index, value in items:
            if index + 1 - told >= STREAM_WINDOW // 2:
                told = index + 1
                await link.broker.publish(control, encode(StreamControl(told)))
            yield value
        ended = True
    except RemoteError:
        ended = True
        raise
    finally:
        await items.aclose()
        submission.forget()
        if not ended:  # the reader stopped: the worker closes the generator
            with anyio.CancelScope(shield=True), contextlib.suppress(BrokerError):
                await link.broker.publish(control, encode(StreamControl(cancel=True)))


async def kept_items(link: Link, call_id: str, start: int = 0) -> AsyncGenerator[Any, None]:
    """The items of spawned stream `call_id` from item `start`, as they are kept: from any
    process, while it runs or after (for as long as results are kept). CallNotFound for an
    id no spawned call has; an error the generator raised comes at its place."""
    qualname = await link.spawned_function(call_id)
    if qualname is None:
        raise CallNotFound(
            f"no spawned call {call_id}: it never existed, or it ended more than "
            f"{link.settings.result_ttl_s:g} s ago and its items were dropped (result_ttl_s)"
        )
    app, fn = split_qualname(qualname)
    if not (await link.registry.get(app, fn)).options.streams:
        raise InvalidOption(f"{qualname} returns one result: read it with call.get()")
    items = _items(link, call_id, _kept(link, items_subject(app, fn, call_id)), start)
    try:
        async for _, value in items:
            yield value
    finally:
        await items.aclose()


async def _items(
    link: Link, call_id: str, messages: AsyncGenerator[bytes, None], start: int
) -> AsyncGenerator[tuple[int, Any], None]:
    """(index, value) of each item from `start`, in order, read from a stream's messages;
    it ends at the call's Success and raises its Failure. A rerun after a worker died
    sends the first items again: those already given are skipped."""
    received = start
    try:
        async for data in messages:
            match decode_stream_message(data):
                case StreamItem(index=first, payloads=payloads):
                    for index, payload in enumerate(payloads, first):
                        if index >= received:
                            received = index + 1
                            yield index, decode_value(await link.load(payload))
                case Success():
                    return
                case Failure(error=error):
                    raise RemoteError.from_info(error, call_id)
    finally:
        await messages.aclose()


async def _live(submission: StreamSubmission) -> AsyncGenerator[bytes, None]:
    """What the worker sends this connection for a live call."""
    while True:
        yield await submission.next()


async def _kept(link: Link, subject: str) -> AsyncGenerator[bytes, None]:
    """What is kept on `subject`, in order, waiting for more while there is none."""
    after = 0
    while True:
        found = await link.broker.items.wait(subject, after, 30.0)
        if found is not None:  # else not yet: the call waits for a worker, or runs
            after, data = found
            yield data
