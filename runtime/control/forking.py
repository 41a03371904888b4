"""The provider's side of the fork server (`runtime.worker.forkserver`): ask it for a
worker, learn its pid, hear when it exits.

The fork server is a pre-initialised process (imports done, ONNX Runtime loaded) that
forks workers in ~20-30 ms instead of ~250 ms for a fresh interpreter. It speaks JSON
lines on its stdin and stdout (see its module for the protocol).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import Process, TaskGroup

from runtime.control.children import Children
from runtime.core import FORKSERVER_MODULE

__all__ = ["ForkServer", "ForkServers"]

log = structlog.get_logger("autan.provider")

_READY_TIMEOUT_S = 60.0
_FORK_TIMEOUT_S = 10.0
_TEMPLATE_TIMEOUT_S = 600.0  # a fork that waits for its template: a large model loads
_STOP_TIMEOUT_S = 5.0


class ForkServer:
    """One fork server process; `on_exit(pid, code)` hears of each child's end."""

    def __init__(
        self,
        on_exit: Callable[[int, int], None],
        wrap: Callable[[list[str]], list[str]] | None = None,
        on_template: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_exit(pid, code)` hears of each child's end; `wrap` turns the fork server's
        command into the one to run (a sandbox's, `control.sandbox`, which ends it with
        this process: its parent there is the sandbox's own); `on_template(key, report)`
        hears what becomes of its templates."""
        self._on_exit = on_exit
        self._on_template = on_template
        self._wrap = wrap
        self._process: Process | None = None
        self._ready = anyio.Event()
        self._forked: dict[int, anyio.Event] = {}
        self._pids: dict[int, int] = {}
        self._next_id = 0
        self._buffer = b""  # kept here: a second reader takes over at shutdown
        self.ended = anyio.Event()  # its process has exited and its reports are read

    async def start(self, group: TaskGroup, env: dict[str, str] | None = None) -> None:
        """Start it, with its reader in `group`; returns once it is ready to fork."""
        base = dict(os.environ) if env is None else env
        env = {**base, "ORT_DISABLE_TELEMETRY": "1", "OPENBLAS_NUM_THREADS": "1"}
        command = [sys.executable, "-m", FORKSERVER_MODULE]
        if self._wrap is None:
            command += ["--parent-pid", str(os.getpid())]
        else:
            command = self._wrap(command)
        # A session of its own: Ctrl-C in a terminal reaches the provider's process only,
        # which drains the workers; the fork server (and its workers) end with it.
        self._process = await anyio.open_process(
            command, env=env, stderr=None, start_new_session=True
        )
        group.start_soon(self.read)
        with anyio.fail_after(_READY_TIMEOUT_S):
            await self._ready.wait()

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def fork(
        self, argv: list[str], env: dict[str, str], template: dict[str, Any] | None = None
    ) -> int:
        """A worker forked with this command line and environment: its pid. `template`
        (key, version, argv, env): fork it from that function template, built first if
        it is not running (the wait is bounded by the template's build)."""
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the fork server is not running: start serve() first")
        self._next_id += 1
        request_id = self._next_id
        done = self._forked[request_id] = anyio.Event()
        request: dict[str, Any] = {"id": request_id, "argv": argv, "env": env}
        if template is not None:
            request["template"] = template
        await self._process.stdin.send(json.dumps(request).encode() + b"\n")
        with anyio.fail_after(_TEMPLATE_TIMEOUT_S if template else _FORK_TIMEOUT_S):
            await done.wait()
        del self._forked[request_id]
        return self._pids.pop(request_id)

    async def build_template(self, template: dict[str, Any]) -> None:
        """Build a function template now, for the workers to come."""
        await self._send({"template": template})

    async def drop_template(self, key: str) -> None:
        """Fork no more from the template `key` (it ends once its workers have)."""
        await self._send({"drop": key})

    async def _send(self, request: dict[str, Any]) -> None:
        if self._process is None or self._process.stdin is None:
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await self._process.stdin.send(json.dumps(request).encode() + b"\n")

    async def signal(self, pid: int, sig: int) -> None:
        """Signal a worker it forked (its pid as the fork server knows it)."""
        if self._process is None or self._process.stdin is None:
            return
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            request = {"signal": int(sig), "pid": pid}
            await self._process.stdin.send(json.dumps(request).encode() + b"\n")

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
        self.ended.set()

    def _on_message(self, message: dict[str, Any]) -> None:
        if "template" in message:
            if self._on_template is not None:
                self._on_template(str(message["template"]), message)
        elif "ready" in message:
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


class ForkServers:
    """A provider's fork servers, by key: one shared by every function ("") or one per
    function in its sandbox. A fork server that ends takes its workers with it (they die
    with their parent; a sandbox's pid namespace ends with it): `on_gone(key)` hears it.
    """

    def __init__(
        self,
        on_exit: Callable[[str, int, int], None],
        on_gone: Callable[[str], None],
        children: Children | None = None,
        on_template: Callable[[str, str, dict[str, Any]], None] | None = None,
    ) -> None:
        """`children`: where the stack records its processes; `on_template(server, key,
        report)` hears what becomes of their templates."""
        self._on_exit = on_exit
        self._on_gone = on_gone
        self._on_template = on_template
        self._children = children
        self._servers: dict[str, ForkServer] = {}
        self._starting: dict[str, anyio.Lock] = {}
        self._group: TaskGroup | None = None

    def bind(self, group: TaskGroup | None) -> None:
        """The task group its readers run in (None: the provider is stopping)."""
        self._group = group

    def get(self, key: str) -> ForkServer | None:
        return self._servers.get(key)

    async def ensure(
        self,
        key: str,
        wrap: Callable[[list[str]], list[str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> ForkServer:
        """The fork server of `key`, started (with `wrap` and `env`) if it is not running."""
        async with self._starting.setdefault(key, anyio.Lock()):
            server = self._servers.get(key)
            if server is not None:
                return server
            if self._group is None:
                raise RuntimeError("serve() owns the fork servers: start it first")
            on_template = self._on_template
            server = ForkServer(
                lambda pid, code: self._on_exit(key, pid, code),
                wrap,
                None if on_template is None else lambda name, m: on_template(key, name, m),
            )
            self._servers[key] = server
            try:
                await server.start(self._group, env)
            except BaseException:
                del self._servers[key]
                with anyio.CancelScope(shield=True):
                    await server.stop()
                raise
            self._record(server)
            self._group.start_soon(self._watch, key, server)
            return server

    def _record(self, server: ForkServer, *, ended: bool = False) -> None:
        if self._children is None or server.pid is None:
            return
        if ended:
            self._children.forget(server.pid)
        else:
            self._children.record(server.pid, "fork server")

    async def _watch(self, key: str, server: ForkServer) -> None:
        await server.ended.wait()
        self._record(server, ended=True)
        if self._servers.get(key) is server:
            del self._servers[key]
            log.warning("a fork server ended; its workers with it", key=key or "shared")
        self._on_gone(key)

    async def close(self, drain: Callable[[], Awaitable[None]]) -> None:
        """`drain()` the workers while every fork server's last exit reports are read,
        then stop the fork servers (shielded: this is a clean-up)."""
        with anyio.CancelScope(shield=True):
            servers = list(self._servers.items())
            async with anyio.create_task_group() as group:
                for _, server in servers:
                    group.start_soon(server.read)
                await drain()
                for _, server in servers:
                    group.start_soon(server.stop)
            for key, server in servers:
                self._record(server, ended=True)
                self._servers.pop(key, None)
                self._on_gone(key)
