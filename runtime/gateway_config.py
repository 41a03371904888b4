"""How the gateway behaves: one frozen value, and how each call's options are read from HTTP.

`GatewayConfig.from_env` is for the CLI (the only place that reads the environment):

    AUTAN_HTTP_MAX_BODY_BYTES     16777216   larger bodies are refused (413)
    AUTAN_HTTP_TIMEOUT_S          60         default wait of a sync call before 504
    AUTAN_HTTP_MAX_TIMEOUT_S      300        cap of `?timeout_s=` (and of the default)
    AUTAN_HTTP_TRACEBACKS         false      include functions' tracebacks in error bodies
    AUTAN_HTTP_SHUTDOWN_GRACE_S   5          how long open requests may finish on shutdown
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgspec
from starlette.datastructures import Headers, QueryParams

from runtime.gateway_errors import BadRequest

__all__ = ["CallOptions", "GatewayConfig"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class GatewayConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits and switches of the HTTP gateway (see the module doc for the variables)."""

    max_body_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 60.0
    max_timeout_s: float = 300.0
    tracebacks: bool = False
    shutdown_grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={self.max_body_bytes}: use a positive size")
        if not 0 < self.timeout_s <= self.max_timeout_s:
            raise ValueError(
                f"timeout_s={self.timeout_s}, max_timeout_s={self.max_timeout_s}: use "
                "0 < timeout_s <= max_timeout_s"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayConfig:
        """AUTAN_HTTP_MAX_BODY_BYTES, AUTAN_HTTP_TIMEOUT_S, ... (unset: the defaults)."""
        values = {
            name: env[variable]
            for name in cls.__struct_fields__
            if (variable := f"AUTAN_HTTP_{name.upper()}") in env and env[variable] != ""
        }
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid gateway setting (AUTAN_HTTP_*): {exc}") from None


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

    def wait_s(self, config: GatewayConfig, function_timeout_s: float) -> float:
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
