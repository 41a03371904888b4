"""Counting what a file upload has read, for a progress display."""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

__all__ = ["Counting", "Progress"]

Progress = Callable[[int], None]  # called with the bytes sent so far (from any thread)


class Counting:
    """A binary reader that reports how much has been read from `inner`."""

    def __init__(self, inner: BinaryIO, progress: Progress) -> None:
        self._inner = inner
        self._progress = progress
        self._read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._read += len(data)
        self._progress(self._read)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        count = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._read += count or 0
        self._progress(self._read)
        return int(count or 0)

    def __getattr__(self, name: str) -> object:  # fileno, seek, tell, close, ...
        return getattr(self._inner, name)
