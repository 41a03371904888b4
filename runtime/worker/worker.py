"""A worker: serves one function version from its durable pull consumer.

Start: connect, fetch and verify the artifact, build the ONNX Runtime sessions,
run `setup`, announce itself. Loop: take a batch from the feed and hand it to
the `BatchHandler`. Stop (SIGTERM, scale-down): stop pulling, finish what runs,
hand back what was received but not started, withdraw the announcement.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import (
    BrokerUnavailable,
    Delivery,
    ErrorInfo,
    PullFeed,
    Source,
    worker_role,
)
from runtime.core import (
    HEARTBEAT_S,
    ArtifactRejected,
    Context,
    FunctionSpec,
    Link,
    Settings,
    SignedSpec,
    WorkerDirectory,
    WorkerInfo,
    load_models,
    set_title,
    usable_cores,
)
from runtime.worker.batches import BatchHandler
from runtime.worker.boot import Boot
from runtime.worker.entries import verified
from runtime.worker.executor import Executor
from runtime.worker.guards import STALL_GRACE_S, StallGuard
from runtime.worker.loader import Loaded, fetch_function
from runtime.worker.logship import LogShipper
from runtime.worker.prepared import Prepared, rethread_later
from storage import ArtifactStore, DiskCache

__all__ = ["PIPELINE_DEPTH", "Boot", "Worker"]

# Phases a worker times itself, whether or not a template loaded its function.
_OWN_PHASES = ("connect", "registry", "verify", "template")

# Batches of a batched function in hand at once: one runs while the next ones form and
# the last ones settle (2 left the call thread idle half the time between packs; 4 gave
# 17,300 -> 22,300 rows/s in benchmarks.batching, 8 no more).
PIPELINE_DEPTH = 4


class Worker:
    """Serve `app.fn` until `stop()`, then stop pulling, finish in flight, hand back the rest."""

    def __init__(
        self,
        settings: Settings,
        app: str,
        fn: str,
        *,
        worker_id: str = "",
        device_id: int = 0,
        intra_op_threads: int = 0,
        boot: Boot | None = None,
        guard_loop: bool = False,
        min_sequence: int = 0,
        isolated: bool = False,
        node: str = "",
        logs: LogShipper | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        """`node`: the node agent's name for this host (default: the host name).
        `prepared`: the function as a template loaded it (`worker.prepared`).
        `guard_loop`: enforce deadlines of calls that hold the event loop from outside
        it (`worker.guards`); for a worker process of its own, never in a shared one."""
        self.settings = settings
        self.app, self.fn = app, fn
        self.host = node or socket.gethostname()
        self.logs = logs  # ships its log lines and prints (a worker process of its own)
        self.worker_id = worker_id or f"{self.host}-{os.getpid()}"
        self.device_id = device_id
        # 0: every core this process may use (not ONNX Runtime's count of the host's)
        self.intra_op_threads = intra_op_threads or usable_cores()
        self.boot = boot or Boot()
        self.guard_loop = guard_loop
        self.min_sequence = min_sequence  # an older deploy is refused (a rollback)
        self.isolated = isolated  # announced: `autan ls` shows who runs unisolated
        self.prepared = prepared
        self._directory: WorkerDirectory | None = None
        self.log = structlog.get_logger("autan.worker").bind(
            function=f"{app}.{fn}", worker=self.worker_id
        )
        self._stopping = anyio.Event()
        self.ready = anyio.Event()
        self.exit_code = 0
        self.providers: dict[str, list[str]] = {}
        self.cold_start_ms: dict[str, float] = dict(self.boot.phases_ms())

    def stop(self) -> None:
        self._stopping.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self.boot.main_unix_s:
            self.cold_start_ms["init"] = _ms(time.time() - self.boot.main_unix_s)
        started = time.perf_counter()
        link = await Link.open(
            self.settings,
            name=f"autan-worker-{self.worker_id}",
            role=worker_role(self.app, self.fn),
            registry_at_first_use=True,
        )
        self.cold_start_ms["connect"] = _ms_since(started)
        try:
            async with anyio.create_task_group() as shipping:
                if self.logs is not None:
                    await shipping.start(self.logs.serve, link.broker)
                await self._serve_linked(link, task_status)
                shipping.cancel_scope.cancel()
        finally:
            await link.close()

    async def _serve_linked(self, link: Link, task_status: TaskStatus[None]) -> None:
        feeds: list[tuple[Source, PullFeed]] = []

        async def subscribe(source: Source) -> None:
            started = time.perf_counter()
            feeds.append((source, await link.broker.pull(source, window=2)))  # `_loop` sizes it
            self.cold_start_ms["subscribe"] = _ms_since(started)

        async with anyio.create_task_group() as group:
            if self.prepared is not None:  # its consumer is known: subscribe beside the read
                group.start_soon(subscribe, self.prepared.spec.source)
            started = time.perf_counter()
            signed = await link.registry.signed(self.app, self.fn)
            self.cold_start_ms["registry"] = _ms_since(started)
        started = time.perf_counter()
        spec, broken = self._verify(signed)  # with this worker's keys, template or not
        self.cold_start_ms["verify"] = _ms_since(started)
        prepared, self.prepared = self.prepared, None
        executor: Executor | None = None
        if broken is None and prepared is not None and prepared.serves(signed, self.min_sequence):
            # The entry its template verified and loaded is still the one deployed.
            self.prepared = prepared
            executor = self._from_template(prepared)
            if self.boot.template == "built":  # what the wait for the template went to
                loading = {k: v for k, v in prepared.timings_ms.items() if k not in _OWN_PHASES}
                self.cold_start_ms.update(loading)
        elif broken is None:
            executor, broken = await self._prepare(link, spec)
        if self.guard_loop:  # a process of its own: name it after what it serves
            set_title(f"autan worker {spec.qualname}@{spec.version}")
        if feeds and feeds[0][0] != spec.source:  # a redeploy moved its trigger
            for delivery in await feeds.pop()[1].stop():
                await delivery.nak()
        if not feeds:
            await subscribe(spec.source)
        feed = feeds[0][1]
        self._mark_ready()
        task_status.started()
        await self._serve(link, spec, feed, executor, broken)

    def _mark_ready(self) -> None:
        if self.boot.spawned_unix_s:
            self.cold_start_ms["ready"] = _ms(time.time() - self.boot.spawned_unix_s)
        self.ready.set()
        self.log.info("worker ready", providers=self.providers, **self.cold_start_ms)

    async def _serve(
        self,
        link: Link,
        spec: FunctionSpec,
        feed: PullFeed,
        executor: Executor | None,
        broken: ErrorInfo | None,
    ) -> None:
        handler = BatchHandler(
            link, spec, self.worker_id, self.log, cold_start_ms=dict(self.cold_start_ms)
        )
        info = self._info(spec, broken)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._heartbeat, link, info, executor, handler)
                group.start_soon(handler.keep_alive, feed)
                if executor is not None:
                    group.start_soon(executor.watch)
                if self.prepared is not None and self.intra_op_threads > 1:
                    cache = self.settings.cache_dir / "optimized"
                    group.start_soon(
                        rethread_later, self.prepared, self.intra_op_threads, cache, self.log
                    )
                if self.guard_loop:
                    limit_s = spec.options.timeout_s + STALL_GRACE_S
                    group.start_soon(StallGuard(limit_s, self.log).serve)
                await self._loop(link, spec, feed, handler, executor, broken)
                group.cancel_scope.cancel()
        finally:
            if executor is not None:
                executor.close()
        if self._directory is not None:
            await self._directory.remove(info)

    def _info(self, spec: FunctionSpec, broken: ErrorInfo | None) -> WorkerInfo:
        providers = sorted({p for names in self.providers.values() for p in names})
        return WorkerInfo(
            worker_id=self.worker_id,
            host=self.host,
            function=spec.qualname,
            version=spec.version,
            state="broken" if broken else "ready",
            providers=tuple(providers),
            pid=os.getpid(),
            started_unix_s=time.time(),
            cold_start_ms=self.cold_start_ms,
            isolated=self.isolated,
            template=self.boot.template,
        )

    async def _heartbeat(
        self,
        link: Link,
        info: WorkerInfo,
        executor: Executor | None,
        handler: BatchHandler,
    ) -> None:
        # Opened here, beside the first pull rather than before it.
        directory = self._directory = await WorkerDirectory.open(link.broker)
        while True:
            beat = msgspec.structs.replace(
                info,
                batch_sizes=dict(executor.sizes) if executor is not None else {},
                calls_per_message=handler.report_items_per_delivery(),
                counts=handler.stats.snapshot(),
            )
            with contextlib.suppress(BrokerUnavailable):  # NATS away: beat again later
                await directory.beat(beat)
            # Beat early (not more than 5 times a second) when packs start or stop: the
            # scaler counts the backlog in calls with it.
            await anyio.sleep(0.2)
            with anyio.move_on_after(HEARTBEAT_S - 0.2):
                await handler.items_shifted.wait()

    def _verify(self, signed: SignedSpec) -> tuple[FunctionSpec, ErrorInfo | None]:
        trust = self.settings.trust()
        return verified(trust, signed, self.app, self.fn, self.min_sequence, self.log)

    async def _prepare(
        self, link: Link, spec: FunctionSpec
    ) -> tuple[Executor | None, ErrorInfo | None]:
        artifacts = ArtifactStore(await link.store())
        try:
            loaded = await fetch_function(spec, artifacts, DiskCache(self.settings.cache_dir))
            self.cold_start_ms.update(loaded.timings_ms)
            executor = await anyio.to_thread.run_sync(self._build, spec, loaded)
        except (ArtifactRejected, ValueError, RuntimeError) as exc:
            self.log.error("cannot load the function; failing its calls", error=str(exc))
            return None, ErrorInfo(type=type(exc).__name__, message=str(exc))
        return executor, None

    def _from_template(self, prepared: Prepared) -> Executor:
        self.providers = {name: list(m.providers) for name, m in prepared.models.items()}
        ctx = Context(function=prepared.spec.qualname, models=prepared.models,
                      state=prepared.state, log=self.log, node=self.host)  # fmt: skip
        return self._executor(prepared.spec, prepared.loaded.fn, ctx)

    def _build(self, spec: FunctionSpec, loaded: Loaded) -> Executor:
        started = time.perf_counter()
        models = load_models(
            loaded.models,
            gpu=spec.options.gpu,
            device_id=self.device_id,
            intra_op_threads=self.intra_op_threads,
            cache_dir=self.settings.cache_dir / "optimized",
            spinning=False,
        )
        self.providers = {name: list(m.providers) for name, m in models.items()}
        self.cold_start_ms["sessions"] = _ms_since(started)
        ctx = Context(function=spec.qualname, models=models, log=self.log, node=self.host)
        started = time.perf_counter()
        ctx.state = loaded.setup(ctx) if loaded.setup else None
        self.cold_start_ms["setup"] = _ms_since(started)
        return self._executor(spec, loaded.fn, ctx)

    def _executor(self, spec: FunctionSpec, fn: Callable[..., Any], ctx: Context) -> Executor:
        return Executor(
            fn,
            ctx,
            batched=spec.options.batching is not None,
            timeout_s=spec.options.timeout_s,
            concurrency=spec.options.concurrency,
            batch_size=spec.options.batching.max_size if spec.options.batching else 1,
            alarm=self.guard_loop,
            stacked=spec.signature is not None and spec.signature.stacked,
        )

    async def _loop(
        self,
        link: Link,
        spec: FunctionSpec,
        feed: PullFeed,
        handler: BatchHandler,
        executor: Executor | None,
        broken: ErrorInfo | None,
    ) -> None:
        batching = spec.options.batching
        max_delay_s = batching.max_delay_ms / 1000 if batching else 0.0
        preferred = batching.preferred_sizes if batching else ()
        # A batched function forms its next batch, and settles its last, while one runs.
        depth = PIPELINE_DEPTH if batching is not None else 1
        slots = anyio.Semaphore(depth)
        async with anyio.create_task_group() as group:
            while not self._stopping.is_set():
                await slots.acquire()
                if self._ending(handler, executor):
                    slots.release()
                    break
                max_n = executor.take_n() if executor is not None else 32
                if batching is not None:  # packs hold many calls: count messages, not calls
                    max_n = max(1, round(max_n / handler.items_per_delivery))
                feed.window = (depth + 1) * max_n  # prefetch little: other workers take the rest
                batch = await feed.next_batch(max_n, max_delay_s, idle_s=0.25, preferred=preferred)
                if not batch:
                    slots.release()
                    continue
                if depth == 1:
                    await self._handle(handler, batch, executor, broken, slots)
                else:
                    group.start_soon(self._handle, handler, batch, executor, broken, slots)
        self._poisoned(executor)
        left = await feed.stop()
        for delivery in left:
            await delivery.nak()
        await handler.streams.stop()
        await link.broker.flush()
        self.log.info("worker drained", handed_back=len(left))

    async def _handle(
        self,
        handler: BatchHandler,
        batch: list[Delivery],
        executor: Executor | None,
        broken: ErrorInfo | None,
        slots: anyio.Semaphore,
    ) -> None:
        try:
            await handler.handle(batch, executor, broken)
        except BrokerUnavailable as exc:
            # Unsettled calls stay unacked: JetStream delivers them again after ack_wait.
            self.log.warning("NATS away while settling calls; they will come back", error=str(exc))
        except Exception:
            # A fault here, not in the function: the worker lives on; the calls come back
            # after ack_wait, and their delivery bound ends in a dead letter if it recurs.
            self.log.exception("cannot settle calls; they will be delivered again")
        finally:
            slots.release()

    def _ending(self, handler: BatchHandler, executor: Executor | None) -> bool:
        """Whether to stop pulling: asked to, poisoned, or a newer version is deployed."""
        return self._stopping.is_set() or self._poisoned(executor) or handler.outdated

    def _poisoned(self, executor: Executor | None) -> bool:
        """Whether a call overran its timeout or memory: this worker is replaced."""
        if executor is None or not executor.poisoned:
            return False
        if self.exit_code != 75:
            self.log.error("a call overran its timeout or memory; replacing this worker")
            self.exit_code = 75
        return True


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _ms_since(started: float) -> float:
    return _ms(time.perf_counter() - started)
