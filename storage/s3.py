"""`S3Store`: objects in a bucket of MinIO, AWS S3 or any S3 API, through the `minio` SDK.

The only module that imports `minio` (and its transport, urllib3). Every SDK call runs in a
worker thread behind the store's `CapacityLimiter`; every SDK or transport exception is
translated here into the `storage.errors` tree. The HTTP client has a short connect timeout
and few retries, so an unreachable endpoint fails in seconds with `StorageUnavailable`
instead of minio's default of minutes.
"""

from __future__ import annotations

import builtins
import io
import os
import socket
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, TypeVarTuple, cast

import anyio
import anyio.to_thread
import structlog
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from storage.atomic import atomic_writer
from storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from storage.keys import check_key, check_prefix
from storage.progress import Counting, Progress
from storage.s3config import S3Config
from storage.store import DEFAULT_CHUNK_BYTES, ObjectInfo

__all__ = ["S3Store", "route_s3_through"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_log = structlog.get_logger(__name__)

_CREDENTIAL_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
)


class S3Store:
    """An `ObjectStore` in one S3 bucket, created on first use if missing.

    Example:
        store = S3Store(S3Config(bucket="autan"), access_key="minioadmin", secret_key="...")
        await store.put("a/b.bin", b"data")
        await store.aclose()
    """

    def __init__(
        self, config: S3Config, *, access_key: str | None = None, secret_key: str | None = None
    ) -> None:
        self.config = config
        self.url = config.url
        self._http = _http_client(config)
        self._client = Minio(
            config.endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=config.tls,
            region=config.region,
            http_client=self._http,
        )
        self._limiter = anyio.CapacityLimiter(config.max_threads)
        self._bucket_ready = False

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    async def put(self, key: str, data: bytes) -> ObjectInfo:
        """Store `data` under `key`, replacing any previous object."""
        check_key(key)
        await self._call(key, self._upload, key, io.BytesIO(data), len(data))
        return ObjectInfo(key, len(data))

    async def put_file(self, key: str, path: Path, progress: Progress | None = None) -> ObjectInfo:
        """Upload the file at `path` under `key`, in parts of `part_size_bytes` when large."""
        check_key(key)
        size = await self._call(key, self._upload_file, key, path, progress)
        return ObjectInfo(key, size)

    async def get(self, key: str) -> bytes:
        """Return the object's content; `ObjectNotFound` when missing."""
        check_key(key)
        return await self._call(key, self._download, key)

    async def get_file(self, key: str, path: Path) -> ObjectInfo:
        """Stream the object into `path` atomically; `ObjectNotFound` when missing."""
        check_key(key)
        size = await self._call(key, self._download_file, key, path)
        return ObjectInfo(key, size)

    async def stream(
        self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        """Yield the object's content in chunks of at most `chunk_bytes`."""
        check_key(key)
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        response = await self._call(key, self._client.get_object, self.config.bucket, key)
        try:
            while chunk := await self._run(key, response.read, chunk_bytes):
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def stat(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None when it does not exist."""
        check_key(key)
        try:
            return await self._call(key, self._stat, key)
        except ObjectNotFound:
            return None

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Return every object whose key starts with `prefix`, sorted by key."""
        check_prefix(prefix)
        return await self._call(None, self._list, prefix)

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        check_key(key)
        try:
            await self._call(key, self._client.remove_object, self.config.bucket, key)
        except ObjectNotFound:
            return

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        self._http.clear()

    async def _call(self, key: str | None, func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        if not self._bucket_ready:
            await self._run(None, self._ensure_bucket)
            self._bucket_ready = True
        return await self._run(key, func, *args)

    async def _run(self, key: str | None, func: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        with self._translated(key):
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    @contextmanager
    def _translated(self, key: str | None) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            raise self._s3_error(exc, key) from exc
        except (ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
            raise StorageUnavailable(self._unavailable_message(exc)) from exc

    def _unavailable_message(self, exc: Exception) -> str:
        url = self.config.endpoint_url
        if isinstance(exc, ServerError):
            return (
                f"object storage at {url} failed with HTTP {exc.status_code} - "
                "retry later, or read the server's logs"
            )
        if isinstance(exc, InvalidResponseError):
            return (
                f"the server at {url} does not answer like an S3 API (non-XML response) - "
                "is the endpoint MinIO's API port? (check AUTAN_STORAGE_URL)"
            )
        return (
            f"cannot reach object storage at {url} ({_reason(exc)}) - is MinIO running? "
            "(check AUTAN_STORAGE_URL)"
        )

    def _s3_error(self, exc: S3Error, key: str | None) -> StorageError:
        where = f"bucket {self.config.bucket!r} at {self.config.endpoint_url}"
        if exc.code == "NoSuchBucket":
            self._bucket_ready = False  # removed behind our back: recreate on the next call
        if key is not None and exc.code in ("NoSuchKey", "NoSuchBucket"):
            return ObjectNotFound(key, where)
        if exc.code in _CREDENTIAL_CODES:
            return StorageError(
                f"{where} refused the request ({exc.code}): check the access and secret keys "
                "and the bucket policy"
            )
        subject = f"object {key!r}" if key else "the request"
        return StorageError(f"{where} failed {subject}: {exc.code}: {exc.message}")

    def _ensure_bucket(self) -> None:
        bucket = self.config.bucket
        try:
            if self._client.bucket_exists(bucket):
                return
        except S3Error as exc:
            if exc.code == "AccessDenied":
                return  # keys limited to objects: assume the bucket exists, let calls tell
            raise
        try:
            self._client.make_bucket(bucket, location=self.config.region)
        except S3Error as exc:
            if exc.code == "BucketAlreadyOwnedByYou":  # another process won the race
                return
            raise
        _log.info("bucket created", bucket=bucket, endpoint=self.config.endpoint_url)

    def _upload(self, key: str, data: BinaryIO, size: int) -> None:
        self._client.put_object(
            self.config.bucket,
            key,
            data,
            size,
            part_size=self.config.part_size_bytes,
            num_parallel_uploads=self.config.parallel_uploads,
        )

    def _upload_file(self, key: str, path: Path, progress: Progress | None) -> int:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            source = cast(BinaryIO, Counting(file, progress)) if progress else file
            self._upload(key, source, size)
        return size

    def _download(self, key: str) -> bytes:
        response = self._client.get_object(self.config.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def _download_file(self, key: str, path: Path) -> int:
        response = self._client.get_object(self.config.bucket, key)
        try:
            with atomic_writer(path) as file:
                for chunk in response.stream(DEFAULT_CHUNK_BYTES):
                    file.write(chunk)
                return file.tell()
        finally:
            response.close()
            response.release_conn()

    def _stat(self, key: str) -> ObjectInfo:
        result = self._client.stat_object(self.config.bucket, key)
        return ObjectInfo(key, result.size or 0, _unix_s(result.last_modified))

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        objects = self._client.list_objects(self.config.bucket, prefix=prefix, recursive=True)
        found = [
            ObjectInfo(obj.object_name, obj.size or 0, _unix_s(obj.last_modified))
            for obj in objects
            if not obj.is_dir
        ]
        return sorted(found, key=lambda info: info.key)


def _unix_s(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


def route_s3_through(connect: Callable[[str, int, float], socket.socket]) -> None:
    """Have every S3 connection of this process made by `connect(host, port, timeout_s)`
    (an isolated worker's gate: `broker.gate`), not by a socket of its own."""
    from urllib3.util import connection

    def create_connection(address: tuple[str, int], timeout: Any = None, **_: Any) -> socket.socket:
        timeout_s = timeout if isinstance(timeout, (int, float)) else 10.0
        made = connect(address[0], address[1], float(timeout_s))
        made.settimeout(timeout if isinstance(timeout, (int, float)) else None)
        return made

    connection.create_connection = create_connection  # type: ignore[assignment]


def _http_client(config: S3Config) -> urllib3.PoolManager:
    retries = urllib3.Retry(
        total=config.max_retries,
        backoff_factor=0.2,
        status_forcelist=(500, 502, 503, 504),
    )
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=config.connect_timeout_s, read=config.read_timeout_s),
        retries=retries,
        maxsize=config.max_threads * max(config.parallel_uploads, 1),
    )


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "reason", None) or exc
    text = str(cause)
    return text.rsplit(": ", 1)[-1] if text else type(cause).__name__
