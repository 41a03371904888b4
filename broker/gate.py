"""Connections out of a sandbox that has no network: asked of a gate, then owned.

An isolated worker (`runtime.control.sandbox`) lives in a network namespace of its own
with nothing in it but its own loopback: it can reach no port of the host, nor anything
beyond. Its provider keeps a gate, a Unix socket shown inside the sandbox: asked for
`host port`, it connects there from the host's network, if that is NATS or the object
store and nothing else, and passes the connected socket back (SCM_RIGHTS). The worker
then owns an ordinary TCP connection: no relay sits in the path of its messages.

    -> b"127.0.0.1 4222\\n"
    <- b"\\x00" with one descriptor        (connected)
    <- b"\\x01<why>"                        (refused: not NATS or storage, or unreachable)
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

__all__ = ["GATE_LINE_MAX", "dial", "route_nats_through"]

GATE_LINE_MAX = 512  # bytes of one request line


def dial(gate: Path, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
    """A TCP connection to `host`:`port`, made by the gate at `gate`; `ConnectionRefusedError`
    with the gate's reason when it refuses."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as asking:
        asking.settimeout(timeout_s)
        asking.connect(str(gate))
        asking.sendall(f"{host} {port}\n".encode())
        message, fds, _, _ = socket.recv_fds(asking, GATE_LINE_MAX, 1)
    if message[:1] != b"\x00" or len(fds) != 1:
        for fd in fds:
            socket.close(fd)
        why = message[1:].decode(errors="replace") or "no answer"
        raise ConnectionRefusedError(f"the sandbox's gate refused {host}:{port}: {why}")
    connection = socket.socket(fileno=fds[0])
    connection.settimeout(None)
    return connection


def route_nats_through(gate: Path) -> None:
    """Have every NATS connection of this process (reconnections too) dialed by `gate`."""
    from nats.aio import transport

    async def connect(self: Any, uri: Any, buffer_size: int, connect_timeout: int) -> None:
        connection = await asyncio.wait_for(
            asyncio.to_thread(dial, gate, uri.hostname, uri.port or 4222, connect_timeout),
            connect_timeout,
        )
        connection.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=connection, limit=buffer_size)
        # As nats-py keeps them: the bare pair stays referenced across a TLS upgrade.
        self._bare_io_reader = self._io_reader = reader
        self._bare_io_writer = self._io_writer = writer

    transport.TcpTransport.connect = connect  # type: ignore[method-assign]
