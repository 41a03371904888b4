"""The control plane's edge: what starts, stops and lists workers, whatever runs them.

The scaler decides how many workers each function should have; a `Provider` makes it
so. `LocalProvider` (`control.local`) forks processes on this host; a provider of
agents on other hosts, or of Kubernetes pods, implements the same protocol. The scaler
sees workers only as `ProvidedWorker` snapshots, named by a worker id (never a pid),
and changes a provider's state only through these methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from runtime.core import FunctionSpec, WorkerInfo

__all__ = ["Capacity", "ProvidedWorker", "Provider", "StartBackoff", "WorkerState"]

WorkerState = Literal["starting", "ready", "stopping"]


class ProvidedWorker(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker as its provider sees it (a snapshot: ask again for news)."""

    worker_id: str
    function: str  # APP.FN
    version: str  # the function version it serves (as it announced, else as asked)
    state: WorkerState
    host: str
    started_unix_s: float  # when its process (or pod, ...) came to exist
    ready_unix_s: float = 0.0  # when the provider heard it was ready (0: not yet)
    threads: int = 0  # ONNX Runtime intra-op threads it was given
    device: int | None = None  # the GPU it was pinned to
    pid: int = 0  # its process id, where the provider knows it (0: not known)
    isolated: bool = False  # in a sandbox of its own (`control.sandbox`)


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider can run workers on, and what runs there now."""

    hosts: tuple[str, ...]
    cores: int
    memory_mb: int
    gpus: tuple[int, ...]
    workers: int


class Provider(Protocol):
    """Starts, stops and lists workers for the scaler."""

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the workers until cancelled; then stop every one of them."""
        ...

    def prepare(self, spec: FunctionSpec) -> None:
        """Get ready, in the background, to start `spec`'s workers fast (a sandbox's fork
        server, an image pulled); the scaler calls it when it learns of a function."""
        ...

    async def start(self, spec: FunctionSpec) -> ProvidedWorker:
        """Start one worker of `spec`'s version; returns once it exists (it is starting)."""
        ...

    async def stop(self, worker_id: str) -> None:
        """Ask a worker to stop gracefully (stop pulling, finish what it holds, exit).

        It counts as stopping from this call on; the provider ends it in the background
        (forcibly after a grace period), and `exit_code` tells how it ended.
        """
        ...

    async def exit_code(self, worker_id: str) -> int:
        """How a worker ended, once it has (waits for it)."""
        ...

    def workers(self, function: str | None = None) -> list[ProvidedWorker]:
        """Live workers (all, or of one function `APP.FN`), oldest first."""
        ...

    def capacity(self) -> Capacity:
        """The hosts, cores, memory and GPUs workers can use, and how many run now."""
        ...

    def start_delay_s(self, function: str) -> float:
        """How long to wait before starting `function` again (0: now) after its workers
        died while starting, so that a broken function is not restarted in a loop."""
        ...

    def observe(self, info: WorkerInfo) -> ProvidedWorker | None:
        """A worker announced itself (ready, its version): its new state if it is one of
        this provider's, else None."""
        ...

    async def wait_until(
        self, done: Callable[[list[ProvidedWorker]], bool], timeout_s: float
    ) -> list[ProvidedWorker]:
        """Wait until `done(live workers)` holds (they start, become ready, exit);
        TimeoutError after `timeout_s`."""
        ...


class StartBackoff:
    """When to start a function's workers again after they died while starting: 0.5 s
    after the first failure, doubling up to 30 s, so that a broken function is not
    restarted in a loop; a worker that becomes ready clears it."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # count, when the last failed

    def failed(self, function: str) -> None:
        count = self._failures.get(function, (0, 0.0))[0] + 1
        self._failures[function] = (count, time.monotonic())

    def succeeded(self, function: str) -> None:
        self._failures.pop(function, None)

    def delay_s(self, function: str) -> float:
        count, last = self._failures.get(function, (0, 0.0))
        if not count:
            return 0.0
        return max(0.0, last + min(30.0, 0.5 * 2.0 ** (count - 1)) - time.monotonic())
