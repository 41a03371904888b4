"""HTTP errors of the gateway, and the status every other error is answered with.

    HttpError                      {"error": {"type": ..., "message": ...}}
    ├── BadRequest           400   malformed body, arguments or query parameters
    ├── Unauthorized         401   no API key, or one that is not configured
    ├── Forbidden            403   a valid key that may not use this route (/metrics)
    ├── NotFound             404   unknown route, function or call, or one the key may not see
    ├── MethodNotAllowed     405   a route that exists, with another method
    ├── NotAcceptable        406   the result cannot be written as JSON: ask for msgpack
    ├── RequestTimeout       408   the body did not arrive within `read_timeout_s`
    ├── PayloadTooLarge      413   the body passed `max_body_bytes`
    ├── UnsupportedMedia     415   a content type other than JSON, msgpack or octet-stream
    ├── IdempotencyConflict  422   an Idempotency-Key reused with another request
    └── GatewayTimeout       504   the call outlived the wait; it goes on, fetch it later

Errors from below keep their own type name in the body:

    QueueFull              429  Retry-After: the calls stream is full, back off
    BrokerUnavailable      503  Retry-After: NATS or JetStream cannot be reached
    StorageUnavailable     503  Retry-After: object storage cannot be reached
    PublishRejected        502  JetStream refused the call for another reason
    ConsumerNotFound       502  the function's consumer is gone: deploy the function again
    StorageError           502  a payload could not be stored or read back
    RemoteError            500  the function raised (type: the remote exception's type)
    anything else          500  InternalError: the gateway's own fault, logged, never shown
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
from starlette.responses import Response

from broker import BrokerUnavailable, ConsumerNotFound, PublishRejected, QueueFull
from runtime.core import RemoteError
from runtime.gateway.schema import ErrorBody, ErrorDetail
from storage import StorageError, StorageUnavailable

__all__ = [
    "BadRequest",
    "Forbidden",
    "GatewayTimeout",
    "HttpError",
    "IdempotencyConflict",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "UnsupportedMedia",
    "error_response",
]

QUEUE_FULL_RETRY_S = 1
UNAVAILABLE_RETRY_S = 5
_encoder = msgspec.json.Encoder()


class HttpError(Exception):
    """An error answered with `status` and a JSON body; `detail` adds fields to it."""

    status: ClassVar[int] = 500

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, **detail: str | None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.detail = detail

    @property
    def type(self) -> str:
        return type(self).__name__


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    status = 401


class Forbidden(HttpError):
    status = 403


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405


class NotAcceptable(HttpError):
    status = 406


class RequestTimeout(HttpError):
    status = 408


class PayloadTooLarge(HttpError):
    status = 413


class UnsupportedMedia(HttpError):
    status = 415


class IdempotencyConflict(HttpError):
    status = 422


class GatewayTimeout(HttpError):
    status = 504


def error_response(exc: Exception, *, tracebacks: bool = False) -> Response:
    """The JSON answer to `exc`; None of a traceback unless `tracebacks` and the function's."""
    match exc:
        case HttpError():
            detail = ErrorDetail(type=exc.type, message=exc.message, **exc.detail)
            return _json(exc.status, detail, exc.headers)
        case RemoteError():
            trace = exc.remote_traceback if tracebacks and exc.remote_traceback else None
            detail = ErrorDetail(
                type=exc.type, message=exc.remote_message, call_id=exc.call_id, traceback=trace
            )
            return _json(500, detail, {"Autan-Call-Id": exc.call_id})
        case _:
            status, retry_s = _status_of(exc)
            headers = {"Retry-After": str(retry_s)} if retry_s else {}
            kind = type(exc).__name__ if status != 500 else "InternalError"
            message = str(exc) if status != 500 else _INTERNAL
            return _json(status, ErrorDetail(type=kind, message=message), headers)


_INTERNAL = "the gateway failed to answer this request; its log says why"


def _status_of(exc: Exception) -> tuple[int, int]:
    """(status, Retry-After seconds or 0) for errors raised below the gateway."""
    match exc:
        case QueueFull():
            return 429, QUEUE_FULL_RETRY_S
        case BrokerUnavailable() | StorageUnavailable():
            return 503, UNAVAILABLE_RETRY_S
        case PublishRejected() | ConsumerNotFound() | StorageError():
            return 502, 0
    return 500, 0


def _json(status: int, detail: ErrorDetail, headers: dict[str, str]) -> Response:
    return Response(
        _encoder.encode(ErrorBody(error=detail)),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )
