"""`DiskCache`: a local directory of verified files named by their sha256, bounded in size.

Workers keep artifacts and models here so a warm host starts functions without downloading.
Entries are inserted atomically (a rename from the cache's own temp directory) and only after
the caller verified them, so a present entry is complete. With `max_bytes`, inserting evicts
the least recently used entries (by mtime, which a cache hit refreshes) until the cache fits.
An evicted file stays readable by processes that already opened it.

The methods do blocking filesystem work: call them from a worker thread in async code.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from storage.atomic import TEMP_SUFFIX

__all__ = ["DiskCache"]

_HEX = re.compile(r"[0-9a-f]{16,128}")


class DiskCache:
    """Files under `root/sha256/<hex>`, evicted oldest-used first beyond `max_bytes`.

    Example:
        cache = DiskCache(Path("~/.cache/autan").expanduser(), max_bytes=10 * 2**30)
        path = await artifacts.fetch(digest, cache)
    """

    def __init__(self, root: Path, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be positive or None, got {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self._entries = root / "sha256"
        self._temp = root / "tmp"

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    def path_for(self, digest_hex: str) -> Path:
        """Where the entry for `digest_hex` lives (whether or not it is present)."""
        if not _HEX.fullmatch(digest_hex):
            raise ValueError(f"not a lowercase hex digest: {digest_hex!r}")
        return self._entries / digest_hex

    def contains(self, digest_hex: str) -> bool:
        """Whether an entry for `digest_hex` is present."""
        return self.path_for(digest_hex).is_file()

    def temp_path(self) -> Path:
        """A fresh path on the cache's filesystem to download into before `insert`."""
        self._temp.mkdir(parents=True, exist_ok=True)
        return self._temp / f".{secrets.token_hex(8)}{TEMP_SUFFIX}"

    def insert(self, digest_hex: str, temp: Path) -> Path:
        """Move the verified file `temp` into the cache and return the entry's path."""
        path = self.path_for(digest_hex)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, path)
        self.evict(keep=digest_hex)
        return path

    def touch(self, digest_hex: str) -> None:
        """Mark the entry as just used, so eviction takes it last."""
        os.utime(self.path_for(digest_hex))

    def remove(self, digest_hex: str) -> None:
        """Drop the entry if present."""
        self.path_for(digest_hex).unlink(missing_ok=True)

    def size_bytes(self) -> int:
        """Total size of the entries."""
        return sum(size for _, size, _ in self._scan())

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the cache fits `max_bytes`.

        The entry `keep` (the one just inserted) is never removed. Returns the removed hexes.
        """
        if self.max_bytes is None:
            return []
        entries = sorted(self._scan(), key=lambda entry: entry[2])
        total = sum(size for _, size, _ in entries)
        removed: list[str] = []
        for name, size, _ in entries:
            if total <= self.max_bytes:
                break
            if name != keep:
                self.remove(name)
                removed.append(name)
                total -= size
        return removed

    def _scan(self) -> list[tuple[str, int, float]]:
        """(hex, size, mtime) of every entry; entries vanishing meanwhile are skipped."""
        found: list[tuple[str, int, float]] = []
        if not self._entries.is_dir():
            return found
        with os.scandir(self._entries) as it:
            for entry in it:
                if not _HEX.fullmatch(entry.name):
                    continue  # not ours: never evict what we did not insert
                try:
                    result = entry.stat()
                except FileNotFoundError:
                    continue
                found.append((entry.name, result.st_size, result.st_mtime))
        return found
