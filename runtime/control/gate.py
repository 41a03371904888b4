"""The gate of isolated workers: the only way out of their empty network.

Sandboxed workers have a network namespace with nothing in it (`control.sandbox`). The
provider listens on a Unix socket shown inside every sandbox; a worker asks it for a
connection (`broker.gate` is the protocol and the worker's side), and the gate makes it
from the host's network if the address is one the worker needs, the NATS servers and
the object store, and passes the connected socket back. Anything else (another port of
this host, the internet, the metadata service of a cloud) is refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import structlog
from anyio.abc import SocketStream, TaskStatus, UNIXSocketStream

from broker import GATE_LINE_MAX
from runtime.core import Settings

__all__ = ["Gate", "needed_addresses"]

log = structlog.get_logger("autan.provider")

_REQUEST_TIMEOUT_S = 5.0
_CONNECT_TIMEOUT_S = 10.0


def needed_addresses(settings: Settings) -> set[tuple[str, int]]:
    """What a worker connects to: every NATS server of its URL, and the S3 endpoint."""
    addresses = set()
    for server in (settings.nats_url or "").split(","):
        parts = urlsplit(server.strip() if "://" in server else f"nats://{server.strip()}")
        if parts.hostname:
            addresses.add((parts.hostname, parts.port or 4222))
    storage = settings.storage_url or ""
    if storage.startswith("s3://"):
        from storage.url import parse_s3_url

        config = parse_s3_url(storage)
        host, _, port = config.endpoint.rpartition(":")
        if not host:
            host, port = config.endpoint, "443" if config.tls else "80"
        addresses.add((host.strip("[]"), int(port)))
    return addresses


class Gate:
    """Connections to `allowed` addresses only, made for whoever reaches `path`."""

    def __init__(self, path: Path, allowed: Iterable[tuple[str, int]]) -> None:
        self.path = path
        self.allowed = frozenset(allowed)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.path.unlink(missing_ok=True)
        # A socket's path has room for about 100 bytes (a deep data dir has more): bound
        # through this process's handle on its folder, the name stays short.
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            listener = await anyio.create_unix_listener(f"/proc/self/fd/{folder}/{self.path.name}")
        finally:
            os.close(folder)
        self.path.chmod(0o666)  # the sandbox user connects; only sandboxes see this path
        task_status.started()
        try:
            async with listener:
                await listener.serve(self._answer)
        finally:
            self.path.unlink(missing_ok=True)

    async def _answer(self, stream: SocketStream) -> None:
        assert isinstance(stream, UNIXSocketStream)
        async with stream:
            with contextlib.suppress(Exception):
                line = await _request_line(stream)
                host, _, port = line.partition(" ")
                if not port.isdigit() or (host, int(port)) not in self.allowed:
                    log.warning("a sandbox asked for a connection it may not have",
                                address=line[:80])  # fmt: skip
                    await stream.send(b"\x01only NATS and the object store can be reached")
                    return
                try:
                    connection = await anyio.to_thread.run_sync(
                        socket.create_connection, (host, int(port)), _CONNECT_TIMEOUT_S
                    )
                except OSError as exc:
                    await stream.send(b"\x01" + str(exc).encode()[: GATE_LINE_MAX - 1])
                    return
                with connection:
                    await stream.send_fds(b"\x00", [connection.fileno()])


async def _request_line(stream: UNIXSocketStream) -> str:
    data = b""
    with anyio.fail_after(_REQUEST_TIMEOUT_S):
        while b"\n" not in data and len(data) < GATE_LINE_MAX:
            data += await stream.receive(GATE_LINE_MAX)
    return data.split(b"\n", 1)[0].decode("ascii", errors="replace").strip()
