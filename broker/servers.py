"""Reaching NATS: the server list of a URL, how many copies a cluster keeps, and what a
failed connection is told."""

from __future__ import annotations

import ssl
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NatsClient

from broker.errorlog import ErrorLog
from broker.errors import BrokerError, BrokerUnavailable, PermissionDenied

__all__ = ["default_replicas", "not_connected", "server_urls"]


def server_urls(url: str) -> list[str]:
    """The servers of `url`: one, or several separated by commas."""
    servers = [one.strip() for one in url.split(",") if one.strip()]
    if not servers:
        raise ValueError("no NATS server URL given: set AUTAN_NATS_URL")
    return servers


def default_replicas(nc: NatsClient) -> int:
    """3 when the server this client reached is in a cluster of three or more (its INFO
    lists every member's client address), else 1."""
    info: dict[str, object] = getattr(nc, "_server_info", {}) or {}
    members = info.get("connect_urls") if info.get("cluster") else None
    return 3 if isinstance(members, list) and len(members) >= 3 else 1


def not_connected(errors: ErrorLog, creds: Path | None, exc: BaseException) -> BrokerError:
    if errors.tls_refused or _is_tls(exc):
        return BrokerUnavailable(
            f"NATS at {errors.url} and this process could not agree on TLS "
            f"({errors.tls_refused or exc}): set AUTAN_NATS_TLS_CA to the CA that signed the "
            "server's certificate (and AUTAN_NATS_TLS_CERT/_KEY if it checks its clients)"
        )
    if errors.unauthorized or "authorization violation" in str(exc).lower():
        given = f"the credentials {creds}" if creds else "no credentials"
        return PermissionDenied(
            f"NATS at {errors.url} refused this process with {given}: set AUTAN_NATS_CREDS to "
            "the seed file of a role it knows, or AUTAN_DATA_DIR to the stack's (autan up "
            "keeps them in <data dir>/creds/)"
        )
    why = f" ({_reason(exc)})" if _reason(exc) else ""
    return BrokerUnavailable(
        f"cannot reach NATS at {errors.url}{why} - is 'autan up' running? "
        "(or set AUTAN_NATS_URL to your NATS server)"
    )


def _reason(exc: BaseException) -> str:
    """What the failed connection said, when it said more than a timeout."""
    while isinstance(exc, nats.errors.NoServersError | TimeoutError) and exc.__cause__:
        exc = exc.__cause__
    if isinstance(exc, nats.errors.NoServersError | TimeoutError):
        return ""
    return str(exc)[:200]


def _is_tls(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ssl.SSLError) or "tls" in str(exc).lower()[:80]:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
