"""Workers as local processes, forked from a pre-initialised process: the first `Provider`.

The provider starts and stops workers for the scaler; it knows each one from its
fork to its exit. Forking from the fork server (`control.forking`) skips the
interpreter start and the imports (~250 ms with onnxruntime); `fork=False` spawns
fresh interpreters instead. Each worker gets a share of the cores for ONNX Runtime's
threads, a GPU of its own when the function asks for one and GPUs exist, and the
provider's settings (`Settings.to_env`) and the secrets its function declares. With
`isolate=True`, each function has a fork server of its own in its sandbox
(`control.sandbox`), started when the scaler learns of the function; its workers are
signalled through it, since their pids are the sandbox's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import anyio
import anyio.to_thread
import structlog
from anyio.abc import Process, TaskGroup, TaskStatus

from broker import worker_role
from runtime.control.children import Children
from runtime.control.environment import WorkerAccess, WorkerSecrets, detect_gpus, worker_env
from runtime.control.forking import ForkServer, ForkServers
from runtime.control.gate import Gate, needed_addresses
from runtime.control.processes import WorkerProcess
from runtime.control.provider import Capacity, ProvidedWorker, StartBackoff
from runtime.control.sandbox import Sandbox, gate_inside, gate_path, isolation_unavailable
from runtime.control.secrets import open_secrets
from runtime.core import (
    WORKER_MODULE,
    FunctionSpec,
    Settings,
    StartRefused,
    WorkerInfo,
    WorkerLaunch,
)

__all__ = ["LocalProvider"]

_SHARED = ""  # the fork server of unisolated workers

log = structlog.get_logger("autan.provider")

_EXITS_KEPT = 1024  # exit codes remembered for `exit_code` after a worker is gone


class LocalProvider:
    """Start and stop worker processes on this host."""

    def __init__(
        self,
        settings: Settings,
        *,
        fork: bool = True,
        stop_grace_s: float = 30.0,
        access: WorkerAccess | None = None,
        isolate: bool = False,
        secrets: WorkerSecrets | None = None,
        children: Children | None = None,
        host: str | None = None,
        gpus: list[int] | None = None,
    ) -> None:
        """`host`: the name its workers are known by (a node agent's node; default: the
        host name). `gpus`: the device ids workers may be given (default: nvidia-smi's).
        `access`: gives each function's workers their own NATS identity (the embedded
        stack's); without it, workers connect as this process does. `isolate`: each
        function's workers in a sandbox of its own (ValueError where none can be had).
        `secrets`: opens the secrets a function declares, for its workers' environment.
        `children`: where the stack records the processes it starts."""
        self.settings = settings
        self.access = access
        self.secrets = secrets
        settings.trust()  # ValueError now, rather than workers that verify nothing
        if isolate and (why := isolation_unavailable()):
            raise ValueError(f"workers cannot be isolated here: {why}")
        if isolate and not fork:
            raise ValueError("isolated workers are forked from their sandbox: fork=True")
        self.isolate = isolate
        self.fork = fork
        self.stop_grace_s = stop_grace_s
        self.gpus = detect_gpus() if gpus is None else gpus
        self.cores = os.cpu_count() or 1
        self.host = host or socket.gethostname()
        self._workers: dict[str, WorkerProcess] = {}
        self._exits: OrderedDict[str, int] = OrderedDict()
        # A child that ended before it was noted, by fork server and pid.
        self._unclaimed_exits: dict[tuple[str | None, int], int] = {}
        self._children = children
        self._forks = ForkServers(self._exited_pid, self._fork_server_gone, children)
        self._preparing: dict[str, anyio.Lock] = {}  # sandboxes being made, by function
        self._group: TaskGroup | None = None
        self._changed = anyio.Event()
        self._backoff = StartBackoff()

    # -- lifetime ----------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the fork server and the workers; on cancellation, stop them all.

        Stopping needs the fork server's exit reports, so a reader keeps going in the
        shielded clean-up until the fork server has ended.
        """
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                self._forks.bind(group)
                if self.fork and not self.isolate:
                    await self._forks.ensure(_SHARED)
                if self.isolate:
                    gate = Gate(gate_path(self.settings), needed_addresses(self.settings))
                    await group.start(gate.serve)
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._group = None
            self._forks.bind(None)
            await self._forks.close(self._stop_all)

    async def _stop_all(self) -> None:
        async with anyio.create_task_group() as group:
            for worker in list(self._workers.values()):
                group.start_soon(self._drain, worker)

    # -- the Provider protocol -------------------------------------------------------------

    def workers(self, function: str | None = None) -> list[ProvidedWorker]:
        """Live workers (all, or of one function), oldest first."""
        return [
            worker.view(self.host)
            for worker in self._workers.values()
            if worker.returncode is None and function in (None, worker.launch.function)
        ]

    def capacity(self) -> Capacity:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return Capacity(
            hosts=(self.host,),
            cores=self.cores,
            memory_mb=pages // (1024 * 1024),
            gpus=tuple(self.gpus),
            workers=len(self.workers()),
        )

    async def wait_until(
        self, done: Callable[[list[ProvidedWorker]], bool], timeout_s: float
    ) -> list[ProvidedWorker]:
        """Wait until `done(live workers)` holds (workers start, become ready, exit)."""
        with anyio.fail_after(timeout_s):
            while not done(self.workers()):
                await self._changed.wait()
        return self.workers()

    def start_delay_s(self, function: str) -> float:
        """A worker that cannot start (storage or NATS away, a broken environment) is not
        restarted in a loop (`StartBackoff`)."""
        return self._backoff.delay_s(function)

    def observe(self, info: WorkerInfo) -> ProvidedWorker | None:
        """Note what worker `info.worker_id` announced (its version; ready), if it is ours."""
        worker = self._workers.get(info.worker_id)
        if worker is None or worker.returncode is not None:
            return None
        worker.version = info.version or worker.version
        if info.state == "ready" and not worker.ready_unix_s:
            worker.ready_unix_s = time.time()
            self._backoff.succeeded(worker.launch.function)
            self._notify()
        return worker.view(self.host)

    def prepare(self, spec: FunctionSpec) -> None:
        """Isolated: start the function's sandbox now, so that its first worker forks at
        once (a sandbox's fork server takes ~0.5 s to start)."""
        if self.isolate and self._group is not None:
            self._group.start_soon(self._prepare, spec)

    async def _prepare(self, spec: FunctionSpec) -> None:
        try:
            await self._sandbox_server(spec)
        except Exception as exc:  # its first worker tries again, and reports it
            log.warning("cannot start a function's sandbox", function=spec.qualname,
                        error=str(exc))  # fmt: skip

    async def _sandbox_server(self, spec: FunctionSpec) -> tuple[Sandbox, ForkServer]:
        sandbox = Sandbox(self.settings, worker_role(spec.app, spec.name))
        async with self._preparing.setdefault(sandbox.role, anyio.Lock()):  # once at a time
            server = self._forks.get(sandbox.role)
            if server is None:
                creds = await self.access.worker_creds(spec) if self.access else None
                creds = creds or self.settings.nats_creds
                await anyio.to_thread.run_sync(sandbox.prepare, creds)
                env = worker_env(self.settings, threads=1, device=None, isolated=True)
                server = await self._forks.ensure(sandbox.role, sandbox.command, env)
        return sandbox, server

    async def start(self, spec: FunctionSpec, *, devices: tuple[int, ...] = ()) -> ProvidedWorker:
        """Start one worker of `spec`; returns once its process exists. `devices`: the
        GPUs placement chose for it (else the least used one, if it asks for a GPU)."""
        threads = max(1, self.cores // (len(self.workers()) + 1))
        device = devices[0] if devices else self._pick_device() if spec.options.gpu else None
        launch = WorkerLaunch(
            function=spec.qualname,
            worker_id=f"{self.host}-{secrets.token_hex(4)}",
            threads=threads,
            memory_mb=spec.options.memory_mb,
            spawned_unix_s=time.time(),
            parent_pid=0 if self.fork else os.getpid(),  # forked: the fork server's child
            min_sequence=spec.sequence,
            isolated=self.isolate,
            gate=str(gate_inside(self.settings)) if self.isolate else "",
            node=self.host,
        )
        worker = WorkerProcess(launch, spec.version, device)
        opened = await self._secrets_for(spec)
        creds = await self.access.worker_creds(spec) if self.access is not None else None
        if self.isolate:  # its seed, as the sandbox shows it
            sandbox, server = await self._sandbox_server(spec)
            creds = sandbox.seed if creds or self.settings.nats_creds else None
        settings = sandbox.worker_settings() if self.isolate else self.settings
        env = worker_env(settings, threads=threads, device=devices or device, creds=creds,
                         secrets=opened, isolated=self.isolate)  # fmt: skip
        if self.isolate:
            worker.pid, worker.forked_by = await server.fork(launch.argv(), env), sandbox.role
        elif self.fork:
            server = await self._forks.ensure(_SHARED)
            worker.pid, worker.forked_by = await server.fork(launch.argv(), env), _SHARED
        else:
            worker.process = await self._spawn(launch.argv(), env)
            worker.pid = worker.process.pid
        worker.started_unix_s = time.time()  # its process exists from now
        if self._children is not None and not launch.isolated:  # a sandbox's end with it
            self._children.record(worker.pid, "worker")
        del env, opened  # held by the worker alone from here
        self._workers[launch.worker_id] = worker
        self._notify()
        if (code := self._unclaimed_exits.pop((worker.forked_by, worker.pid), None)) is not None:
            self._exited(worker, code)
        log.info("worker started", function=spec.qualname, worker=launch.worker_id,
                 pid=worker.pid, threads=threads, device=device)  # fmt: skip
        return worker.view(self.host)

    async def stop(self, worker_id: str) -> None:
        """SIGTERM now (the worker stops pulling and finishes); SIGKILL after the grace
        period, in the background."""
        worker = self._workers.get(worker_id)
        if worker is None or worker.stopping or worker.returncode is not None:
            return
        worker.stopping = True
        await self._signal(worker, signal.SIGTERM)
        self._notify()
        if self._group is not None:
            self._group.start_soon(self._drain, worker)

    async def exit_code(self, worker_id: str) -> int:
        worker = self._workers.get(worker_id)
        if worker is not None:
            await self._exit_of(worker)
        try:
            return self._exits[worker_id]
        except KeyError:
            raise LookupError(f"no worker {worker_id!r} was started here") from None

    # -- processes ---------------------------------------------------------------------

    async def _drain(self, worker: WorkerProcess) -> None:
        """Stop a worker: SIGTERM, then SIGKILL if it outlives the grace period."""
        if worker.returncode is not None:
            return
        if not worker.stopping:
            worker.stopping = True
            await self._signal(worker, signal.SIGTERM)
        with anyio.move_on_after(self.stop_grace_s):
            await self._exit_of(worker)
            return
        log.warning("worker did not stop in time; killing it", worker=worker.launch.worker_id)
        await self._signal(worker, signal.SIGKILL)
        await self._exit_of(worker)

    async def _exit_of(self, worker: WorkerProcess) -> None:
        # A spawned process is awaited directly: its waiting task may be cancelled already.
        if worker.process is not None and worker.returncode is None:
            self._exited(worker, await worker.process.wait())
        await worker.exited.wait()

    async def _secrets_for(self, spec: FunctionSpec) -> dict[str, str]:
        """What `spec` declares, opened; StartRefused (a failed start: backed off) if not."""
        try:
            return await open_secrets(self.secrets, spec)
        except StartRefused:
            self._backoff.failed(spec.qualname)
            raise

    async def _signal(self, worker: WorkerProcess, sig: int) -> None:
        if not worker.launch.isolated:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, sig)
        elif (server := self._forks.get(worker.forked_by or "")) is not None:
            await server.signal(worker.pid, sig)

    async def _spawn(self, argv: list[str], env: dict[str, str]) -> Process:
        command = [sys.executable, "-m", WORKER_MODULE, *argv]
        process = await anyio.open_process(command, env=env, stdin=subprocess.DEVNULL,
                                           stdout=None, stderr=None,
                                           start_new_session=True)  # fmt: skip
        if self._group is None:
            raise RuntimeError("serve() owns the processes: start it first")
        self._group.start_soon(self._await_exit, process)
        return process

    async def _await_exit(self, process: Process) -> None:
        code = await process.wait()
        self._exited_pid(None, process.pid, code)

    def _exited_pid(self, forked_by: str | None, pid: int, code: int) -> None:
        for worker in self._workers.values():
            if worker.forked_by == forked_by and worker.pid == pid and worker.returncode is None:
                self._exited(worker, code)
                return
        self._unclaimed_exits[(forked_by, pid)] = code
        if len(self._unclaimed_exits) > _EXITS_KEPT:
            del self._unclaimed_exits[next(iter(self._unclaimed_exits))]

    def _fork_server_gone(self, key: str) -> None:
        """Its workers ended with it, whether or not their exits were reported."""
        for worker in list(self._workers.values()):
            if worker.forked_by == key:
                self._exited(worker, -signal.SIGKILL)

    def _exited(self, worker: WorkerProcess, code: int) -> None:
        if worker.returncode is not None:
            return
        worker.returncode = code
        if self._children is not None and not worker.launch.isolated:
            self._children.forget(worker.pid)
        worker_id = worker.launch.worker_id
        self._workers.pop(worker_id, None)
        self._exits[worker_id] = code
        while len(self._exits) > _EXITS_KEPT:
            self._exits.popitem(last=False)
        worker.exited.set()
        function = worker.launch.function
        if not worker.ready_unix_s and not worker.stopping:
            self._backoff.failed(function)
        self._notify()
        level = "info" if worker.stopping and code == 0 else "warning"
        getattr(log, level)("worker exited", function=function, worker=worker_id,
                            pid=worker.pid, code=code)  # fmt: skip

    def _pick_device(self) -> int | None:
        if not self.gpus:
            return None
        load = {gpu: 0 for gpu in self.gpus}
        for worker in self._workers.values():
            if worker.device is not None and worker.returncode is None:
                load[worker.device] += 1
        return min(load, key=lambda gpu: (load[gpu], gpu))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
