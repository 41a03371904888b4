"""uvicorn's HTTP/1.1 protocol with a deadline on each request's headers.

uvicorn closes idle keep-alive connections, but not one that trickles a request's headers
in a byte at a time: fifty such clients held fifty connections for as long as they liked.
Here each connection must deliver a whole request head within `read_timeout_s` of opening,
or of the previous answer; the body has its own deadline (`codec.read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["timed_protocol"]


class _TimedH11(H11Protocol):
    read_timeout_s = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self.cycle
        super().data_received(data)
        if self.cycle is not waiting:  # a request's head arrived: it is being answered
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
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


def timed_protocol(read_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (`Config(http=...)`)."""
    return type("TimedH11", (_TimedH11,), {"read_timeout_s": read_timeout_s})
