"""`S3Config`: where an S3 bucket lives and how to talk to it, parsed once at the edge.

Kept apart from `storage.s3` so that reading settings never imports the `minio` SDK (about
150 ms of imports that the filesystem store does not need).
"""

from __future__ import annotations

import ipaddress
import re

import msgspec

from storage.store import DEFAULT_MAX_THREADS

__all__ = ["MIB", "S3Config"]

MIB = 1024 * 1024
_MIN_PART_BYTES = 5 * MIB  # S3's floor for every part but the last
_MAX_PART_BYTES = 5 * 1024 * MIB
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


class S3Config(msgspec.Struct, frozen=True, kw_only=True):
    """Where the bucket lives and how to talk to it. Credentials travel separately.

    `secure=None` means TLS except on loopback endpoints (127.0.0.0/8, ::1, localhost).
    """

    bucket: str
    endpoint: str = "127.0.0.1:9000"
    secure: bool | None = None
    region: str | None = None
    part_size_bytes: int = 16 * MIB
    parallel_uploads: int = 3
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    max_retries: int = 1
    max_threads: int = DEFAULT_MAX_THREADS

    def __post_init__(self) -> None:
        if not _BUCKET_NAME.fullmatch(self.bucket) or ".." in self.bucket:
            raise ValueError(
                f"invalid bucket name {self.bucket!r}: use 3-63 lowercase letters, digits, "
                "'.' or '-', starting and ending with a letter or digit"
            )
        if not _MIN_PART_BYTES <= self.part_size_bytes <= _MAX_PART_BYTES:
            raise ValueError(
                f"part_size_bytes={self.part_size_bytes} is outside S3's limits "
                f"({_MIN_PART_BYTES} to {_MAX_PART_BYTES})"
            )

    @property
    def tls(self) -> bool:
        """Whether requests use HTTPS."""
        return not _is_loopback(self.endpoint) if self.secure is None else self.secure

    @property
    def endpoint_url(self) -> str:
        """The endpoint as an HTTP URL, for messages."""
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def url(self) -> str:
        """The storage URL naming this bucket and endpoint (never the credentials)."""
        region = f"&region={self.region}" if self.region else ""
        secure = str(self.tls).lower()
        return f"s3://{self.bucket}?endpoint={self.endpoint}&secure={secure}{region}"


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rsplit(":", 1)[0].strip("[]") if ":" in endpoint else endpoint
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
