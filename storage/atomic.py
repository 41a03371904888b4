"""Atomic file writes: write a temp file in the target's directory, then `os.replace` it.

Readers never see a half-written file: they see the old content or the new one. The temp file
lives in the same directory so the rename never crosses a filesystem. These are blocking
functions; callers run them in a worker thread.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

__all__ = ["TEMP_SUFFIX", "atomic_writer", "copy_atomically", "is_temp_name"]

TEMP_SUFFIX = ".autan-tmp"
_COPY_CHUNK_BYTES = 1024 * 1024


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temp file left by `atomic_writer` (skip it when listing)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


@contextmanager
def atomic_writer(path: Path, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` when the block exits without error.

    Parent directories are created. On error the temp file is removed and `path` is untouched.
    With `fsync`, the data and the directory entry are flushed to disk before returning.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    # O_EXCL: never follow or reuse an existing name; mode 0o666 lets the umask decide.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            if fsync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temp.unlink()
        raise
    if fsync:
        _fsync_directory(path.parent)


def copy_atomically(reader: BinaryIO, target: Path, *, fsync: bool = False) -> int:
    """Copy what is left in `reader` to `target` atomically; return the number of bytes."""
    with atomic_writer(target, fsync=fsync) as writer:
        shutil.copyfileobj(reader, writer, _COPY_CHUNK_BYTES)
        return writer.tell()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
