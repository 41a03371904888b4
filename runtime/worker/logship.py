"""A worker's log lines and its user code's prints, shipped to the logs stream.

Every structlog event of the worker process and every line user code writes to stdout or
stderr becomes one JSON record (time, worker, call id, level or stream, text, fields) on
`autan.logs.<app>.<fn>` (`broker.logs`), still written where it went before. Prints are
tagged with the call that printed them: the executor sets `CURRENT_CALL` around each call,
in the call's own thread or task. Records are handed to one shipping task on the event
loop, batched (one message per wake-up, at most `_BATCH_BYTES`), and never wait on NATS: a
worker whose logs cannot keep up drops the oldest (`_MAX_QUEUED`) and says how many.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any, TextIO

import anyio
import structlog
from anyio.abc import TaskStatus

from broker import Broker

__all__ = ["CURRENT_CALL", "LogShipper"]

CURRENT_CALL: ContextVar[str] = ContextVar("autan_current_call", default="")

_BATCH_BYTES = 64 * 1024
_MAX_QUEUED = 10_000
_MAX_LINE = 8 * 1024


class LogShipper:
    """Ships one worker's records; `install` before the first log line, `serve` once
    connected (what comes before waits in the queue)."""

    def __init__(self, app: str, fn: str, worker_id: str) -> None:
        self.app, self.fn, self.worker_id = app, fn, worker_id
        self._queue: collections.deque[bytes] = collections.deque()
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._waking = False
        self._lock = threading.Lock()
        self._streams: tuple[TextIO, TextIO] | None = None

    # -- in -------------------------------------------------------------------------------

    def install(self) -> None:
        """Ship structlog's events and the prints of user code from now on."""
        processors = structlog.get_config()["processors"]
        processors.insert(max(0, len(processors) - 1), self._processor)  # before rendering
        self._streams = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, "stdout", self)
        sys.stderr = _Tee(sys.stderr, "stderr", self)

    def uninstall(self) -> None:
        if self._streams is not None:
            sys.stdout, sys.stderr = self._streams
            self._streams = None
        processors = structlog.get_config()["processors"]
        with contextlib.suppress(ValueError):
            processors.remove(self._processor)

    def _processor(self, _logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in event.items() if k not in ("event", "timestamp", "level")}
        call_id = fields.pop("call_id", "") or CURRENT_CALL.get()
        fields.pop("worker", None)
        fields.pop("function", None)
        self.ship("log", str(event.get("event", "")), call_id, level=method, fields=fields)
        return event

    def ship(
        self,
        kind: str,
        text: str,
        call_id: str,
        *,
        level: str = "",
        fields: dict[str, Any] | None = None,
    ) -> None:
        """One record, from any thread."""
        record = {"ts": round(time.time(), 6), "worker": self.worker_id, "call_id": call_id,
                  "kind": kind, "level": level, "text": text[:_MAX_LINE]}  # fmt: skip
        if fields:
            record["fields"] = fields
        line = json.dumps(record, default=str).encode()
        with self._lock:
            self._queue.append(line)
            if len(self._queue) > _MAX_QUEUED:
                self._queue.popleft()
                self._dropped += 1
            if self._waking or self._loop is None:
                return
            self._waking = True
        with contextlib.suppress(RuntimeError):  # a closed loop: the process is ending
            self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- out ------------------------------------------------------------------------------

    async def serve(
        self, broker: Broker, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Ship until cancelled; then what is queued, once more."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._wake.set()  # what came before the connection
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                with self._lock:
                    self._waking = False
                await self._drain(broker)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await self._drain(broker)

    async def _drain(self, broker: Broker) -> None:
        while True:
            with self._lock:
                if self._dropped:
                    dropped, self._dropped = self._dropped, 0
                    note = {
                        "ts": time.time(),
                        "worker": self.worker_id,
                        "call_id": "",
                        "kind": "log",
                        "level": "warning",
                        "text": f"{dropped} log lines dropped: logging faster than shipped",
                    }
                    self._queue.appendleft(json.dumps(note).encode())  # fmt: skip
                batch, size = [], 0
                while self._queue and size + len(self._queue[0]) < _BATCH_BYTES:
                    size += len(self._queue[0]) + 1
                    batch.append(self._queue.popleft())
                if not batch and self._queue:  # one line over the batch size: cut
                    batch.append(self._queue.popleft()[:_BATCH_BYTES])
            if not batch:
                return
            await broker.logs.ship(self.app, self.fn, b"\n".join(batch))


class _Tee:
    """A text stream that writes through, and ships each complete line."""

    def __init__(self, inner: TextIO, kind: str, shipper: LogShipper) -> None:
        self._inner = inner
        self._kind = kind
        self._shipper = shipper
        self._partial = threading.local()

    def write(self, text: str) -> int:
        written = self._inner.write(text)
        pending: str = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest[-_MAX_LINE:]
        for line in lines:
            self._shipper.ship(self._kind, line, CURRENT_CALL.get())
        return written

    def flush(self) -> None:
        self._inner.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._inner, name)
