"""A worker: serves one function version from its durable pull consumer.

Loop: take a batch from the feed, run it, and for each call record the result
(spawned calls, first writer wins), publish it to the caller, then ack. A
failed attempt with attempts left is handed back with its backoff delay.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus

from broker import (
    RESULTS_BUCKET,
    CallMsg,
    Delivery,
    ErrorInfo,
    Failure,
    KeyExists,
    PullFeed,
    Result,
    Success,
    UnencodableValue,
    decode_call,
    decode_value,
    encode,
    encode_value,
)
from runtime.context import Context
from runtime.errors import ArtifactRejected
from runtime.executor import Executor, Invocation, Outcome, error_info
from runtime.loader import fetch_function
from runtime.session import Session
from runtime.settings import Settings
from runtime.spec import FunctionSpec
from runtime.workers import HEARTBEAT_S, WorkerDirectory, WorkerInfo
from storage import ArtifactStore, DiskCache

__all__ = ["Worker"]

# Deliveries beyond max_attempts tolerated for attempts lost with a dead worker.
LOST_ATTEMPTS_ALLOWED = 3


class Worker:
    """Serve `app.fn` until `stop()`, then stop pulling, finish in flight, hand back the rest."""

    def __init__(
        self,
        settings: Settings,
        app: str,
        fn: str,
        *,
        device_id: int = 0,
        intra_op_threads: int = 0,
    ) -> None:
        self.settings = settings
        self.app, self.fn = app, fn
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}"
        self.device_id = device_id
        self.intra_op_threads = intra_op_threads
        self.log = structlog.get_logger("autan.worker").bind(
            function=f"{app}.{fn}", worker=self.worker_id
        )
        self._stopping = anyio.Event()
        self.ready = anyio.Event()
        self.exit_code = 0
        self.providers: dict[str, list[str]] = {}
        self.timings_ms: dict[str, float] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        session = await Session.open(self.settings, name=f"autan-worker-{self.worker_id}")
        try:
            spec = await session.registry.get(self.app, self.fn, cached=False)
            executor, broken = await self._prepare(session, spec)
            feed = await session.broker.pull(self.app, self.fn, window=_window(spec))
            task_status.started()
            self.ready.set()
            self.log.info(
                "worker ready", version=spec.version, providers=self.providers, **self.timings_ms
            )
            info = self._info(spec, broken)
            directory = await WorkerDirectory.open(session.broker)
            async with anyio.create_task_group() as group:
                group.start_soon(self._heartbeat, directory, info)
                if executor is not None:
                    group.start_soon(executor.watch)
                await self._loop(session, spec, feed, executor, broken)
                group.cancel_scope.cancel()
            await directory.remove(info)
        finally:
            await session.close()

    def _info(self, spec: FunctionSpec, broken: ErrorInfo | None) -> WorkerInfo:
        providers = sorted({p for names in self.providers.values() for p in names})
        return WorkerInfo(
            worker_id=self.worker_id,
            function=spec.qualname,
            version=spec.version,
            state="broken" if broken else "ready",
            providers=tuple(providers),
            pid=os.getpid(),
            started_unix_s=time.time(),
        )

    async def _heartbeat(self, directory: WorkerDirectory, info: WorkerInfo) -> None:
        while True:
            await directory.beat(info)
            await anyio.sleep(HEARTBEAT_S)

    async def _prepare(
        self, session: Session, spec: FunctionSpec
    ) -> tuple[Executor | None, ErrorInfo | None]:
        started = time.perf_counter()
        artifacts = ArtifactStore(await session.store())
        try:
            loaded = await fetch_function(
                spec,
                artifacts,
                DiskCache(self.settings.cache_dir),
                self.settings.signing_key_bytes(),
            )
            self.timings_ms.update(loaded.timings_ms)
            executor = await anyio.to_thread.run_sync(self._build, spec, loaded.fn, loaded)
        except (ArtifactRejected, ValueError, RuntimeError) as exc:
            self.log.error("cannot load the function; failing its calls", error=str(exc))
            return None, ErrorInfo(type=type(exc).__name__, message=str(exc))
        self.timings_ms["ready"] = (time.perf_counter() - started) * 1000
        return executor, None

    def _build(self, spec: FunctionSpec, fn: Any, loaded: Any) -> Executor:
        from runtime.models import load_models

        started = time.perf_counter()
        models = load_models(
            loaded.model_paths,
            gpu=spec.options.gpu,
            device_id=self.device_id,
            intra_op_threads=self.intra_op_threads,
        )
        self.providers = {name: list(m.providers) for name, m in models.items()}
        self.timings_ms["sessions"] = (time.perf_counter() - started) * 1000
        ctx = Context(function=spec.qualname, models=models, log=self.log)
        started = time.perf_counter()
        ctx.state = loaded.setup(ctx) if loaded.setup else None
        self.timings_ms["setup"] = (time.perf_counter() - started) * 1000
        return Executor(
            fn,
            ctx,
            batched=spec.options.batching is not None,
            timeout_s=spec.options.timeout_s,
            concurrency=spec.options.concurrency,
        )

    async def _loop(
        self,
        session: Session,
        spec: FunctionSpec,
        feed: PullFeed,
        executor: Executor | None,
        broken: ErrorInfo | None,
    ) -> None:
        batching = spec.options.batching
        max_n = batching.max_size if batching else max(32, spec.options.concurrency)
        max_delay_s = batching.max_delay_ms / 1000 if batching else 0.0
        handler = _Handler(session, spec, self.worker_id, self.log)
        while not self._stopping.is_set():
            batch = await feed.next_batch(max_n, max_delay_s, idle_s=0.25)
            if batch:
                await handler.handle(batch, executor, broken)
            if executor is not None and executor.poisoned:
                self.log.error("a call overran its timeout in a thread; replacing this worker")
                self.exit_code = 75
                break
        for delivery in await feed.stop():
            await delivery.nak()
        await session.broker.flush()


def _window(spec: FunctionSpec) -> int:
    batching = spec.options.batching
    size = batching.max_size if batching else max(32, spec.options.concurrency)
    return 2 * size


class _Handler:
    """Decodes deliveries, runs them and settles each one (result, retry or failure)."""

    def __init__(self, session: Session, spec: FunctionSpec, worker_id: str, log: Any) -> None:
        self.session = session
        self.spec = spec
        self.worker_id = worker_id
        self.log = log

    async def handle(
        self, batch: Sequence[Delivery], executor: Executor | None, broken: ErrorInfo | None
    ) -> None:
        calls = [(d, decode_call(d.data)) for d in batch]
        runnable: list[tuple[Delivery, CallMsg, Invocation]] = []
        for delivery, call in calls:
            if broken is not None:
                await self._fail(delivery, call, broken)
            elif delivery.num_delivered > self.spec.options.retries.max_attempts + (
                LOST_ATTEMPTS_ALLOWED
            ):
                await self._fail(delivery, call, _lost_error(delivery.num_delivered))
            else:
                runnable.append((delivery, call, await self._invocation(delivery, call)))
        if runnable and executor is not None:
            outcomes = await executor.run([inv for _, _, inv in runnable])
            for (delivery, call, _), outcome in zip(runnable, outcomes, strict=True):
                await self._settle(delivery, call, outcome)

    async def _invocation(self, delivery: Delivery, call: CallMsg) -> Invocation:
        args, kwargs = decode_value(await self.session.load(call.payload))
        return Invocation(
            call_id=call.call_id, attempt=delivery.num_delivered, args=tuple(args), kwargs=kwargs
        )

    async def _settle(self, delivery: Delivery, call: CallMsg, outcome: Outcome | None) -> None:
        if outcome is None:
            await delivery.nak()
            return
        if outcome.error is not None:
            await self._failed_attempt(delivery, call, outcome.error)
            return
        try:
            data = encode_value(outcome.value)
        except UnencodableValue as exc:
            await self._fail(delivery, call, error_info(exc))
            return
        payload = await self.session.offload(f"results/{call.call_id}", data)
        timings = {"run": round(outcome.run_ms, 3)}
        if call.created_unix_s:
            timings["total"] = round((time.time() - call.created_unix_s) * 1000, 3)
        result = Success(
            call_id=call.call_id,
            payload=payload,
            worker=self.worker_id,
            attempts=delivery.num_delivered,
            timings_ms=timings,
        )
        await self._deliver(delivery, call, result)

    async def _failed_attempt(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        retries = self.spec.options.retries
        attempt = delivery.num_delivered
        if attempt < retries.max_attempts:
            delay_s = retries.delay_s(attempt)
            self.log.warning(
                "attempt failed; retrying",
                call_id=call.call_id,
                attempt=attempt,
                delay_s=delay_s,
                error=error.type,
            )
            await delivery.nak(delay_s)
            return
        await self._fail(delivery, call, error)

    async def _fail(self, delivery: Delivery, call: CallMsg, error: ErrorInfo) -> None:
        self.log.warning(
            "call failed", call_id=call.call_id, error=error.type, message=error.message[:200]
        )
        result = Failure(
            call_id=call.call_id,
            error=error,
            worker=self.worker_id,
            attempts=delivery.num_delivered,
        )
        await self._deliver(delivery, call, result)

    async def _deliver(self, delivery: Delivery, call: CallMsg, result: Result) -> None:
        data = encode(result)
        if call.record:
            bucket = await self.session.broker.bucket(
                RESULTS_BUCKET, ttl_s=self.session.settings.result_ttl_s
            )
            try:
                await bucket.create(call.call_id, data)
            except KeyExists:
                self.log.info("result already recorded; this one is dropped", call_id=call.call_id)
                await delivery.ack()
                return
        if call.reply:
            await self.session.broker.publish(call.reply, data)
        await delivery.ack()


def _lost_error(deliveries: int) -> ErrorInfo:
    return ErrorInfo(
        type="WorkerLost",
        message=f"the call was delivered {deliveries} times and no worker finished it "
        "(workers crashed or were killed while running it)",
    )
