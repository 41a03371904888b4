"""A generator function's items over HTTP, as they come.

By `Accept`:
    text/event-stream       Server-Sent Events: `id: <index>` and `data: <item as JSON>`
                            per item, then `event: end` (`{"items": n}`), or `event: error`
                            (`{"error": {"type", "message"}}`) at the failing item's place
    application/x-ndjson    one JSON item per line; an error as `{"error": {...}}` last
    anything else           every item, as one JSON (or msgpack) list once the call ends

The response starts with the first item (an error before it is an HTTP error, as for any
call). A client that disconnects stops a live generator in its worker: the next write
fails, which closes the stream (`core.stream_call` tells the worker). A spawned
generator's items are kept (`?async=true`, then `GET /v1/calls/{id}/items`): a client
that reconnects with `Last-Event-ID` resumes after that item.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
import msgspec
from starlette.responses import Response, StreamingResponse

from runtime.core import FunctionSpec, Link, RemoteError, stream_call
from runtime.gateway.codec import value_response, wants_msgpack

__all__ = ["NDJSON", "SSE", "items_response", "stream_response"]

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"

_encoder = msgspec.json.Encoder(enc_hook=lambda value: value.tolist())  # numpy arrays


async def stream_response(
    link: Link,
    spec: FunctionSpec,
    call_id: str,
    arguments: tuple[tuple[Any, ...], dict[str, Any]],
    accept: str | None,
    headers: dict[str, str],
) -> Response:
    """The call's items, streamed or collected as `accept` asks."""
    items = stream_call(link, spec, call_id, *arguments)
    return await items_response(items, accept, headers)


async def items_response(
    items: AsyncGenerator[Any, None],
    accept: str | None,
    headers: dict[str, str],
    *,
    first_index: int = 0,
) -> Response:
    """`items` streamed (SSE ids counting from `first_index`) or collected, as `accept`
    asks."""
    if accept is not None and SSE in accept:
        first = await _first(items)
        events = _events(first, items, first_index)
        return StreamingResponse(events, media_type=SSE, headers=_live(headers))
    if accept is not None and NDJSON in accept:
        first = await _first(items)
        return StreamingResponse(_lines(first, items), media_type=NDJSON, headers=_live(headers))
    collected = [item async for item in items]
    return value_response(collected, msgpack=wants_msgpack(accept), headers=headers)


def _live(headers: dict[str, str]) -> dict[str, str]:
    return {**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _first(items: AsyncGenerator[Any, None]) -> list[Any]:
    """The first item ([] when there is none): errors before it are the response's."""
    try:
        return [await anext(items)]
    except StopAsyncIteration:
        return []


async def _events(
    first: list[Any], items: AsyncGenerator[Any, None], index: int = 0
) -> AsyncIterator[bytes]:
    try:
        async for item in _chain(first, items):
            yield b"id: %d\ndata: %s\n\n" % (index, _json(item))
            index += 1
        yield b"event: end\ndata: %s\n\n" % _encoder.encode({"items": index})
    except RemoteError as exc:
        yield b"event: error\ndata: %s\n\n" % _error(exc.type, exc.remote_message)
    except _Unwritable as exc:
        yield b"event: error\ndata: %s\n\n" % _error("NotAcceptable", str(exc))
    finally:
        with anyio.CancelScope(shield=True):
            await items.aclose()


async def _lines(first: list[Any], items: AsyncGenerator[Any, None]) -> AsyncIterator[bytes]:
    try:
        async for item in _chain(first, items):
            yield _json(item) + b"\n"
    except RemoteError as exc:
        yield _error(exc.type, exc.remote_message) + b"\n"
    except _Unwritable as exc:
        yield _error("NotAcceptable", str(exc)) + b"\n"
    finally:
        with anyio.CancelScope(shield=True):
            await items.aclose()


async def _chain(first: list[Any], items: AsyncGenerator[Any, None]) -> AsyncIterator[Any]:
    for item in first:
        yield item
    async for item in items:
        yield item


class _Unwritable(Exception):
    """An item that JSON cannot carry."""


def _json(item: Any) -> bytes:
    try:
        return _encoder.encode(item)
    except (TypeError, ValueError, AttributeError) as exc:
        raise _Unwritable(
            f"an item cannot be written as JSON ({exc}); the stream was ended"
        ) from None


def _error(kind: str, message: str) -> bytes:
    return _encoder.encode({"error": {"type": kind, "message": message}})
