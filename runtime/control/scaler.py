"""The scaler loop: read each function's backlog, decide, start or stop workers.

The decision is `control.decision.decide`; this loop only feeds it and applies it
through the `Provider` protocol, whatever runs the workers.
It ticks every `tick_s` (0.1 s), and at once when a call arrives for a function
that has no worker: it listens on that function's subject while it is at zero.
"""

from __future__ import annotations

import functools
import time

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import (
    STATUS_BUCKET,
    Backlog,
    Broker,
    BrokerUnavailable,
    Bucket,
    ConsumerNotFound,
    Watch,
)
from runtime.control.decision import Decision, FunctionLoad, PeakWindow, decide, target_workers
from runtime.control.metrics import ScalerMetrics
from runtime.control.provider import ProvidedWorker, Provider
from runtime.control.verified import VerifiedSpecs
from runtime.core import FunctionSpec, FunctionStatus, StartRefused, Trust, WorkerDirectory

__all__ = ["Scaler"]

log = structlog.get_logger("autan.scaler")
_SPECS_EVERY_S = 2.0
_STATUS_EVERY_S = 1.0


class _Tracked:
    """The scaler's memory of one function."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.window = PeakWindow(spec.options.scaling.keep_warm_s)
        self.last = Decision(0, "no change yet")  # the last decision that changed workers
        self.decided_unix_s = 0.0
        self.wake: Watch | None = None
        self.status: FunctionStatus | None = None
        self.status_at = 0.0
        # Calls per message, as its workers last reported: packs hold many calls, and the
        # backlog JetStream counts is in messages.
        self.calls_per_message = 1.0
        self.missing = False  # its consumer is gone: not scaled until it is back
        self.start_refused: str | None = None  # why its last worker could not start


class Scaler:
    """Keeps each deployed function at the number of workers its load asks for."""

    def __init__(
        self,
        broker: Broker,
        provider: Provider,
        *,
        tick_s: float = 0.1,
        metrics: ScalerMetrics | None = None,
        trust: Trust | None = None,
    ) -> None:
        """`trust`: the deploy keys whose specs run (None: every registry entry is taken as
        it is, for tests of scaling alone)."""
        self.broker = broker
        self.trust = trust
        self.refused: dict[str, str] = {}  # entries not run, by function, and why
        self.provider = provider
        self.tick_s = tick_s
        self.metrics = metrics or ScalerMetrics()
        self.functions: dict[str, _Tracked] = {}
        self._wake = anyio.Event()
        self._woken: set[str] = set()
        self._status: Bucket | None = None
        self._outage_logged = False
        self._observed: set[str] = set()  # workers whose cold start went into the metrics

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        registry = await VerifiedSpecs.open(self.broker, self.trust)
        self._status = await self.broker.bucket(STATUS_BUCKET)
        directory = await WorkerDirectory.open(self.broker)
        try:
            await self._refresh(registry)
        except BrokerUnavailable as exc:  # NATS away or its disk full: the loop tries again
            self._outage(exc)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._follow_workers, directory)
                task_status.started()
                await self._run(registry)
        finally:
            with anyio.CancelScope(shield=True):
                for tracked in self.functions.values():
                    await self._unwatch(tracked)

    def wake(self, function: str | None = None) -> None:
        """Tick now rather than at the next interval (`function` first: a call woke it)."""
        if function is not None:
            self._woken.add(function)
        self._wake.set()

    async def _run(self, registry: VerifiedSpecs) -> None:
        refresh_at = time.monotonic() + _SPECS_EVERY_S
        while True:
            with anyio.move_on_after(self.tick_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                if time.monotonic() >= refresh_at:
                    await self._refresh(registry)
                    refresh_at = time.monotonic() + _SPECS_EVERY_S
                woken, self._woken = self._woken, set()
                # The function whose call woke the scaler first: its first worker starts
                # before the backlog of every other function is read.
                order = sorted(self.functions.values(), key=lambda t: t.spec.qualname not in woken)
                for tracked in order:
                    await self._tick(tracked)
            except BrokerUnavailable as exc:
                # NATS away: keep the workers as they are, decide again when it is back.
                self._outage(exc)
                continue
            self._outage_logged = False

    def _outage(self, exc: BrokerUnavailable) -> None:
        if not self._outage_logged:
            log.warning("cannot read the backlog; holding the workers as they are", error=str(exc))
            self._outage_logged = True

    async def _refresh(self, registry: VerifiedSpecs) -> None:
        serving = {name: tracked.spec for name, tracked in self.functions.items()}
        specs, refused = await registry.read(serving)
        self.refused = {entry.qualname: entry.reason for entry in refused}
        for spec in specs:
            tracked = self.functions.get(spec.qualname)
            if tracked is None:
                self.functions[spec.qualname] = _Tracked(spec)
                self.provider.prepare(spec)
            elif tracked.spec.version != spec.version:
                tracked.spec = spec
                tracked.window = PeakWindow(spec.options.scaling.keep_warm_s)
                await self._retire_old_versions(spec)
        self._observed &= {worker.worker_id for worker in self.provider.workers()}

    async def _retire_old_versions(self, spec: FunctionSpec) -> None:
        for worker in self.provider.workers(spec.qualname):
            old = worker.version
            if old and old != spec.version and worker.state != "stopping":
                log.info("new version deployed; retiring a worker", function=spec.qualname,
                         worker=worker.worker_id, old=old, new=spec.version)  # fmt: skip
                await self.provider.stop(worker.worker_id)

    # -- one function, one tick -------------------------------------------------------

    async def _tick(self, tracked: _Tracked) -> None:
        spec = tracked.spec
        try:
            backlog = await self.broker.backlog(spec.source)
        except ConsumerNotFound as exc:
            await self._consumer_missing(tracked, exc)
            return
        if tracked.missing:
            log.info("the function's consumer is back; scaling it", function=spec.qualname)
            tracked.missing = False
        oldest_s = await self.broker.oldest_age_s(spec.source) if backlog.total else 0.0
        everyone = self.provider.workers(spec.qualname)
        workers = [w for w in everyone if w.state != "stopping"]
        load = _load(
            backlog,
            oldest_s,
            workers,
            departing=len(everyone) - len(workers),
            calls_per_message=tracked.calls_per_message,
        )
        policy = spec.options.scaling
        peak = tracked.window.record(time.monotonic(), target_workers(load, policy)[0])
        decision = decide(load, policy, recent_peak=peak)
        if decision.desired != load.workers:
            await self._apply(tracked, workers, load, decision)
        await self._watch_at_zero(tracked, decision.desired)
        self._record(tracked, load, decision)
        await self._publish_status(tracked, load, decision)

    async def _consumer_missing(self, tracked: _Tracked, exc: ConsumerNotFound) -> None:
        """Its calls can be neither counted nor served: say so (once in the log, and in the
        status), leave its workers as they are, and go on with the other functions."""
        everyone = self.provider.workers(tracked.spec.qualname)
        workers = [w for w in everyone if w.state != "stopping"]
        if not tracked.missing:
            tracked.missing = True
            log.error("function has no consumer; not scaling it", function=tracked.spec.qualname,
                      error=str(exc))  # fmt: skip
            tracked.last = Decision(len(workers), f"no consumer: {exc}")
            tracked.decided_unix_s = time.time()
        load = _load(Backlog(0, 0, 0), 0.0, workers, departing=len(everyone) - len(workers))
        await self._publish_status(tracked, load, tracked.last)

    async def _apply(
        self,
        tracked: _Tracked,
        workers: list[ProvidedWorker],
        load: FunctionLoad,
        decision: Decision,
    ) -> None:
        spec = tracked.spec
        if decision.desired > load.workers and self.provider.start_delay_s(spec.qualname) > 0:
            return  # workers died while starting: back off (the provider says how long)
        log.info(
            "scaling",
            function=spec.qualname,
            reason=decision.reason,
            backlog=load.backlog,
            oldest_age_s=round(load.oldest_age_s, 3),
            workers_before=load.workers,
            workers_after=decision.desired,
        )
        direction = "up" if decision.desired > load.workers else "down"
        self.metrics.decisions.labels(function=spec.qualname, direction=direction).inc()
        for _ in range(decision.desired - load.workers):
            try:
                await self.provider.start(spec)
            except StartRefused as exc:  # the provider backs off; the status says why
                if tracked.start_refused != str(exc):
                    log.error("cannot start a worker", function=spec.qualname, error=str(exc))
                tracked.start_refused = str(exc)
                return
            tracked.start_refused = None
        for worker in _stop_order(workers)[: max(0, load.workers - decision.desired)]:
            await self.provider.stop(worker.worker_id)  # stopping from now: not counted

    async def _watch_at_zero(self, tracked: _Tracked, desired: int) -> None:
        spec = tracked.spec
        if desired == 0 and tracked.wake is None:
            tracked.wake = await self.broker.watch_subject(
                spec.source.subject, functools.partial(self.wake, spec.qualname)
            )
        elif desired > 0:
            await self._unwatch(tracked)

    async def _unwatch(self, tracked: _Tracked) -> None:
        if tracked.wake is not None:
            await tracked.wake.stop()
            tracked.wake = None

    def _record(self, tracked: _Tracked, load: FunctionLoad, decision: Decision) -> None:
        name = tracked.spec.qualname
        if decision.desired != load.workers:
            tracked.last = decision
            tracked.decided_unix_s = time.time()
        self.metrics.backlog.labels(function=name).set(load.backlog)
        self.metrics.oldest_age.labels(function=name).set(load.oldest_age_s)
        for state in ("starting", "idle", "busy"):
            self.metrics.workers.labels(function=name, state=state).set(getattr(load, state))

    async def _publish_status(
        self, tracked: _Tracked, load: FunctionLoad, decision: Decision
    ) -> None:
        status = FunctionStatus(
            function=tracked.spec.qualname,
            version=tracked.spec.version,
            backlog=load.backlog,
            oldest_age_s=round(load.oldest_age_s, 3),
            starting=load.starting,
            idle=load.idle,
            busy=load.busy,
            desired=decision.desired,
            reason=_reason(tracked, self.refused.get(tracked.spec.qualname)),
            decided_unix_s=tracked.decided_unix_s,
            updated_unix_s=0.0,
            unisolated=sum(not w.isolated for w in self.provider.workers(tracked.spec.qualname)),
        )
        fresh = time.monotonic() - tracked.status_at < _STATUS_EVERY_S
        if fresh and status == tracked.status:
            return
        tracked.status, tracked.status_at = status, time.monotonic()
        stamped = msgspec.structs.replace(status, updated_unix_s=time.time())
        assert self._status is not None
        await self._status.put(tracked.spec.qualname, msgspec.json.encode(stamped))

    # -- workers announcing themselves --------------------------------------------------

    async def _follow_workers(self, directory: WorkerDirectory) -> None:
        async for info in directory.announcements():
            worker = self.provider.observe(info)
            self.metrics.batch_sizes.report(info.worker_id, info.function, info.batch_sizes)
            self.metrics.calls.report(info.worker_id, info.function, info.counts)
            if (tracked := self.functions.get(info.function)) is not None:
                tracked.calls_per_message = max(1.0, info.calls_per_message)
            if worker is None or info.state != "ready" or worker.state != "ready":
                continue
            if worker.worker_id not in self._observed:
                self._observed.add(worker.worker_id)
                self.metrics.observe_cold_start(info.function, info.cold_start_ms, info.template)
                self.wake()


def _load(
    backlog: Backlog,
    oldest_s: float,
    workers: list[ProvidedWorker],
    *,
    departing: int,
    calls_per_message: float = 1.0,
) -> FunctionLoad:
    """The load in calls: JetStream counts messages, and a pack is many calls."""
    ready = sum(1 for w in workers if w.state == "ready")
    busy = min(ready, backlog.num_ack_pending)
    return FunctionLoad(
        backlog=round(backlog.total * calls_per_message),
        waiting=round(backlog.num_pending * calls_per_message),
        oldest_age_s=oldest_s,
        starting=len(workers) - ready,
        idle=ready - busy,
        busy=busy,
        departing=departing,
    )


def _stop_order(workers: list[ProvidedWorker]) -> list[ProvidedWorker]:
    """Stop ready workers before starting ones, the newest first."""
    return sorted(workers, key=lambda w: (w.state != "ready", -w.started_unix_s))


def _reason(tracked: _Tracked, refused: str | None) -> str:
    if refused:
        return f"refused: {refused}"
    if tracked.start_refused:
        return f"cannot start: {tracked.start_refused}"
    return tracked.last.reason
