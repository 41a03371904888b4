"""What a connection hears from NATS beside its requests: errors, drops, refusals.

nats-server reports a permission it refuses asynchronously (an `-ERR` the client hands to
`error_cb`), and the request itself then times out. `ErrorLog` keeps the last refusal,
so that a request that got no answer right after one says "refused" rather than "away".
URLs are logged without their credentials.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import structlog

from broker.errors import BrokerError, BrokerUnavailable, PermissionDenied

__all__ = ["ErrorLog", "redacted"]

log = structlog.get_logger("autan.broker")

_RECENT_S = 30.0


def redacted(url: str) -> str:
    """`url` (or several, comma-separated) without a user and password, for logs and
    messages."""
    if "," in url:
        return ",".join(redacted(one.strip()) for one in url.split(","))
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, f"***@{netloc}", parts.path, parts.query, parts.fragment))


class ErrorLog:
    """Logs connection trouble once connected; before that, `connect` reports the failure."""

    def __init__(self, url: str) -> None:
        self.url = redacted(url)
        self.connected = False
        self._down = False
        self.down_since: float | None = None  # monotonic: when it last lost the server
        self.on_reconnected: list[Callable[[], None]] = []
        self._refusal = ""
        self._refused_at = 0.0
        self.unauthorized = False  # the server refused this connection's credentials
        self.tls_refused = ""  # why TLS with the server failed, if it did

    async def on_error(self, exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if "authorization violation" in text.lower():
            self.unauthorized = True
        if isinstance(exc, ssl.SSLError) or "certificate" in text.lower():
            self.tls_refused = text
        if "permissions violation" in text.lower():
            self._refusal, self._refused_at = text, time.monotonic()
        if self.connected and not self._down:
            log.warning("nats connection error", url=self.url, error=text)

    async def on_disconnect(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
        if self.connected and not self._down:
            self._down = True
            log.warning("disconnected from NATS; reconnecting", url=self.url)

    async def on_reconnect(self) -> None:
        self.down_since = None
        for callback in self.on_reconnected:
            callback()
        if self._down:
            self._down = False
            log.info("reconnected to NATS", url=self.url)

    def no_answer(self, what: str) -> BrokerError:
        """The error for a request that got no answer: refused, if NATS refused this
        connection something a moment ago; else NATS is away."""
        if self._refusal and time.monotonic() - self._refused_at < _RECENT_S:
            return PermissionDenied(
                f"{what}: NATS at {self.url} refused it to this connection's identity "
                f"({self._refusal.removeprefix('nats: ')}); check AUTAN_NATS_CREDS"
            )
        return BrokerUnavailable(f"{what}: NATS at {self.url} did not answer")
