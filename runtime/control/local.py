"""Workers as local processes, forked from a pre-initialised process: the first `Provider`.

The provider starts and stops workers for the scaler, from fork to exit. The fork
server (`control.forking`) skips the interpreter start and the imports (~250 ms with
onnxruntime), a function's template (`control.templates`) its loading too; `fork=False`
spawns fresh interpreters. Each worker gets a share of the cores for ONNX Runtime's
threads, a GPU of its own when asked for and present, the provider's settings and its
function's secrets. With `isolate=True`, each function has a fork server of its own in
its sandbox (`control.sandbox`); its workers are signalled through it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import anyio.to_thread
import structlog
from anyio.abc import Process, TaskGroup, TaskStatus

from broker import worker_role
from runtime.control.children import Children
from runtime.control.environment import WorkerAccess, WorkerSecrets, detect_gpus, worker_env
from runtime.control.forking import ForkServer, ForkServers
from runtime.control.gate import Gate, needed_addresses
from runtime.control.processes import WorkerProcess, launch_for
from runtime.control.provider import Capacity, ProvidedWorker, StartBackoff
from runtime.control.sandbox import Sandbox, gate_path, isolation_unavailable
from runtime.control.secrets import open_secrets
from runtime.control.templates import ProviderTemplates
from runtime.core import (
    WORKER_MODULE,
    FunctionSpec,
    Settings,
    StartRefused,
    WorkerInfo,
    usable_cores,
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
        self.cores = usable_cores()  # its affinity and its cgroup's quota, not the host's
        self.host = host or socket.gethostname()
        self._workers: dict[str, WorkerProcess] = {}
        self._exits: OrderedDict[str, int] = OrderedDict()
        self._unclaimed_exits: dict[tuple[str | None, int], int] = {}  # by fork server, pid
        self._children = children
        self.templates: ProviderTemplates
        templates = lambda *report: self.templates.reported(*report, self._group)  # noqa: E731
        self._forks = ForkServers(self._exited_pid, self._fork_server_gone, children, templates)
        self.templates = ProviderTemplates(settings, self._forks, access=access,
                                            isolate=isolate, fork=fork, gpus=self.gpus)  # fmt: skip
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
        once (a sandbox's fork server takes ~0.5 s to start); with AUTAN_TEMPLATES=deploy,
        build its template too."""
        if (self.isolate or self.settings.templates == "deploy") and self._group is not None:
            self._group.start_soon(self._prepare, spec)

    async def _prepare(self, spec: FunctionSpec) -> None:
        try:
            server = (await self._sandbox_server(spec))[1] if self.isolate else None
            if self.settings.templates == "deploy" and self.templates.applies(spec):
                key = worker_role(spec.app, spec.name) if self.isolate else _SHARED
                server = server or await self._forks.ensure(_SHARED)
                opened = await open_secrets(self.secrets, spec)
                await self.templates.build(spec, key, server, self.host, opened)
        except Exception as exc:  # its first worker tries again, and reports it
            log.warning("cannot prepare a function's workers", function=spec.qualname,
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
        """Start one worker of `spec`; returns once its process exists, or is to be forked
        from its function's template once that is built (its pid is 0 until then).
        `devices`: the GPUs placement chose (else the least used, if it asks for a GPU)."""
        threads = max(1, self.cores // (len(self.workers()) + 1))
        device = devices[0] if devices else self._pick_device() if spec.options.gpu else None
        launch = launch_for(spec, self.settings, self.host, threads=threads, fork=self.fork,
                            isolate=self.isolate)  # fmt: skip
        worker = WorkerProcess(launch, spec.version, device)
        opened = await self._secrets_for(spec)
        creds = await self.access.worker_creds(spec) if self.access is not None else None
        if self.isolate:  # its seed, as the sandbox shows it
            sandbox, server = await self._sandbox_server(spec)
            creds = sandbox.seed if creds or self.settings.nats_creds else None
        settings = sandbox.worker_settings() if self.isolate else self.settings
        env = worker_env(settings, threads=threads, device=devices or device, creds=creds,
                         secrets=opened, isolated=self.isolate)  # fmt: skip
        template = self.templates.request(spec, launch, opened, settings, creds)
        if self.fork:
            key = sandbox.role if self.isolate else _SHARED
            server = server if self.isolate else await self._forks.ensure(_SHARED)
            worker.forked_by = key
            fork = partial(server.fork, launch.argv(), env, template)
            if template is not None and not await self.templates.use(template, key, spec):
                # Its fork waits for the template's build: the scaler does not.
                self._workers[launch.worker_id] = worker
                self._notify()
                assert self._group is not None
                self._group.start_soon(self._forked, worker, fork)
                return worker.view(self.host)
            worker.pid = await fork()
        else:
            worker.process = await self._spawn(launch.argv(), env)
            worker.pid = worker.process.pid
        del env, opened  # held by the worker alone from here
        self._workers[launch.worker_id] = worker
        await self._forked(worker)
        return worker.view(self.host)

    async def _forked(
        self, worker: WorkerProcess, fork: Callable[[], Awaitable[int]] | None = None
    ) -> None:
        """`worker`'s process exists from now (`fork`: once that has forked it)."""
        try:
            worker.pid = await fork() if fork is not None else worker.pid
        except Exception as exc:  # the fork server is gone, or the build outlived its bound
            log.warning("cannot fork a worker from its template", worker=worker.launch.worker_id,
                        error=str(exc))  # fmt: skip
            self._exited(worker, 70)
            return
        except BaseException:  # the provider stops: it ends with its fork server
            self._exited(worker, -signal.SIGKILL)
            raise
        worker.started_unix_s = time.time()
        if self._children is not None and not worker.launch.isolated:  # a sandbox's: its own
            self._children.record(worker.pid, "worker")
        self._notify()
        if (code := self._unclaimed_exits.pop((worker.forked_by, worker.pid), None)) is not None:
            self._exited(worker, code)
        log.info("worker started", function=worker.launch.function, worker=worker.launch.worker_id,
                 pid=worker.pid, threads=worker.launch.threads, device=worker.device)  # fmt: skip
        if worker.stopping and worker.returncode is None:  # stopped while it waited
            await self._signal(worker, signal.SIGTERM)

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
        if not worker.pid:  # not forked yet (it waits for its template): signalled then
            return
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
        self.templates.book.server_gone(key)
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
