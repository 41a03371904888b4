"""The gateway's link to NATS: a `Link` opened in the background and kept.

The gateway listens whether or not NATS is up (so that probes and load balancers
see it): until the link is open, and whenever its connection is down and the
client is reconnecting, requests fail at once with `BrokerUnavailable` (503 with
Retry-After) instead of waiting for JetStream timeouts.
"""

from __future__ import annotations

import time

import anyio
import structlog
from anyio.abc import TaskStatus

from broker import GATEWAY_CALLS_BUCKET, READINESS_PROBE_KEY, BrokerError, BrokerUnavailable
from runtime.core import GATEWAY, Link, Settings, jetstream_problem

__all__ = ["UNHEALTHY_AFTER_S", "Uplink"]

log = structlog.get_logger("autan.gateway")

_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0
_CLOSE_S = 5.0
UNHEALTHY_AFTER_S = 60.0  # NATS away this long: /healthz fails too (/readyz at once)


class Uplink:
    """One `Link` for the whole gateway; `link` raises while NATS cannot be used."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._link: Link | None = None
        self._started = time.monotonic()
        self._scope = anyio.CancelScope(shield=True)

    @property
    def link(self) -> Link:
        link = self._link
        if link is None:
            raise BrokerUnavailable(
                f"the gateway is not connected to NATS at {self.settings.nats_url} yet; "
                "is 'autan up' running? retry shortly"
            )
        if not link.broker.is_connected:
            raise BrokerUnavailable(
                f"the gateway lost NATS at {self.settings.nats_url} and is reconnecting; "
                "retry shortly"
            )
        return link

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect (retrying with backoff), then hold the link until `close()`.

        The caller's cancellation does not reach in here: the gateway first stops
        taking requests and lets open ones finish, then closes the link.
        """
        with self._scope:
            task_status.started()
            try:
                self._link = await self._open()
                log.info("gateway connected to NATS", nats=self.settings.nats_url)
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_S):
                    if self._link is not None:
                        await self._link.close()

    def close(self) -> None:
        """End `serve`: stop connecting, or close the link."""
        self._scope.cancel()

    async def _open(self) -> Link:
        delay_s = _RETRY_FIRST_S
        while True:
            try:
                return await self._connect()
            except BrokerUnavailable as exc:
                log.warning("gateway waiting for NATS", error=str(exc), retry_in_s=delay_s)
            await anyio.sleep(delay_s)
            delay_s = min(delay_s * 2, _RETRY_MAX_S)

    async def _connect(self) -> Link:
        return await Link.open(self.settings, name="autan-gateway", role=GATEWAY)

    def unhealthy_reason(self) -> str | None:
        """None while the gateway can recover by itself; else why not: NATS has been away
        longer than `UNHEALTHY_AFTER_S` (ready fails at once; healthy only then)."""
        if self._link is None:
            waited_s = time.monotonic() - self._started
            if waited_s > UNHEALTHY_AFTER_S:
                return f"no connection to NATS at {self.settings.nats_url} for {waited_s:.0f} s"
            return None
        down_s = self._link.broker.down_for_s
        if down_s > UNHEALTHY_AFTER_S:
            return f"NATS at {self.settings.nats_url} has been away for {down_s:.0f} s"
        return None

    async def unready_reason(self, timeout_s: float = 2.0) -> str | None:
        """None when NATS is connected and JetStream stores a write within `timeout_s` (a
        call is a write: a full disk makes it unready), else why not."""
        try:
            link = self.link
        except BrokerError as exc:
            return str(exc)
        return await jetstream_problem(
            link.broker, GATEWAY_CALLS_BUCKET, READINESS_PROBE_KEY, timeout_s,
            ttl_s=link.settings.result_ttl_s,
        )  # fmt: skip
