"""uvicorn's HTTP/1.1 protocol with a deadline on each request's headers.

uvicorn closes idle keep-alive connections, but not one that trickles a request's headers
in a byte at a time: fifty such clients held fifty connections for as long as they liked.
Here each connection must deliver a whole request head within `read_timeout_s` of opening,
or of the previous answer, and in at most `MAX_HEAD_BYTES` (httptools, unlike h11, bounds
neither: headers could grow for as long as the deadline lets them); the body has its own
deadline and limit (`codec.read_body`).

The parser is httptools (C, llhttp) when it is installed, else h11 (pure Python): the
same deadline on either.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["MAX_HEAD_BYTES", "http_parser", "timed_protocol"]

MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; past it, the connection is cut


class _Timed(asyncio.Protocol):
    """The deadline, over either of uvicorn's HTTP/1.1 protocols (listed after it)."""

    read_timeout_s = 30.0
    _deadline: asyncio.TimerHandle | None = None
    cycle: Any
    transport: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle
        super().data_received(data)
        if self.cycle is not waiting:  # a request's head arrived: it is being answered
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()  # the next request's head must come in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._cut)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _cut(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


class _BoundedHead(_Timed):
    """httptools's protocol with the bound h11 has of its own: what arrives while a request
    head is being read (from a message's start, or the previous one's end, to the end of
    its headers) may not pass MAX_HEAD_BYTES. A read in which a head or a message ends is
    not counted: it carries a body too."""

    _in_head = True
    _head_bytes = 0
    _ended = False  # a head or a message ended in the read being parsed

    def data_received(self, data: bytes) -> None:
        self._ended = False
        super().data_received(data)
        if self._in_head and not self._ended:  # all of it went to a head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._cut()

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()  # type: ignore[misc]

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._ended = False, 0, True
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._in_head, self._head_bytes, self._ended = True, 0, True  # the next one's head


def http_parser() -> str:
    """ "httptools" when it is installed, else "h11"."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def timed_protocol(read_timeout_s: float, parser: str | None = None) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`); `parser`: "httptools" or
    "h11" (default: `http_parser()`)."""
    bases: tuple[type[asyncio.Protocol], ...]
    if (parser or http_parser()) == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        bases = (_BoundedHead, HttpToolsProtocol)
    else:  # h11 bounds a head itself (uvicorn's h11_max_incomplete_event_size, 16 KiB)
        from uvicorn.protocols.http.h11_impl import H11Protocol

        bases = (_Timed, H11Protocol)
    return type("TimedHttp", bases, {"read_timeout_s": read_timeout_s})
