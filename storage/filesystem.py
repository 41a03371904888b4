"""`FileStore`: objects as files under a root directory, for `file:///abs/path` URLs.

The embedded default: no server, one directory. Each key is a relative path under the root;
writes go to a temp file in the same directory and are renamed into place, so readers never
see partial objects. `fsync=True` also flushes each write to disk before it returns.

Unlike S3, a directory cannot also be a file: once "a" is stored, "a/b" cannot be (and the
reverse); such writes raise `StorageError`. Errors about the caller's own local files
(`put_file`'s source, `get_file`'s target) are left as `OSError`, as in `S3Store`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar, TypeVarTuple, cast

import anyio
import anyio.to_thread

from storage.atomic import atomic_writer, copy_atomically, is_temp_name
from storage.errors import InvalidKey, ObjectNotFound, StorageError
from storage.keys import check_key, check_prefix
from storage.progress import Counting, Progress
from storage.store import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_THREADS, ObjectInfo

__all__ = ["FileStore"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
# Reading "a/b" where "a" is a file, or "a" where "a" is a directory, finds no object.
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# Writing there means a key would be both an object and a prefix of other objects.
_CONFLICT = (FileExistsError, NotADirectoryError, IsADirectoryError)


class FileStore:
    """An `ObjectStore` keeping each object as a file under `root`.

    Example:
        store = FileStore(Path("/var/lib/autan/objects"))
        await store.put("a/b.bin", b"data")
    """

    def __init__(
        self, root: Path, *, fsync: bool = False, max_threads: int = DEFAULT_MAX_THREADS
    ) -> None:
        if not root.is_absolute():
            raise ValueError(f"FileStore root must be an absolute path, got {str(root)!r}")
        self.root = root
        self.url = root.as_uri()
        self._fsync = fsync
        self._limiter = anyio.CapacityLimiter(max_threads)

    def __repr__(self) -> str:
        return f"FileStore({self.url!r})"

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store `data` under `key`, replacing any previous object."""
        path = self._path(key)
        with self._writing(key):
            await self._run(self._write_bytes, path, data)
        return ObjectInfo(key, len(data))

    async def put_file(self, key: str, path: Path, progress: Progress | None = None) -> ObjectInfo:
        """Copy the file at `path` into the store under `key`."""
        target = self._path(key)
        reader = await self._run(_open_binary, path)
        source = cast(BinaryIO, Counting(reader, progress)) if progress else reader
        try:
            with self._writing(key):
                size = await self._run(self._copy, source, target)
        finally:
            reader.close()
        return ObjectInfo(key, size)

    async def get(self, key: str) -> bytes:
        """Return the object's content; `ObjectNotFound` when missing."""
        path = self._path(key)
        with self._reading(key):
            return await self._run(path.read_bytes)

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Copy the object into `path` atomically; `ObjectNotFound` when missing."""
        reader = await self._open(key)
        try:
            size = await self._run(self._copy, reader, path)
        finally:
            reader.close()
        return ObjectInfo(key, size)

    async def stream(
        self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        """Yield the object's content in chunks of at most `chunk_bytes`."""
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        reader = await self._open(key)
        try:
            while True:
                with self._reading(key):
                    chunk = await self._run(reader.read, chunk_bytes)
                if not chunk:
                    return
                yield chunk
        finally:
            reader.close()

    async def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None when it does not exist."""
        path = self._path(key)
        with self._reading(key):
            return await self._run(_stat_file, key, path)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Return every object whose key starts with `prefix`, sorted by key."""
        check_prefix(prefix)
        with self._reading(prefix):
            return await self._run(_list_files, self.root, prefix)

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        path = self._path(key)
        try:
            with self._reading(key):
                await self._run(path.unlink)
        except ObjectNotFound:
            return

    async def aclose(self) -> None:
        """Nothing to release; present for the `ObjectStore` protocol."""

    def _path(self, key: str) -> Path:
        check_key(key)
        if is_temp_name(key.rsplit("/", 1)[-1]):
            raise InvalidKey(f"invalid object key {key!r}: names like this are temp files")
        return self.root / key

    async def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        with self._reading(key):
            return await self._run(_open_binary, path)

    async def _run(self, func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    @contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        try:
            yield
        except _MISSING as exc:
            raise ObjectNotFound(key, self.url) from exc
        except OSError as exc:
            raise StorageError(f"file store at {self.url} failed on {key!r}: {exc}") from exc

    @contextmanager
    def _writing(self, key: str) -> Iterator[None]:
        try:
            yield
        except _CONFLICT as exc:
            raise StorageError(
                f"cannot store {key!r} in {self.url}: a key would be both an object and a "
                "prefix of other objects ('a' and 'a/b'), which the file store cannot hold"
            ) from exc
        except OSError as exc:
            raise StorageError(f"file store at {self.url} failed on {key!r}: {exc}") from exc

    def _write_bytes(self, path: Path, data: bytes) -> None:
        with atomic_writer(path, fsync=self._fsync) as file:
            file.write(data)

    def _copy(self, reader: BinaryIO, target: Path) -> int:
        return copy_atomically(reader, target, fsync=self._fsync)


def _open_binary(path: Path) -> BinaryIO:
    return path.open("rb")


def _stat_file(key: str, path: Path) -> ObjectInfo | None:
    try:
        result = path.stat()
    except _MISSING:
        return None
    if not stat.S_ISREG(result.st_mode):
        return None
    return ObjectInfo(key, result.st_size, result.st_mtime)


def _list_files(root: Path, prefix: str) -> list[ObjectInfo]:
    # Walk only the deepest directory the prefix names, then filter by the full prefix.
    base = root.joinpath(*prefix.split("/")[:-1])
    found = [info for info in _walk(root, base) if info.key.startswith(prefix)]
    return sorted(found, key=lambda info: info.key)


def _walk(root: Path, base: Path) -> list[ObjectInfo]:
    found: list[ObjectInfo] = []
    for directory, _, names in os.walk(base):
        for name in names:
            path = Path(directory, name)
            info = None if is_temp_name(name) else _stat_file(_key_of(root, path), path)
            if info is not None:  # None: a temp file, or deleted while we walked
                found.append(info)
    return found


def _key_of(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
