"""One control plane acts at a time: the one holding the lease.

Any number of `autan serve` (or `autan up`) may run against one NATS. What must happen
once for the whole stack (scaling decisions, dead-lettering undeliverable calls, sweeping
stored payloads) is done by the holder of the key `control` in the KV bucket
`autan_leases`, whose entries expire `LEASE_S` after their last write (nats-server's
clock, not ours). The holder renews it every `RENEW_S` with a compare-and-set on its
revision; the others try to create it at the same pace, so one of them takes over within
`LEASE_S + RENEW_S` of the holder's death.

A holder that could not renew for `LEASE_S - RENEW_S` stops acting on its own, before the
entry can have expired at the server, so two never act at once (as long as clocks run at
about the same rate); one that finds the entry moved past its revision stops at once. Its
workers keep serving until it sees another control plane lead (the new leader counts its
own workers only): NATS away for a moment pauses scaling, it does not stop workers. A
restart of the same stack (same host and data dir: it holds the data dir's lock, so the
earlier holder is dead) takes the entry over at once instead of waiting for it to expire.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec
import structlog

from broker import (
    LEASES_BUCKET,
    Broker,
    BrokerError,
    BrokerUnavailable,
    Bucket,
    KeyExists,
    KeyNotFound,
)

__all__ = ["LEASE_S", "RENEW_S", "Lease", "LeaseHolder"]

log = structlog.get_logger("autan")

LEASE_S = 2.4
RENEW_S = 0.6
_KEY = "control"


class LeaseHolder(msgspec.Struct, frozen=True):
    """Who holds the lease: `stack` names the control plane (its host and data dir), `pid`
    the process."""

    stack: str
    pid: int


class Lease:
    """The control plane's lease (see the module's docstring)."""

    def __init__(self, broker: Broker, holder: LeaseHolder) -> None:
        self._broker = broker
        self.holder = holder
        self._revision = 0
        self._renewed = 0.0  # monotonic time of the last write that took

    @property
    def revision(self) -> int:
        """The revision of the lease entry last written by this holder (0: not held): the
        fencing token of its orders to agents."""
        return self._revision

    @property
    def held(self) -> bool:
        """Whether this control plane holds the lease now (as far as it knows)."""
        return bool(self._revision) and time.monotonic() - self._renewed < LEASE_S - RENEW_S

    async def acquire(self, on_other: Callable[[], Awaitable[None]] | None = None) -> None:
        """Return once this control plane holds the lease, standing by until then;
        `on_other()` runs when another control plane is first seen leading."""
        said: LeaseHolder | None = None
        while True:
            try:
                if await self._try():
                    return
                current = await self._current()
                if current is not None and current != said:
                    log.info("standing by: another control plane leads",
                             leader=current.stack, pid=current.pid)  # fmt: skip
                    said = current
                    if on_other is not None and current.stack != self.holder.stack:
                        await on_other()
            except BrokerUnavailable as exc:
                log.warning("cannot reach the lease; trying again", error=str(exc))
            await anyio.sleep(RENEW_S)

    async def keep(self) -> str:
        """Renew until the lease is lost; returns why."""
        while True:
            await anyio.sleep(RENEW_S)
            bucket = await self._bucket()
            try:
                self._revision = await bucket.update(_KEY, self._value(), self._revision)
                self._renewed = time.monotonic()
            except KeyExists:
                self._revision = 0
                return "another control plane took the lease"
            except BrokerError as exc:
                silent_s = time.monotonic() - self._renewed
                if silent_s >= LEASE_S - RENEW_S:
                    self._revision = 0
                    return f"the lease could not be renewed for {silent_s:.1f} s ({exc})"

    async def release(self) -> None:
        """Let the next one lead at once (if this one still holds the lease)."""
        if not self._revision:
            return
        with contextlib.suppress(BrokerError):  # held by another, or NATS away: it expires
            bucket = await self._bucket()
            try:
                await bucket.delete(_KEY, self._revision)
            except KeyExists:
                # A renewal cut short by the stop may have taken at the server after all:
                # the entry is then still this holder's, at a later revision.
                value, revision = await bucket.revision(_KEY)
                if value == self._value():
                    await bucket.delete(_KEY, revision)
        self._revision = 0

    async def _try(self) -> bool:
        bucket = await self._bucket()
        try:
            self._revision = await bucket.create(_KEY, self._value())
        except KeyExists:
            try:
                value, revision = await bucket.revision(_KEY)
            except KeyNotFound:
                return False  # it expired meanwhile: try again
            if _holder(value) != self.holder.stack:
                return False
            # Our own stack's earlier process (dead: we hold its data dir): take over.
            try:
                self._revision = await bucket.update(_KEY, self._value(), revision)
            except KeyExists:
                return False
        self._renewed = time.monotonic()
        return True

    async def _current(self) -> LeaseHolder | None:
        try:
            value, _ = await (await self._bucket()).revision(_KEY)
        except KeyNotFound:
            return None
        try:
            return msgspec.json.decode(value, type=LeaseHolder)
        except msgspec.DecodeError:
            return None  # not a holder of ours: it expires, unrenewed

    async def _bucket(self) -> Bucket:
        return await self._broker.bucket(LEASES_BUCKET, ttl_s=LEASE_S)

    def _value(self) -> bytes:
        return msgspec.json.encode(self.holder)


def _holder(value: bytes) -> str | None:
    """The stack named by a lease entry; None for one that is not ours to read."""
    try:
        return msgspec.json.decode(value, type=LeaseHolder).stack
    except msgspec.DecodeError:
        return None
