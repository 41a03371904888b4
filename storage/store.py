"""The `ObjectStore` protocol every backend implements, and the `ObjectInfo` it reports.

Backends do their blocking I/O in worker threads behind a bounded `anyio.CapacityLimiter`, so
every method is safe to await from the event loop. Close a store with `aclose()` (or
`contextlib.aclosing(store)`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Protocol

import msgspec

from storage.progress import Progress

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_THREADS", "ObjectInfo", "ObjectStore"]

DEFAULT_CHUNK_BYTES = 1024 * 1024
DEFAULT_MAX_THREADS = 8


class ObjectInfo(msgspec.Struct, frozen=True):
    """What a store knows about one object."""

    key: str
    size_bytes: int
    modified_unix_s: float = 0.0  # when it was last written (0: the store does not say)


class ObjectStore(Protocol):
    """Keyed blobs: put, get, stat, list, delete, with streaming for large objects.

    Keys are '/'-separated relative paths (see `storage.keys`); invalid ones raise `InvalidKey`.

    Example:
        store = open_store("file:///var/lib/autan/objects")
        await store.put("inputs/a.bin", b"...")
        data = await store.get("inputs/a.bin")
    """

    url: str

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store `data` under `key`, replacing any previous object."""
        ...

    async def put_file(self, key: str, path: Path, progress: Progress | None = None) -> ObjectInfo:
        """Store the content of the file at `path` under `key`, streaming it; `progress`
        hears the bytes sent so far as they go."""
        ...

    async def get(self, key: str) -> bytes:
        """Return the object's content; `ObjectNotFound` when missing."""
        ...

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Stream the object into `path` atomically (temp file then rename)."""
        ...

    def stream(
        self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        """Yield the object's content in chunks of at most `chunk_bytes`."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None when it does not exist."""
        ...

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Return every object whose key starts with `prefix`, sorted by key."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources."""
        ...
