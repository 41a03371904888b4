"""Object storage for Autan: one protocol, two backends, a verified content-addressed layer.

- `ObjectStore`: async put/get/stat/list/delete with streaming (`put_file`, `get_file`,
  `stream`), implemented by `FileStore` (`file:///path`, the embedded default) and `S3Store`
  (`s3://bucket?endpoint=host:port`: MinIO, S3 or any S3 API). `open_store(url)` picks one.
- `ArtifactStore`: blobs under `sha256/<hex>`, uploaded once, verified on every read
  (`IntegrityError` when altered); `fetch` keeps them in a local `DiskCache`.
- Errors: `StorageError` and its subclasses, drawn in `storage.errors`.

Example:
    store = open_store("file:///var/lib/autan/objects")
    artifacts = ArtifactStore(store)
    upload = await artifacts.put_file(Path("model.onnx"))
    path = await artifacts.fetch(upload.digest, DiskCache(Path("/var/cache/autan")))
    await store.aclose()

This package never imports `runtime` or `broker`; only `storage.s3` imports `minio`, and only
when first used (`S3Store`, or `open_store` with an `s3://` URL), so that processes on the
filesystem store skip the SDK's imports.
"""

from typing import TYPE_CHECKING

from storage.artifacts import ArtifactStore, Digest, Upload, sha256_file
from storage.cache import DiskCache
from storage.errors import (
    IntegrityError,
    InvalidKey,
    InvalidStorageURL,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
)
from storage.filesystem import FileStore
from storage.s3config import S3Config
from storage.store import ObjectInfo, ObjectStore
from storage.unpack import unpack_zip
from storage.url import open_store

if TYPE_CHECKING:
    from storage.s3 import S3Store, route_s3_through

__all__ = [
    "ArtifactStore",
    "Digest",
    "DiskCache",
    "FileStore",
    "IntegrityError",
    "InvalidKey",
    "InvalidStorageURL",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "S3Config",
    "S3Store",
    "StorageError",
    "StorageUnavailable",
    "Upload",
    "open_store",
    "route_s3_through",
    "sha256_file",
    "unpack_zip",
]


def __getattr__(name: str) -> object:
    """Import `S3Store` (and with it the minio SDK) on first access."""
    if name == "S3Store":
        from storage.s3 import S3Store

        return S3Store
    if name == "route_s3_through":
        from storage.s3 import route_s3_through

        return route_s3_through
    raise AttributeError(f"module 'storage' has no attribute {name!r}")
