"""Errors raised by the storage package, grouped by what the caller does about them.

```
StorageError                 anything below; catch this to handle every storage failure
├── ObjectNotFound           the key does not exist: deploy it, or treat it as absent
├── StorageUnavailable       the backend cannot be reached: start it or fix the URL, then retry
├── IntegrityError           content does not match its digest: redeploy, never trust it
├── InvalidStorageURL        the storage URL is malformed (also a ValueError): fix the setting
└── InvalidKey               the object key is malformed (also a ValueError): fix the caller
```

Third-party exceptions (minio, urllib3) are translated in `storage.s3` and chained with
`raise ... from exc`; nothing outside that module sees them.
"""

from __future__ import annotations

__all__ = [
    "IntegrityError",
    "InvalidKey",
    "InvalidStorageURL",
    "ObjectNotFound",
    "StorageError",
    "StorageUnavailable",
]


class StorageError(Exception):
    """Base of every error the storage package raises."""


class ObjectNotFound(StorageError):
    """No object is stored under `key`."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        suffix = f" in {where}" if where else ""
        super().__init__(f"no object {key!r}{suffix}")


class StorageUnavailable(StorageError):
    """The backend cannot be reached or answered with a server-side failure."""


class IntegrityError(StorageError):
    """Stored content does not match the digest it was stored under."""


class InvalidStorageURL(StorageError, ValueError):
    """A storage URL that no backend accepts."""


class InvalidKey(StorageError, ValueError):
    """An object key or prefix that is not a clean '/'-separated relative path."""
