"""One worker process as the local provider keeps it, from its fork to its exit."""

from __future__ import annotations

import time

import anyio
from anyio.abc import Process

from runtime.control.provider import ProvidedWorker, WorkerState
from runtime.core import WorkerLaunch

__all__ = ["WorkerProcess"]


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
