"""How one call asks to be run over HTTP: async or not, its arguments, its wait, its key.

The bridge's own limits are `HttpSettings` (in the settings, `AUTAN_HTTP_*`).
"""

from __future__ import annotations

import math

import msgspec
from starlette.datastructures import Headers, QueryParams

from runtime.core import HttpSettings
from runtime.gateway.errors import BadRequest

__all__ = ["CallOptions"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class CallOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How one `POST /v1/functions/{app}/{fn}` asks to be run."""

    respond_async: bool = False
    explicit: bool = False
    timeout_s: float | None = None
    idempotency_key: str | None = None

    @classmethod
    def read(cls, headers: Headers, query: QueryParams) -> CallOptions:
        """From `Prefer`, `Autan-Arguments`, `Idempotency-Key` and `?async=`, `?args=`,
        `?timeout_s=`; 400 for values that mean nothing."""
        prefer = {p.strip().lower() for p in headers.get("prefer", "").split(",")}
        return cls(
            respond_async="respond-async" in prefer or _flag(query.get("async"), "async"),
            explicit=_explicit(headers.get("autan-arguments"), query.get("args")),
            timeout_s=_timeout(query.get("timeout_s")),
            idempotency_key=headers.get("idempotency-key"),
        )

    def wait_s(self, config: HttpSettings, function_timeout_s: float) -> float:
        """`?timeout_s=`, else the longer of the default and the function's own timeout;
        never past `max_timeout_s`."""
        wanted = self.timeout_s or max(config.timeout_s, function_timeout_s)
        return min(wanted, config.max_timeout_s)


def _flag(raw: str | None, name: str) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"?{name}={raw}: use true or false")


def _explicit(header: str | None, query: str | None) -> bool:
    for where, raw in (("Autan-Arguments", header), ("?args", query)):
        if raw is not None and raw.strip().lower() != "explicit":
            raise BadRequest(
                f'{where}: {raw!r} means nothing; use "explicit" (the body is '
                '{"args": [...], "kwargs": {...}}), or leave it out (the body is the argument)'
            )
    return header is not None or query is not None


def _timeout(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise BadRequest(f"?timeout_s={raw}: use a positive number of seconds")
    return value
