"""NATS identities of the embedded stack: one per role, and one per deployed function.

`autan up` starts its nats-server with an nkey user for each role (`broker.permissions`):
admin (the stack itself and the operator's CLI), gateway, caller. Before a worker of a
function starts, `EmbeddedAccess.worker_creds` makes that function's identity (its own
consumer, its own callers' results), reloads the server if the identity is new or its
permissions changed (a redeploy with another trigger or `emit`), waits until the server
accepts it, and hands the worker its seed file. Nothing else is given to the worker.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import structlog

from broker import (
    Broker,
    BrokerUnavailable,
    Identities,
    PermissionDenied,
    Permissions,
    caller_permissions,
    gateway_permissions,
    worker_permissions,
    worker_role,
)
from runtime.control.embedded import NatsServer
from runtime.core import ADMIN, CALLER, GATEWAY, FunctionSpec

__all__ = ["EmbeddedAccess"]

log = structlog.get_logger("autan.access")

_ACCEPTED_WITHIN_S = 5.0


class EmbeddedAccess:
    """The identities of the stack's roles and functions, kept in the embedded server."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities
        self.roles: dict[str, Permissions | None] = {
            ADMIN: None,  # no limits: the stack, deploys, the operator
            GATEWAY: gateway_permissions(GATEWAY),
            CALLER: caller_permissions(CALLER),
        }
        self.server: NatsServer | None = None

    def authorization(self) -> dict[str, object]:
        return self.identities.authorization(self.roles)

    def attach(self, server: NatsServer) -> None:
        """The server these identities are kept in (started with `authorization()`)."""
        self.server = server

    async def worker_creds(self, spec: FunctionSpec) -> Path:
        """The seed file of `spec`'s workers, once the server accepts it."""
        role = worker_role(spec.app, spec.name)
        wanted = worker_permissions(spec.app, spec.name, spec.source, spec.options.emit)
        seed = self.identities.seed_file(role)
        if self.roles.get(role) != wanted:
            self.roles[role] = wanted
            if self.server is not None:
                self.server.reload(self.authorization())
                log.info("NATS identity of a function's workers", function=spec.qualname)
                await _accepted(self.server.url, seed, role)
        return seed


async def _accepted(url: str, seed: Path, role: str) -> None:
    """Wait until the server accepts the identity (a reload takes effect in a moment)."""
    with anyio.fail_after(_ACCEPTED_WITHIN_S):
        while True:
            try:
                broker = await Broker.connect(
                    url, name="autan-access-probe", connect_timeout_s=1.0, creds=seed, role=role
                )
            except PermissionDenied:
                await anyio.sleep(0.02)
                continue
            except BrokerUnavailable:
                await anyio.sleep(0.05)
                continue
            break
    await broker.close()  # accepted; its close (a drain: slow on a loaded host) is past the bound
