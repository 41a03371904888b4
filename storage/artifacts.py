"""Content-addressed artifacts: blobs stored under `sha256/<hex>` and verified on every read.

`ArtifactStore` sits on any `ObjectStore`. Writing the same content twice uploads it once;
reading checks size and sha256 and raises `IntegrityError` on any mismatch, because what is
read here (pickled functions, models) is executed. `fetch` materialises an artifact in a
`DiskCache` so warm hosts skip the download.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec
import structlog

from storage.cache import DiskCache
from storage.errors import IntegrityError
from storage.progress import Progress
from storage.store import ObjectStore

__all__ = ["ArtifactStore", "Digest", "Upload", "sha256_file"]

_HASH_CHUNK_BYTES = 1024 * 1024
_HEX = re.compile(r"[0-9a-f]{64}")
_log = structlog.get_logger(__name__)


class Digest(msgspec.Struct, frozen=True):
    """The sha256 and size of some content: its identity in the artifact store.

    `str(digest)` is `sha256:<hex>`; `digest.key` is the object key `sha256/<hex>`. Encodes
    with msgspec as `{"hex": ..., "size_bytes": ...}` for manifests.

    Example:
        digest = Digest.of(b"hello")
        Digest.parse(str(digest), digest.size_bytes) == digest
    """

    hex: str
    size_bytes: int

    def __post_init__(self) -> None:
        if not _HEX.fullmatch(self.hex):
            raise ValueError(f"not a sha256 hex digest (64 lowercase hex digits): {self.hex!r}")
        if self.size_bytes < 0:
            raise ValueError(f"size_bytes must not be negative, got {self.size_bytes}")

    def __str__(self) -> str:
        return f"sha256:{self.hex}"

    @property
    def key(self) -> str:
        """The object key the artifact is stored under: `sha256/<hex>`."""
        return f"sha256/{self.hex}"

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of `data`."""
        return cls(hashlib.sha256(data).hexdigest(), len(data))

    @classmethod
    def of_file(cls, path: Path) -> Digest:
        """The digest of the file at `path`, read in chunks (blocking)."""
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray(_HASH_CHUNK_BYTES)
        view = memoryview(buffer)
        with path.open("rb") as file:
            while count := file.readinto(buffer):
                hasher.update(view[:count])
                size += count
        return cls(hasher.hexdigest(), size)

    @classmethod
    def parse(cls, text: str, size_bytes: int) -> Digest:
        """Parse `sha256:<hex>` (as `str(digest)` writes it) into a digest of `size_bytes`."""
        algorithm, _, hex_digest = text.partition(":")
        if algorithm != "sha256":
            raise ValueError(f"not a digest of the form sha256:<hex>: {text!r}")
        return cls(hex_digest, size_bytes)


class Upload(msgspec.Struct, frozen=True):
    """What `ArtifactStore.put_*` did: the digest, and whether bytes were sent."""

    digest: Digest
    uploaded: bool


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of the file at `path`, read in chunks (blocking)."""
    return Digest.of_file(path).hex


class ArtifactStore:
    """Content-addressed, verified blobs on top of an `ObjectStore`.

    Example:
        artifacts = ArtifactStore(open_store("file:///var/lib/autan/objects"))
        upload = await artifacts.put_file(Path("model.onnx"))
        path = await artifacts.fetch(upload.digest, DiskCache(Path("/var/cache/autan")))
    """

    def __init__(self, store: ObjectStore, *, max_threads: int = 4) -> None:
        self.store = store
        self._limiter = anyio.CapacityLimiter(max_threads)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.store.url!r})"

    async def put_bytes(self, data: bytes) -> Upload:
        """Store `data` unless an object of the same digest is already there."""
        digest = await anyio.to_thread.run_sync(Digest.of, data, limiter=self._limiter)
        if await self.contains(digest):
            return Upload(digest, uploaded=False)
        await self.store.put(digest.key, data)
        return Upload(digest, uploaded=True)

    async def put_file(self, path: Path, progress: Progress | None = None) -> Upload:
        """Hash the file at `path`, then stream it up unless it is already stored;
        `progress` hears the bytes sent so far."""
        digest = await anyio.to_thread.run_sync(Digest.of_file, path, limiter=self._limiter)
        if await self.contains(digest):
            return Upload(digest, uploaded=False)
        info = await self.store.put_file(digest.key, path, progress)
        if info.size_bytes != digest.size_bytes:
            await self.store.delete(digest.key)
            raise IntegrityError(f"{path} changed while it was uploaded; upload it again")
        return Upload(digest, uploaded=True)

    async def contains(self, digest: Digest) -> bool:
        """Whether an object of the digest's key and size is stored (not re-hashed)."""
        info = await self.store.stat(digest.key)
        return info is not None and info.size_bytes == digest.size_bytes

    async def get_bytes(self, digest: Digest) -> bytes:
        """Return the artifact's content after verifying it; `IntegrityError` if altered."""
        data = await self.store.get(digest.key)
        actual = await anyio.to_thread.run_sync(Digest.of, data, limiter=self._limiter)
        _check(digest, actual)
        return data

    async def fetch(self, digest: Digest, cache: DiskCache, *, verify: bool = False) -> Path:
        """Return the path of the artifact in `cache`, downloading and verifying it if absent.

        A cache entry was verified when inserted, so a hit is checked by size only, or by
        sha256 with `verify=True`; a damaged entry is dropped and downloaded again.
        """
        path = await anyio.to_thread.run_sync(
            _cache_hit, digest, cache, verify, limiter=self._limiter
        )
        if path is not None:
            return path
        return await self._download(digest, cache)

    async def _download(self, digest: Digest, cache: DiskCache) -> Path:
        temp = await anyio.to_thread.run_sync(cache.temp_path, limiter=self._limiter)
        try:
            await self.store.get_file(digest.key, temp)
            actual = await anyio.to_thread.run_sync(Digest.of_file, temp, limiter=self._limiter)
            _check(digest, actual)
            return await anyio.to_thread.run_sync(
                cache.insert, digest.hex, temp, limiter=self._limiter
            )
        finally:
            temp.unlink(missing_ok=True)


def _cache_hit(digest: Digest, cache: DiskCache, verify: bool) -> Path | None:
    path = cache.path_for(digest.hex)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size != digest.size_bytes or (verify and Digest.of_file(path) != digest):
        _log.warning("cache entry damaged, fetching again", digest=str(digest), path=str(path))
        cache.remove(digest.hex)
        return None
    try:
        cache.touch(digest.hex)
    except FileNotFoundError:
        return None  # evicted by another process since the stat
    return path


def _check(expected: Digest, actual: Digest) -> None:
    if actual == expected:
        return
    sizes = (
        f", {actual.size_bytes} bytes instead of {expected.size_bytes}"
        if actual.size_bytes != expected.size_bytes
        else ""
    )
    raise IntegrityError(
        f"artifact {expected.key} does not match its digest (got {actual.key}{sizes}): the "
        "stored object was altered or corrupted; redeploy with 'autan deploy'"
    )
