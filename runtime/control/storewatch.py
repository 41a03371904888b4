"""JetStream brought back after its disk was full, without anyone restarting the stack.

When nats-server cannot write a stream's block (no space left), it keeps failing writes
to that stream even once space is free again, until it starts anew. The watch reads the
server's log: while it reports failed writes it says so once, and when they go on though
the store's disk has room again, it restarts nats-server (at most every 30 s), which
`NatsServer.supervise` starts at once; JetStream recovers from its files and every
client reconnects.
"""

from __future__ import annotations

import shutil
import time

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus

from runtime.control.embedded import NatsServer

__all__ = ["StoreWatch"]

log = structlog.get_logger("autan.nats")

_FAILED_WRITE = "no space left on device"
_READ_AT_MOST = 1 << 20  # bytes of new log per look


class StoreWatch:
    """Restarts the embedded nats-server when its writes fail though its disk has room."""

    def __init__(
        self,
        server: NatsServer,
        *,
        every_s: float = 2.0,
        free_bytes: int = 8 << 20,
        restart_every_s: float = 30.0,
    ) -> None:
        self.server = server
        self.every_s = every_s
        self.free_bytes = free_bytes  # room enough to write again
        self.restart_every_s = restart_every_s
        self.restarts = 0
        self._offset = self._size()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        failing = False
        restarted_at = -self.restart_every_s
        while True:
            await anyio.sleep(self.every_s)
            if not await anyio.to_thread.run_sync(self._failed_writes):
                if failing:
                    log.info("JetStream stores writes again")
                failing = False
                continue
            free = shutil.disk_usage(self.server.store_dir).free
            if not failing:
                failing = True
                log.error("JetStream cannot write: its disk is full; calls are refused "
                          "until there is room", free_mib=free >> 20,
                          store=str(self.server.store_dir))  # fmt: skip
            now = time.monotonic()
            if free >= self.free_bytes and now - restarted_at >= self.restart_every_s:
                log.warning("the store's disk has room again: restarting nats-server",
                            free_mib=free >> 20)  # fmt: skip
                self.restarts += 1
                restarted_at = now
                self.server.restart()

    def _failed_writes(self) -> bool:
        """Whether the server logged a failed write since the last look."""
        path = self.server.log_path
        size = self._size()
        if size < self._offset:  # a new log
            self._offset = 0
        with path.open("rb") as file:
            file.seek(max(self._offset, size - _READ_AT_MOST))
            text = file.read().decode(errors="replace")
        self._offset = size
        return _FAILED_WRITE in text

    def _size(self) -> int:
        try:
            return self.server.log_path.stat().st_size
        except FileNotFoundError:
            return 0
