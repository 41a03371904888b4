"""A minimal HTTP/1.1 client on asyncio streams: one keep-alive connection, one request at a time.

The bridge benchmarks time the gateway, not a client library: a request is encoded once
(`encode_request`), written in one call, and the answer read as a status line, headers and a
Content-Length body. Nothing else: no chunked bodies, redirects, TLS or pipelining.

    request = encode_request("POST", "/v1/functions/demo/echo", b'"hi"', host="127.0.0.1:8000")
    connection = await HttpConnection.open("127.0.0.1", 8000)
    answer = await connection.exchange(request)      # Answer(status=200, headers=..., body=...)
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import asyncio
import socket
from contextlib import suppress
from dataclasses import dataclass

__all__ = ["Answer", "HttpConnection", "encode_request"]

_END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: its status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes


def encode_request(
    method: str,
    target: str,
    body: bytes = b"",
    *,
    host: str,
    content_type: str = "application/json",
) -> bytes:
    """The bytes of one keep-alive request: request line, headers, body."""
    head = [f"{method} {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if body:
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head[: -len(_END_OF_HEAD)].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1."):
        raise ConnectionError(f"not an HTTP/1.x answer: {status_line!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(rest.partition(" ")[0]), headers


class HttpConnection:
    """One keep-alive connection; `exchange` sends a request and reads its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        # Without it, a request written while the last answer's ACK is pending waits on Nagle.
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> Answer:
        """Send `request` (from `encode_request`), return the answer; ConnectionError if cut."""
        self.writer.write(request)
        try:
            status, headers = _parse_head(await self.reader.readuntil(_END_OF_HEAD))
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ConnectionError(f"the server cut the answer short: {exc}") from exc
        return Answer(status, headers, body)

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()
