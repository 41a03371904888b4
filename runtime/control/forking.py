"""The provider's side of the fork server (`runtime.worker.forkserver`): ask it for a
worker, learn its pid, hear when it exits.

The fork server is a pre-initialised process (imports done, ONNX Runtime loaded) that
forks workers in ~20-30 ms instead of ~250 ms for a fresh interpreter. It speaks JSON
lines on its stdin and stdout (see its module for the protocol).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
import structlog
from anyio.abc import Process, TaskGroup

from runtime.core import FORKSERVER_MODULE

__all__ = ["ForkServer"]

log = structlog.get_logger("autan.provider")

_READY_TIMEOUT_S = 60.0
_FORK_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


class ForkServer:
    """One fork server process; `on_exit(pid, code)` hears of each child's end."""

    def __init__(self, on_exit: Callable[[int, int], None]) -> None:
        self._on_exit = on_exit
        self._process: Process | None = None
        self._ready = anyio.Event()
        self._forked: dict[int, anyio.Event] = {}
        self._pids: dict[int, int] = {}
        self._next_id = 0
        self._buffer = b""  # kept here: a second reader takes over at shutdown

    async def start(self, group: TaskGroup) -> None:
        """Start it, with its reader in `group`; returns once it is ready to fork."""
        env = dict(os.environ, ORT_DISABLE_TELEMETRY="1", OPENBLAS_NUM_THREADS="1")
        # A session of its own: Ctrl-C in a terminal reaches the provider's process only,
        # which drains the workers; the fork server (and its workers) end with it.
        self._process = await anyio.open_process(
            [sys.executable, "-m", FORKSERVER_MODULE, "--parent-pid", str(os.getpid())],
            env=env,
            stderr=None,
            start_new_session=True,
        )
        group.start_soon(self.read)
        with anyio.fail_after(_READY_TIMEOUT_S):
            await self._ready.wait()

    @property
    def running(self) -> bool:
        return self._process is not None

    async def fork(self, argv: list[str], env: dict[str, str]) -> int:
        """A worker forked with this command line and environment: its pid."""
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the fork server is not running: start serve() first")
        self._next_id += 1
        request_id = self._next_id
        done = self._forked[request_id] = anyio.Event()
        request = {"id": request_id, "argv": argv, "env": env}
        await self._process.stdin.send(json.dumps(request).encode() + b"\n")
        with anyio.fail_after(_FORK_TIMEOUT_S):
            await done.wait()
        del self._forked[request_id]
        return self._pids.pop(request_id)

    async def read(self) -> None:
        """Read its reports until it exits (run again in a clean-up to see the last exits)."""
        process = self._process
        if process is None or process.stdout is None:
            return
        async for chunk in process.stdout:
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                self._on_message(json.loads(line))
        code = await process.wait()
        if code != 0:
            log.warning("the fork server exited", code=code)

    def _on_message(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self._ready.set()
        elif "exit" in message:
            self._on_exit(int(message["exit"]), int(message["code"]))
        elif "id" in message:
            self._pids[int(message["id"])] = int(message["pid"])
            self._forked[int(message["id"])].set()

    async def stop(self) -> None:
        """Close its stdin (it exits once its children have); kill it if it does not."""
        if self._process is None:
            return
        if self._process.stdin is not None:
            await self._process.stdin.aclose()
        with anyio.move_on_after(_STOP_TIMEOUT_S):
            await self._process.wait()
            return
        self._process.kill()
