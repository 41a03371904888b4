"""One worker process as the local provider keeps it, from its fork to its exit."""

from __future__ import annotations

import os
import secrets
import time

import anyio
from anyio.abc import Process

from runtime.control.provider import ProvidedWorker, WorkerState
from runtime.control.sandbox import gate_inside
from runtime.core import FunctionSpec, Settings, WorkerLaunch

__all__ = ["WorkerProcess", "launch_for"]


def launch_for(
    spec: FunctionSpec, settings: Settings, host: str, *, threads: int, fork: bool, isolate: bool
) -> WorkerLaunch:
    """The command line of a new worker of `spec` on `host`."""
    return WorkerLaunch(
        function=spec.qualname,
        worker_id=f"{host}-{secrets.token_hex(4)}",
        threads=threads,
        memory_mb=spec.options.memory_mb,
        spawned_unix_s=time.time(),
        parent_pid=0 if fork else os.getpid(),  # forked: the fork server's child
        min_sequence=spec.sequence,
        isolated=isolate,
        gate=str(gate_inside(settings)) if isolate else "",
        node=host,
    )


class WorkerProcess:
    """One worker process, as the provider keeps it (the scaler sees `ProvidedWorker`s)."""

    def __init__(self, launch: WorkerLaunch, version: str, device: int | None) -> None:
        self.launch = launch
        self.version = version
        self.device = device
        self.pid = 0  # in its fork server's pid namespace when isolated
        self.forked_by: str | None = None  # the fork server's key; None when spawned
        self.process: Process | None = None  # when spawned rather than forked
        self.started_unix_s = time.time()
        self.ready_unix_s = 0.0
        self.stopping = False
        self.returncode: int | None = None
        self.exited = anyio.Event()

    @property
    def state(self) -> WorkerState:
        if self.stopping:
            return "stopping"
        return "ready" if self.ready_unix_s else "starting"

    def view(self, host: str) -> ProvidedWorker:
        return ProvidedWorker(
            worker_id=self.launch.worker_id,
            function=self.launch.function,
            version=self.version,
            state=self.state,
            host=host,
            started_unix_s=self.started_unix_s,
            ready_unix_s=self.ready_unix_s,
            threads=self.launch.threads,
            device=self.device,
            pid=0 if self.launch.isolated else self.pid,
            isolated=self.launch.isolated,
        )
