"""The three systems of `benchmarks.peers`, each measured on the same workloads."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from benchmarks.batching import _through_runtime
from benchmarks.echo_latency import time_ours
from benchmarks.kit.batching_app import app as batching_app
from benchmarks.kit.fleet import running_fleet
from benchmarks.kit.harness import ROOT, child_env, running_stack
from benchmarks.kit.mlp_model import build_mlp
from benchmarks.kit.report import summarize
from benchmarks.map_throughput import time_ours as map_ours
from runtime.client import Session
from runtime.control import free_port

__all__ = ["autan_side", "celery_side", "ray_side"]

PAYLOAD = b"0123456789abcdef"
WINDOW = 1024  # .map()'s calls in flight (benchmarks.map_throughput's)
READY_TIMEOUT_S = 120.0


def _rows(n: int) -> list[np.ndarray[Any, Any]]:
    return list(np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32))


async def _rounds(
    args: argparse.Namespace, workloads: Mapping[str, Callable[[], Awaitable[Any]]]
) -> dict[str, Any]:
    """Each workload `args.rounds` times; the median of what each round gave."""
    samples: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, run in workloads.items():
            got = await run()
            for key, value in (got if isinstance(got, dict) else {name: got}).items():
                samples.setdefault(key, []).append(float(value))
    return {key: statistics.median(values) for key, values in samples.items()}


def _latency(samples_ns: list[int]) -> dict[str, float]:
    summary = summarize(samples_ns)
    return {"echo_p50_ms": summary.p50_ms, "echo_p99_ms": summary.p99_ms}


# -- Autan ---------------------------------------------------------------------------------


async def autan_side(args: argparse.Namespace) -> dict[str, Any]:
    rows = _rows(args.rows)
    async with running_stack() as stack:
        await stack.start_worker("demo.echo", threads=1)
        await stack.deploy("benchmarks.kit.batching_app")
        batching_app.sessions.configure(stack.settings)
        try:
            await stack.start_worker("batching.mlp", threads=1)
            await time_ours(50)
            await _through_runtime(rows[:256])

            async def many() -> float:
                return (await map_ours(args.many, WINDOW)).per_s

            figures = await _rounds(
                args,
                {
                    "echo": lambda: _as(_latency, time_ours(args.calls)),
                    "many_per_s": many,
                    "mlp_rows_per_s": lambda: _through_runtime(rows),
                },
            )
        finally:
            await batching_app.sessions.aclose()
    async with running_stack() as stack, running_fleet(stack) as fleet:
        session = await Session.open(stack.settings, name="peers-zero")
        try:

            async def zero() -> float:
                try:
                    cold = await fleet.cold_call(session, "demo.echo", PAYLOAD)
                finally:
                    await fleet.to_zero()
                return cold.total_ms

            await fleet.to_zero()
            await zero()  # builds the template, as a host that ran the version before
            figures.update(await _rounds(args, {"zero_ms": zero}))
        finally:
            await session.close()
    return figures


async def _as(convert: Callable[[Any], Any], awaitable: Awaitable[Any]) -> Any:
    return convert(await awaitable)


# -- Ray Serve -----------------------------------------------------------------------------


async def ray_side(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        serve.start(http_options={"location": "NoServer"})  # handles only: no HTTP proxy
        echo = serve.run(_ray_echo(serve).bind(), name="echo", route_prefix=None)
        mlp = serve.run(_ray_mlp(serve).bind(str(build_mlp())), name="mlp", route_prefix=None)
        actor_class = ray.remote(_EchoActor)
        rows = _rows(args.rows)

        async def latency() -> dict[str, float]:
            samples = []
            for _ in range(args.calls):
                started = time.perf_counter_ns()
                await echo.remote(PAYLOAD)
                samples.append(time.perf_counter_ns() - started)
            return _latency(samples)

        async def many() -> float:
            started = time.perf_counter()
            await _windowed([lambda: echo.remote(PAYLOAD)] * args.many)
            return float(args.many) / (time.perf_counter() - started)

        async def mlp_rows() -> float:
            started = time.perf_counter()
            await _windowed([functools.partial(mlp.remote, row) for row in rows])
            return len(rows) / (time.perf_counter() - started)

        async def zero() -> float:
            started = time.perf_counter()
            actor = actor_class.remote()
            await actor.echo.remote(PAYLOAD)
            elapsed_ms = (time.perf_counter() - started) * 1000
            ray.kill(actor)
            return elapsed_ms

        await latency()  # warm-up
        await mlp_rows()
        workloads = {"echo": latency, "many_per_s": many, "mlp_rows_per_s": mlp_rows,
                     "zero_ms": zero}  # fmt: skip
        return await _rounds(args, workloads)
    finally:
        serve.shutdown()
        ray.shutdown()


async def _windowed(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    """At most WINDOW calls in flight, as `.map()`'s window: 20,000 handle calls at once
    stalled Ray Serve here (its scheduler queued them and stopped answering)."""
    slots = asyncio.Semaphore(WINDOW)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with slots:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


class _EchoActor:
    def echo(self, value: Any) -> Any:
        return value


def _ray_echo(serve: Any) -> Any:
    @serve.deployment(max_ongoing_requests=128)
    class Echo:
        async def __call__(self, value: Any) -> Any:
            return value

    return Echo


def _ray_mlp(serve: Any) -> Any:
    @serve.deployment(max_ongoing_requests=256)
    class Mlp:
        def __init__(self, path: str) -> None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(path, options)

        @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)  # type: ignore[untyped-decorator]
        async def __call__(self, rows: list[Any]) -> list[Any]:
            return list(self.session.run(None, {"x": np.stack(rows)})[0])

    return Mlp


# -- Celery with Redis ---------------------------------------------------------------------


async def celery_side(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    redis = await asyncio.to_thread(_start_redis, port)
    os.environ["PEERS_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    os.environ["PEERS_MLP"] = str(build_mlp())
    from celery import group

    from benchmarks.peers import celery_app

    worker = None
    try:
        worker = await asyncio.to_thread(_celery_worker, celery_app.app)
        rows = _rows(args.rows)
        echo, mlp = celery_app.echo, celery_app.mlp

        def latency() -> dict[str, float]:
            samples = []
            for _ in range(args.calls):
                started = time.perf_counter_ns()
                echo.delay(PAYLOAD).get(timeout=30)
                samples.append(time.perf_counter_ns() - started)
            return _latency(samples)

        def many() -> float:
            started = time.perf_counter()
            group(echo.s(PAYLOAD) for _ in range(args.many)).apply_async().get(timeout=600)
            return float(args.many) / (time.perf_counter() - started)

        def mlp_rows() -> float:
            started = time.perf_counter()
            chunks = [rows[i : i + 32] for i in range(0, len(rows), 32)]
            group(mlp.s(chunk) for chunk in chunks).apply_async().get(timeout=600)
            return len(rows) / (time.perf_counter() - started)

        await asyncio.to_thread(latency)  # warm-up
        await asyncio.to_thread(mlp_rows)
        figures = await _rounds(
            args,
            {
                "echo": lambda: asyncio.to_thread(latency),
                "many_per_s": lambda: asyncio.to_thread(many),
                "mlp_rows_per_s": lambda: asyncio.to_thread(mlp_rows),
            },
        )
        _stop(worker)
        worker = None

        async def zero() -> float:
            pending = echo.delay(PAYLOAD)
            started = time.perf_counter()
            process = _start_celery_worker()
            try:
                await asyncio.to_thread(pending.get, timeout=READY_TIMEOUT_S)
                return (time.perf_counter() - started) * 1000
            finally:
                _stop(process)

        figures.update(await _rounds(args, {"zero_ms": zero}))
        figures["notes"] = ["MLP rows sent 32 per task (Celery has no batching of its own)"]
        return figures
    finally:
        if worker is not None:
            _stop(worker)
        redis.terminate()
        redis.wait(timeout=30)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    """redis-server on loopback, nothing kept on disk."""
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def _start_celery_worker() -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_app", "worker",
               "--pool=prefork", f"--concurrency={os.cpu_count() or 1}", "--loglevel=WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    env = child_env(PYTHONPATH=str(ROOT))
    if os.getuid() == 0:  # Celery refuses pickle as root unless told (loopback only here)
        env["C_FORCE_ROOT"] = "1"
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


def _celery_worker(app: Any) -> subprocess.Popen[bytes]:
    """A worker, once it answers a ping."""
    process = _start_celery_worker()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not app.control.ping(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError("the Celery worker did not start")
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
