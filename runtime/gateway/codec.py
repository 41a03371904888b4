"""Bodies in and out: request bodies to call arguments, values to JSON or msgpack answers.

In (by `Content-Type`):
    application/json          the JSON value is the one positional argument
    application/msgpack       the same, in msgpack (numpy arrays as Autan's extension type)
    application/octet-stream  the raw bytes are the one positional argument
    (none, empty body)        no arguments
    anything else             415
With `Autan-Arguments: explicit` (or `?args=explicit`), a JSON or msgpack body is
`{"args": [...], "kwargs": {...}}` (both optional) and the call is `fn(*args, **kwargs)`.

Out (by `Accept`): JSON unless it names `application/msgpack`. In JSON, numpy arrays
become nested lists (their dtype is lost: ask for msgpack to keep it) and bytes
become base64 strings. msgpack answers carry the value exactly as the function
returned it, encoded by `broker.encode_value`.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import numpy as np
from starlette.responses import Response

from broker import decode_value, encode_value
from runtime.gateway.errors import (
    BadRequest,
    NotAcceptable,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMedia,
)
from runtime.gateway.msgpack import msgpack_elements
from runtime.gateway.schema import ExplicitArguments

__all__ = [
    "JSON",
    "MAX_ELEMENTS",
    "MSGPACK",
    "OCTETS",
    "Arguments",
    "decode_arguments",
    "json_response",
    "media_type",
    "read_arguments",
    "read_body",
    "value_response",
    "wants_msgpack",
]

JSON = "application/json"
MSGPACK = "application/msgpack"
OCTETS = "application/octet-stream"
_ACCEPTED = (JSON, MSGPACK, OCTETS)

Arguments = tuple[tuple[Any, ...], dict[str, Any]]


def media_type(content_type: str | None) -> str | None:
    """The media type of a Content-Type header (parameters dropped), checked: 415 otherwise."""
    if content_type is None:
        return None
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "application/x-msgpack":
        return MSGPACK
    if kind not in _ACCEPTED:
        raise UnsupportedMedia(
            f"cannot take a {kind or 'blank'} body: send {JSON} (a JSON value), {MSGPACK}, "
            f"or {OCTETS} (raw bytes)"
        )
    return kind


async def read_body(
    chunks: AsyncIterator[bytes], declared: str | None, max_bytes: int, timeout_s: float = 60.0
) -> bytes:
    """The whole body, refused as soon as it passes `max_bytes` (chunked bodies included),
    or when it takes longer than `timeout_s` to arrive (a client trickling it in)."""
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    parts: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout_s):
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            parts.append(chunk)
        return b"".join(parts)
    raise RequestTimeout(f"the body did not arrive within {timeout_s:g} s")


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body passes the gateway's limit of {max_bytes} bytes; for large inputs, put "
        "them in object storage and pass their key"
    )


# Values a body may hold at most: decoding more would hold the gateway's memory and CPU.
MAX_ELEMENTS = 1_000_000
# Bodies larger than this are decoded in a thread, so that other requests go on meanwhile.
_DECODE_INLINE_BYTES = 64 * 1024


async def read_arguments(body: bytes, kind: str | None, *, explicit: bool) -> Arguments:
    """`decode_arguments`, in a thread for a large body."""
    if len(body) <= _DECODE_INLINE_BYTES:
        return decode_arguments(body, kind, explicit=explicit)
    return await anyio.to_thread.run_sync(
        functools.partial(decode_arguments, body, kind, explicit=explicit)
    )


def decode_arguments(body: bytes, kind: str | None, *, explicit: bool) -> Arguments:
    """`(args, kwargs)` of the call, from a body of media type `kind` (see the module doc)."""
    if kind is None and not body:
        return (), {}
    if kind == OCTETS or kind is None:
        if explicit:
            raise BadRequest(f"explicit arguments need a {JSON} or {MSGPACK} body")
        return (body,), {}
    value = _decode(body, kind)
    if not explicit:
        return (value,), {}
    try:
        arguments = msgspec.convert(value, ExplicitArguments)
    except msgspec.ValidationError as exc:
        raise BadRequest(
            f'explicit arguments: {exc}; send {{"args": [...], "kwargs": {{...}}}}'
        ) from None
    return tuple(arguments.args), arguments.kwargs


def _decode(body: bytes, kind: str) -> Any:
    if not body:
        raise BadRequest(f"the {kind} body is empty: send a value (null for None)")
    elements = _json_elements(body) if kind == JSON else msgpack_elements(body, MAX_ELEMENTS)
    if elements > MAX_ELEMENTS:
        raise BadRequest(
            f"the body holds more than {MAX_ELEMENTS} values: send fewer, or one array "
            "(msgpack keeps a numpy array as one value)"
        )
    try:
        if kind == JSON:
            return msgspec.json.decode(body)
        return decode_value(body)
    except RecursionError:
        raise BadRequest("the body nests too deep: flatten it") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the body is not valid {_NAMES[kind]}: {exc}") from None
    except Exception as exc:  # a malformed numpy extension raises whatever numpy raises
        raise BadRequest(f"the body is not valid msgpack: {exc}") from None


_NAMES = {JSON: "JSON", MSGPACK: "msgpack"}


def _json_elements(body: bytes) -> int:
    """At least as many as the values in a JSON document (separators and openers)."""
    return body.count(b",") + body.count(b"[") + body.count(b"{")


def wants_msgpack(accept: str | None) -> bool:
    return accept is not None and ("application/msgpack" in accept or "x-msgpack" in accept)


def _json_hook(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write a {type(value).__qualname__} as JSON")


_json_encoder = msgspec.json.Encoder(enc_hook=_json_hook)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_encoder.encode(value), status, headers, media_type=JSON)


def value_response(
    value: Any, *, msgpack: bool, headers: dict[str, str], status: int = 200
) -> Response:
    """A function's result (or a Struct holding one) as JSON or msgpack."""
    if msgpack:
        return Response(encode_value(value), status, headers, media_type=MSGPACK)
    try:
        return json_response(value, status, headers)
    except (TypeError, ValueError, OverflowError) as exc:
        message = f"the result cannot be written as JSON ({exc}); ask for 'Accept: {MSGPACK}'"
        raise NotAcceptable(message, call_id=headers.get("Autan-Call-Id")) from None
