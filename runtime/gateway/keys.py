"""API keys checked on every request: who is calling, and which apps it may see.

The keys themselves are settings (`core.apikeys`: AUTAN_API_KEYS, AUTAN_API_KEYS_FILE),
parsed once at the edge. Keys are never logged: requests are logged with the key's
`name`, else the first characters of its SHA-256 fingerprint.
"""

from __future__ import annotations

import hashlib
import ipaddress

import msgspec

from runtime.core import ALL_APPS, ApiKeys
from runtime.gateway.errors import Unauthorized

__all__ = ["OPEN_ACCESS", "Access", "KeyRing", "is_loopback"]


class Access(msgspec.Struct, frozen=True):
    """What one request may do: `principal` namespaces its idempotency keys."""

    principal: str
    label: str
    apps: frozenset[str]

    @property
    def all_apps(self) -> bool:
        return ALL_APPS in self.apps

    def may_see(self, app: str) -> bool:
        return self.all_apps or app in self.apps


OPEN_ACCESS = Access(principal="", label="anonymous", apps=frozenset({ALL_APPS}))


class KeyRing:
    """Authenticates `Authorization: Bearer <key>`; everything is allowed when keys are off."""

    def __init__(self, keys: ApiKeys | None) -> None:
        self.enabled = keys is not None
        # Looked up by fingerprint: a dict probe on a digest reveals nothing about the keys.
        self._by_fingerprint = {k.fingerprint: k for k in (keys.keys if keys else ())}

    def authenticate(self, authorization: str | None) -> Access:
        if not self.enabled:
            return OPEN_ACCESS
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "send an API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE
            )
        found = self._by_fingerprint.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if found is None:
            raise Unauthorized("this API key is not configured on the gateway", headers=_CHALLENGE)
        return Access(principal=found.fingerprint, label=found.label, apps=frozenset(found.apps))


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="autan"'}


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the gateway reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
