"""The scaler and the local provider running in this process, as `autan up` runs them.

    async with running_stack() as stack, running_fleet(stack) as fleet:
        await fleet.to_zero()                       # no worker; the scaler listens for calls
        cold = await fleet.cold_call(session, "demo.echo", b"x")
        cold.total_ms, cold.reaction_ms, cold.phases_ms

`running_fleet` deploys the `bench` app (`benchmarks.kit.apps`) beside `demo` first, then starts
the provider (with its fork server) and the scaler in a task group, as the scaler tests do.
Workers are forked processes of their own; only the scaler's loop shares this process's loop.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from msgspec.structs import replace

from benchmarks.kit.apps import app as bench_app
from benchmarks.kit.harness import Stack
from broker import Broker
from runtime.client import Session
from runtime.control import LocalProvider, ProvidedWorker
from runtime.control.scaler import Scaler

__all__ = ["ColdCall", "Fleet", "running_fleet"]

ARMED_TIMEOUT_S = 10.0
POLL_S = 0.005
SETTLE_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class ColdCall:
    """One call to a function that had no worker, and how its worker came to be."""

    value: Any
    total_ms: float  # just before the publish -> the result in hand
    reaction_ms: float  # just before the publish -> the provider's fork returned a pid
    phases_ms: dict[str, float] = field(default_factory=dict)  # as the first result carries them


class Fleet:
    """The running provider and scaler, and the moves a benchmark makes with them."""

    def __init__(self, provider: LocalProvider, scaler: Scaler) -> None:
        self.provider = provider
        self.scaler = scaler

    def workers(self, qualname: str) -> list[ProvidedWorker]:
        return self.provider.workers(qualname)

    async def to_zero(self, *qualnames: str) -> None:
        """Stop the workers (of `qualnames`, else all), wait for their exits, then for the
        scaler to listen again for those functions' first calls.

        Each function's backlog must be empty first. A worker acks a call just after it
        publishes the result, so the caller may hold a result whose call is still unacked;
        the scaler does not count a stopping worker, so that call would read as a call
        waiting with no worker, and the scaler would start another one.
        """
        for qualname in qualnames or tuple(self.scaler.functions):
            await self.settled(qualname)
        stopping = [w for q in qualnames for w in self.workers(q)] if qualnames else None
        for worker in self.provider.workers() if stopping is None else stopping:
            await self.provider.stop(worker.worker_id)
        for worker in self.provider.workers() if stopping is None else stopping:
            await self.provider.exit_code(worker.worker_id)
        for qualname in qualnames or tuple(self.scaler.functions):
            await self.armed(qualname)

    async def backlog(self, qualname: str, broker: Broker | None = None) -> int:
        """Calls of `qualname` pending or unacked, read as the scaler reads them."""
        source = self.scaler.functions[qualname].spec.source
        return (await (broker or self.scaler.broker).backlog(source)).total

    async def settled(self, qualname: str) -> None:
        """Wait until no call of `qualname` is pending or unacked (JetStream counters)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while await self.backlog(qualname) != 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{qualname} still has calls pending after {SETTLE_TIMEOUT_S} s")
            await anyio.sleep(POLL_S)

    async def armed(self, qualname: str) -> None:
        """Wait until the scaler watches `qualname`'s subject (it does at zero workers).

        The watch is scaler state with no notification of its own, hence the short poll.
        """
        deadline = time.monotonic() + ARMED_TIMEOUT_S
        while (tracked := self.scaler.functions.get(qualname)) is None or tracked.wake is None:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the scaler did not watch {qualname} at zero within {ARMED_TIMEOUT_S} s "
                    f"(workers {self.provider.workers()}, last status {tracked and tracked.status})"
                )
            await anyio.sleep(POLL_S)

    async def cold_call(self, session: Session, qualname: str, *args: Any) -> ColdCall:
        """Call `qualname` at zero workers; the result must come from the worker it started."""
        if self.workers(qualname):
            raise RuntimeError(f"{qualname} has workers already: call to_zero() first")
        app, _, fn = qualname.partition(".")
        started_s = time.time()
        started_ns = time.perf_counter_ns()
        value, result = await session.call_result(app, fn, args, {})
        total_ms = (time.perf_counter_ns() - started_ns) / 1e6
        spawned = [w.started_unix_s for w in self.workers(qualname)]
        if not spawned or not result.cold_start_ms:
            raise RuntimeError(f"{qualname}: the result did not come from a freshly started worker")
        reaction_ms = (min(spawned) - started_s) * 1000
        return ColdCall(value, total_ms, reaction_ms, dict(result.cold_start_ms))


@asynccontextmanager
async def running_fleet(
    stack: Stack, *, isolate: bool = False, templates: bool = True
) -> AsyncIterator[Fleet]:
    """Deploy `bench`, then run a provider (isolating workers if `isolate`; with function
    templates unless `templates` is False) and a scaler on `stack` until the block ends."""
    await stack.deploy("benchmarks.kit.apps")
    bench_app.sessions.configure(stack.settings)
    session = await Session.open(stack.settings, name="bench-scaler")
    settings = stack.settings if templates else replace(stack.settings, templates="off")
    provider = LocalProvider(settings, stop_grace_s=STOP_GRACE_S, isolate=isolate)
    scaler = Scaler(session.broker, provider)
    try:
        async with anyio.create_task_group() as group:
            await group.start(provider.serve)
            await group.start(scaler.serve)
            yield Fleet(provider, scaler)
            group.cancel_scope.cancel()
    finally:
        await bench_app.sessions.aclose()
        await session.close()
