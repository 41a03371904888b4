"""Bytes uploaded, shown while a deploy sends large files: on a terminal only (a pipe or a
log file stays quiet), a line rewritten at most ten times a second."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

__all__ = ["UploadProgress"]

_EVERY_S = 0.1
_SHOWN_FROM_BYTES = 1 << 20  # smaller files go up before a line would help


class UploadProgress:
    """`progress(sent)` for one file of `total` bytes, written to `out` when it is a TTY."""

    def __init__(self, what: str, total: int, out: TextIO | None = None) -> None:
        self.out = out or sys.stderr
        self.what = what
        self.total = total
        self.enabled = total >= _SHOWN_FROM_BYTES and self.out.isatty()
        self._shown_at = 0.0
        self._lock = threading.Lock()
        self._drawn = False

    def __call__(self, sent: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._shown_at < _EVERY_S and sent < self.total:
                return
            self._shown_at = now
            percent = 100 * sent / max(1, self.total)
            self.out.write(
                f"\ruploading {self.what}: {sent / 1e6:.1f} / {self.total / 1e6:.1f} MB "
                f"({percent:.0f}%)"
            )
            self.out.flush()
            self._drawn = True

    def done(self) -> None:
        """End the line (if one was drawn)."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
