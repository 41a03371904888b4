"""A function version loaded ahead of its workers: what a template process holds.

A template (`worker.templates`) does once what each worker did before its first call:
read and verify the signed entry, fetch the artifact and models, unpickle, build the
ONNX Runtime sessions, run `setup`. Its workers fork from it and start with all of it
in memory.

A fork keeps only the thread that forks, so a template holds no other thread when it
forks. Its sessions are built with one intra-op thread (ONNX Runtime then starts no
pool: a pool's threads would be missing in every child, which would then run its
sessions on the calling thread alone) and on the CPU only (a CUDA context does not
survive a fork). A worker given more threads builds its own sessions in the background
and swaps them in (`rethread`). `prepare` checks with the kernel that one thread is
left before the template serves; otherwise (a `setup` that starts a thread) it refuses,
and workers start the ordinary way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from broker import worker_role
from runtime.core import (
    Context,
    FunctionSpec,
    Link,
    ModelFile,
    ModelHandle,
    Settings,
    SignedSpec,
    WorkerLaunch,
    configure_logging,
    load_models,
    split_qualname,
)
from runtime.worker.loader import Loaded, fetch_function
from runtime.worker.network import through_gate
from storage import ArtifactStore, DiskCache

__all__ = ["Prepared", "TemplateUnsafe", "prepare", "rethread", "rethread_later"]

_THREADS_GONE_S = 2.0  # how long helper threads (the loader's) may take to end
# A worker forked from a template builds its own multi-threaded sessions this long after
# it is ready (its first calls run on the template's single-threaded ones meanwhile).
RETHREAD_AFTER_S = 0.2


class TemplateUnsafe(RuntimeError):
    """This function cannot be kept as a template here; its workers start as usual."""


@dataclass
class Prepared:
    """A verified function with its sessions built and its `setup` run, ready to fork."""

    spec: FunctionSpec
    signed: SignedSpec  # the registry entry it verified
    settings: Settings  # what the template read from its environment
    loaded: Loaded
    models: dict[str, ModelHandle]
    state: Any
    timings_ms: dict[str, float] = field(default_factory=dict)
    ready_unix_s: float = 0.0

    def serves(self, signed: SignedSpec, min_sequence: int) -> bool:
        """Whether a worker that read `signed` from the registry, and may serve no deploy
        older than `min_sequence`, may use it: the entry is the one it verified."""
        return signed == self.signed and self.spec.sequence >= min_sequence


def prepare(argv: list[str], env: dict[str, str], version: str) -> Prepared:
    """Load `version` of the function `argv` (a `WorkerLaunch`) names, in this process,
    leaving no thread behind; TemplateUnsafe says why it cannot."""
    started = time.perf_counter()
    os.environ.clear()
    os.environ.update(env)
    launch = WorkerLaunch.from_argv(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    if launch.isolated:  # what user code finds in its environment, as in a worker
        for name in [name for name in os.environ if Settings.reads(name)]:
            del os.environ[name]
    if launch.gate:
        through_gate(Path(launch.gate), settings)
    spec, signed, loaded, timings = anyio.run(_fetch, settings, launch)
    if spec.version != version:
        raise TemplateUnsafe(f"the registry holds version {spec.version} now, not {version}")
    if spec.options.gpu:
        raise TemplateUnsafe("it runs on a GPU: a CUDA context does not survive a fork")
    phase = time.perf_counter()
    models = load_models(loaded.models, intra_op_threads=1, cache_dir=_optimized(settings))
    timings["sessions"] = _ms_since(phase)
    phase = time.perf_counter()
    log = structlog.get_logger("autan.worker").bind(function=spec.qualname, worker="template")
    ctx = Context(function=spec.qualname, models=models, log=log, node=launch.node)
    state = loaded.setup(ctx) if loaded.setup else None
    timings["setup"] = _ms_since(phase)
    _await_one_thread()
    timings["template"] = _ms_since(started)
    return Prepared(spec, signed, settings, loaded, models, state, timings, time.time())


async def _fetch(
    settings: Settings, launch: WorkerLaunch
) -> tuple[FunctionSpec, SignedSpec, Loaded, dict[str, float]]:
    app, fn = split_qualname(launch.function)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    link = await Link.open(settings, name=f"autan-template-{app}.{fn}", role=worker_role(app, fn))
    try:
        timings["connect"] = _ms_since(started)
        started = time.perf_counter()
        signed = await link.registry.signed(app, fn)
        timings["registry"] = _ms_since(started)
        started = time.perf_counter()
        spec = settings.trust().verify(signed, app, fn, min_sequence=launch.min_sequence)
        timings["verify"] = _ms_since(started)
        artifacts = ArtifactStore(await link.store())
        loaded = await fetch_function(spec, artifacts, DiskCache(settings.cache_dir))
        timings.update(loaded.timings_ms)
    finally:
        await link.close()
    return spec, signed, loaded, timings


def _await_one_thread() -> None:
    """Wait for the helper threads of the load to end; refuse if any thread stays."""
    deadline = time.monotonic() + _THREADS_GONE_S
    while (count := len(os.listdir("/proc/self/task"))) > 1:
        if time.monotonic() > deadline:
            raise TemplateUnsafe(
                f"{count - 1} thread(s) besides the main one are still running after setup; "
                "a fork keeps only the main one (start threads in the function, not in setup)"
            )
        time.sleep(0.002)


def rethread(prepared: Prepared, threads: int, cache_dir: Path) -> dict[str, ModelHandle]:
    """Build the sessions again with `threads` intra-op threads and swap them into the
    handles the function already holds; the handles, for the log."""
    files: dict[str, ModelFile | Path] = dict(prepared.loaded.models)
    fresh = load_models(files, intra_op_threads=threads, cache_dir=cache_dir, spinning=False)
    for name, handle in prepared.models.items():
        handle.session = fresh[name].session  # a call under way keeps the one it holds
    return prepared.models


async def rethread_later(
    prepared: Prepared, threads: int, cache_dir: Path, log: structlog.typing.FilteringBoundLogger
) -> None:
    """A template's sessions run on one thread: once the first calls are served, build
    this worker's own with its `threads` and swap them in (CPU sessions only)."""
    models = prepared.models.values()
    if not models or any(set(m.providers) != {"CPUExecutionProvider"} for m in models):
        return
    await anyio.sleep(RETHREAD_AFTER_S)
    started = time.perf_counter()
    try:
        await anyio.to_thread.run_sync(rethread, prepared, threads, cache_dir)
    except Exception as exc:  # it serves on, on one thread
        log.warning("cannot rebuild the sessions with more threads", error=str(exc))
        return
    log.info("sessions rebuilt with this worker's threads", threads=threads,
             ms=_ms_since(started))  # fmt: skip


def _optimized(settings: Settings) -> Path:
    return settings.cache_dir / "optimized"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
