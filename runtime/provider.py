"""Workers as local processes, forked from a pre-initialised process.

The provider starts and stops workers for the scaler; it knows each one from
its fork to its exit. Forking from `runtime.forkserver` skips the interpreter
start and the imports (~250 ms with onnxruntime); `fork=False` spawns fresh
interpreters instead. Each worker gets a share of the cores for ONNX Runtime's
threads, and a GPU of its own when the function asks for one and GPUs exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import Process, TaskGroup, TaskStatus

from runtime.settings import Settings

__all__ = ["LocalProvider", "WorkerProcess", "detect_gpus"]

log = structlog.get_logger("autan.provider")


class WorkerProcess:
    """One worker process: starting until it announces itself ready, then ready."""

    def __init__(self, qualname: str, pid: int, *, threads: int, device: int | None) -> None:
        self.qualname = qualname
        self.pid = pid
        self.threads = threads
        self.device = device
        self.spawned_at = time.monotonic()
        self.ready_at: float | None = None
        self.stopping = False
        self.observed = False  # its cold start went into the metrics
        self.version = ""  # the function version it announced
        self.process: Process | None = None  # when spawned rather than forked
        self.returncode: int | None = None
        self.exited = anyio.Event()

    @property
    def state(self) -> str:
        if self.returncode is not None:
            return "exited"
        return "ready" if self.ready_at is not None else "starting"

    def __repr__(self) -> str:
        return f"WorkerProcess({self.qualname}, pid={self.pid}, {self.state})"


def detect_gpus() -> list[int]:
    """GPU device ids on this host: from nvidia-smi when present, else none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [i for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


class LocalProvider:
    """Start and stop `autan worker APP.FN` processes on this host."""

    def __init__(self, settings: Settings, *, fork: bool = True, stop_grace_s: float = 30.0):
        self.settings = settings
        self.fork = fork
        self.stop_grace_s = stop_grace_s
        self.gpus = detect_gpus()
        self.cores = os.cpu_count() or 1
        self.host = socket.gethostname()
        self._workers: dict[int, WorkerProcess] = {}
        self._zygote: Process | None = None
        self._spawned: dict[int, anyio.Event] = {}
        self._spawn_pids: dict[int, int] = {}
        self._next_id = 0
        self._group: TaskGroup | None = None
        self._zygote_ready = anyio.Event()
        self._changed = anyio.Event()
        self._zygote_buffer = b""  # kept here: a second reader takes over at shutdown
        self._failed_starts: dict[str, tuple[int, float]] = {}  # count, when the last failed

    # -- lifetime -----------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the fork server and the workers; on cancellation, stop them all.

        Stopping needs the fork server's exit reports, so a reader keeps going in the
        shielded clean-up until the fork server has ended.
        """
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                if self.fork:
                    await self._start_zygote(group)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as cleanup:
                    if self._zygote is not None:
                        cleanup.start_soon(self._read_zygote, self._zygote)
                    await self.stop_all()
                    await self._stop_zygote()

    async def stop_all(self) -> None:
        async with anyio.create_task_group() as group:
            for worker in list(self._workers.values()):
                group.start_soon(self.stop, worker)

    # -- workers ----------------------------------------------------------------------

    def workers(self, qualname: str | None = None) -> list[WorkerProcess]:
        """Live workers (all, or of one function), oldest first."""
        live = [w for w in self._workers.values() if w.returncode is None]
        return [w for w in live if qualname is None or w.qualname == qualname]

    async def wait_until(
        self, done: Callable[[list[WorkerProcess]], bool], timeout_s: float
    ) -> list[WorkerProcess]:
        """Wait until `done(live workers)` holds (workers start, become ready, exit)."""
        with anyio.fail_after(timeout_s):
            while not done(self.workers()):
                await self._changed.wait()
        return self.workers()

    def start_delay_s(self, qualname: str) -> float:
        """How long to wait before starting `qualname` again after workers died starting.

        0.5 s after the first failed start, doubling up to 30 s: a worker that cannot
        start (storage or NATS away, a broken environment) is not restarted in a loop.
        """
        failures, last = self._failed_starts.get(qualname, (0, 0.0))
        if not failures:
            return 0.0
        backoff_s = min(30.0, 0.5 * 2.0 ** (failures - 1))
        return max(0.0, last + backoff_s - time.monotonic())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def known(self, pid: int, *, host: str) -> WorkerProcess | None:
        """The live worker `pid` on `host`, if it is one of ours."""
        return self._workers.get(pid) if host == self.host else None

    def mark_ready(self, pid: int, *, host: str) -> WorkerProcess | None:
        """Note that worker `pid` announced itself ready (if it is one of ours)."""
        worker = self.known(pid, host=host)
        if worker is not None and worker.ready_at is None:
            worker.ready_at = time.monotonic()
            self._failed_starts.pop(worker.qualname, None)
            self._notify()
        return worker

    async def start(
        self, qualname: str, *, gpu: bool | str = False, memory_mb: int | None = None
    ) -> WorkerProcess:
        """Start one worker of `qualname`; returns once its process exists."""
        threads = max(1, self.cores // (len(self.workers()) + 1))
        device = self._pick_device() if gpu else None
        argv = ["worker", qualname, "--threads", str(threads)]
        env = self.worker_env(threads=threads, device=device)
        if memory_mb:
            env["AUTAN_MEMORY_LIMIT_MB"] = str(memory_mb)
        process = None if self.fork else await self._spawn(argv, env)
        pid = process.pid if process is not None else await self._fork(argv, env)
        worker = self._workers[pid] = WorkerProcess(qualname, pid, threads=threads, device=device)
        worker.process = process
        self._notify()
        log.info("worker started", function=qualname, pid=pid, threads=threads, device=device)
        return worker

    async def stop(self, worker: WorkerProcess, *, grace_s: float | None = None) -> None:
        """SIGTERM: the worker stops pulling and finishes; SIGKILL after the grace period."""
        if worker.returncode is not None:
            return
        worker.stopping = True
        _signal(worker.pid, signal.SIGTERM)
        with anyio.move_on_after(self.stop_grace_s if grace_s is None else grace_s):
            await self._exit_of(worker)
            return
        log.warning("worker did not stop in time; killing it", pid=worker.pid)
        _signal(worker.pid, signal.SIGKILL)
        await self._exit_of(worker)

    async def _exit_of(self, worker: WorkerProcess) -> None:
        # A spawned process is awaited directly: its waiting task may be cancelled already.
        if worker.process is not None:
            self._exited(worker.pid, await worker.process.wait())
        await worker.exited.wait()

    def worker_env(self, *, threads: int, device: int | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ORT_DISABLE_TELEMETRY="1",
            AUTAN_NATS_URL=self.settings.nats_url,
            AUTAN_DATA_DIR=str(self.settings.data_dir.resolve()),
            AUTAN_LOG_FORMAT=self.settings.log_format,
            AUTAN_LOG_LEVEL=self.settings.log_level,
            AUTAN_SPAWNED_UNIX_S=repr(time.time()),
            OMP_NUM_THREADS=str(threads),
        )
        optional = {
            "AUTAN_STORAGE_URL": self.settings.storage_url,
            "AUTAN_SIGNING_KEY": self.settings.signing_key,
            "AUTAN_S3_ACCESS_KEY": self.settings.s3_access_key,
            "AUTAN_S3_SECRET_KEY": self.settings.s3_secret_key,
            "CUDA_VISIBLE_DEVICES": None if device is None else str(device),
        }
        env.update({name: value for name, value in optional.items() if value})
        return env

    def _pick_device(self) -> int | None:
        if not self.gpus:
            return None
        load = {gpu: 0 for gpu in self.gpus}
        for worker in self.workers():
            if worker.device is not None:
                load[worker.device] += 1
        return min(load, key=lambda gpu: (load[gpu], gpu))

    def _exited(self, pid: int, code: int) -> None:
        worker = self._workers.pop(pid, None)
        if worker is None:
            return
        worker.returncode = code
        worker.exited.set()
        if worker.ready_at is None and not worker.stopping:
            self._failed_starts[worker.qualname] = (
                self._failed_starts.get(worker.qualname, (0, 0.0))[0] + 1,
                time.monotonic(),
            )
        self._notify()
        level = "info" if worker.stopping and code == 0 else "warning"
        getattr(log, level)("worker exited", function=worker.qualname, pid=pid, code=code)

    # -- plain processes ----------------------------------------------------------

    async def _spawn(self, argv: list[str], env: dict[str, str]) -> Process:
        command = [sys.executable, "-m", "runtime.cli", *argv]
        process = await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL,
                                           stdout=None, stderr=None)  # fmt: skip
        assert self._group is not None, "serve() owns the processes: start it first"
        self._group.start_soon(self._await_exit, process)
        return process

    async def _await_exit(self, process: Process) -> None:
        self._exited(process.pid, await process.wait())

    # -- the fork server ---------------------------------------------------------------

    async def _start_zygote(self, group: TaskGroup) -> None:
        env = dict(os.environ, ORT_DISABLE_TELEMETRY="1", OPENBLAS_NUM_THREADS="1")
        self._zygote = await anyio.open_process(
            [sys.executable, "-m", "runtime.forkserver"], env=env, stderr=None
        )
        group.start_soon(self._read_zygote, self._zygote)
        with anyio.fail_after(60):
            await self._zygote_ready.wait()

    async def _fork(self, argv: list[str], env: dict[str, str]) -> int:
        if self._zygote is None or self._zygote.stdin is None:
            raise RuntimeError("the fork server is not running: start serve() first")
        self._next_id += 1
        request_id = self._next_id
        done = self._spawned[request_id] = anyio.Event()
        request = {"id": request_id, "argv": argv, "env": env}
        await self._zygote.stdin.send(json.dumps(request).encode() + b"\n")
        with anyio.fail_after(10):
            await done.wait()
        del self._spawned[request_id]
        return self._spawn_pids.pop(request_id)

    async def _read_zygote(self, zygote: Process) -> None:
        assert zygote.stdout is not None
        async for chunk in zygote.stdout:
            self._zygote_buffer += chunk
            *lines, self._zygote_buffer = self._zygote_buffer.split(b"\n")
            for line in lines:
                self._on_zygote(json.loads(line))
        code = await zygote.wait()
        if code != 0:
            log.warning("the fork server exited", code=code)

    def _on_zygote(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self._zygote_ready.set()
        elif "exit" in message:
            self._exited(int(message["exit"]), int(message["code"]))
        elif "id" in message:
            self._spawn_pids[int(message["id"])] = int(message["pid"])
            self._spawned[int(message["id"])].set()

    async def _stop_zygote(self) -> None:
        if self._zygote is None:
            return
        if self._zygote.stdin is not None:
            await self._zygote.stdin.aclose()
        with anyio.move_on_after(5):
            await self._zygote.wait()
            return
        self._zygote.kill()


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
