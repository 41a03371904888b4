"""Storage URLs: `open_store` picks and configures the backend a URL names.

Accepted forms:

- `file:///abs/path[?fsync=true]`: a `FileStore` rooted at `/abs/path`.
- `s3://bucket[?endpoint=host:port&secure=true|false&region=name&part_size_mib=16]`:
  an `S3Store`; the endpoint defaults to `127.0.0.1:9000`, TLS to off on loopback only.

Credentials never come from the URL or the environment here: the caller (the CLI, which reads
the environment) passes them in.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from storage.errors import InvalidStorageURL
from storage.filesystem import FileStore
from storage.s3config import MIB, S3Config
from storage.store import ObjectStore

__all__ = ["open_store", "parse_file_url", "parse_s3_url"]

ACCEPTED_FORMS = "file:///path or s3://bucket?endpoint=host:port"
_FILE_PARAMS = frozenset({"fsync"})
_S3_PARAMS = frozenset({"endpoint", "secure", "region", "part_size_mib"})
_USERINFO = re.compile(r"(?<=://)[^/?#@]*@")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def open_store(
    url: str, *, access_key: str | None = None, secret_key: str | None = None
) -> ObjectStore:
    """Return the store `url` names; `InvalidStorageURL` when no backend accepts it.

    Example:
        store = open_store("s3://autan?endpoint=127.0.0.1:9000", access_key=ak, secret_key=sk)
    """
    scheme = urlsplit(url).scheme
    if scheme == "file":
        root, fsync = parse_file_url(url)
        return FileStore(root, fsync=fsync)
    if scheme == "s3":
        from storage.s3 import S3Store  # the minio SDK loads only when an S3 URL is used

        return S3Store(parse_s3_url(url), access_key=access_key, secret_key=secret_key)
    raise InvalidStorageURL(
        f"unsupported storage URL {_shown(url)!r}: expected {ACCEPTED_FORMS} "
        "(set AUTAN_STORAGE_URL)"
    )


def parse_file_url(url: str) -> tuple[Path, bool]:
    """Return the root directory and the fsync flag of a `file:///abs/path` URL."""
    parts = urlsplit(url)
    params = _params(url, parts, _FILE_PARAMS)
    if parts.netloc not in ("", "localhost"):
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r} names host {parts.hostname!r}: file URLs take an "
            "absolute path after three slashes, as in file:///var/lib/autan/objects"
        )
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r} needs an absolute path: file:///abs/path"
        )
    return Path(path), _flag(url, params, "fsync", default=False) is True


def parse_s3_url(url: str) -> S3Config:
    """Return the `S3Config` of an `s3://bucket?endpoint=host:port` URL."""
    parts = urlsplit(url)
    params = _params(url, parts, _S3_PARAMS)
    _check_s3_location(url, parts)
    endpoint = params.get("endpoint", "127.0.0.1:9000")
    if "/" in endpoint or not endpoint:
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r}: endpoint must be host:port (no scheme, no path); "
            "use secure=true for HTTPS"
        )
    try:
        return S3Config(
            bucket=parts.netloc,
            endpoint=endpoint,
            secure=_flag(url, params, "secure", default=None),
            region=params.get("region") or None,
            part_size_bytes=_int(url, params, "part_size_mib", default=16) * MIB,
        )
    except ValueError as exc:
        raise InvalidStorageURL(f"storage URL {_shown(url)!r}: {exc}") from exc


def _check_s3_location(url: str, parts: SplitResult) -> None:
    if parts.username is not None or parts.password is not None:
        raise InvalidStorageURL(
            f"storage URL for bucket {parts.hostname!r} carries credentials: remove them "
            "from the URL and pass the access and secret keys separately"
        )
    if parts.path not in ("", "/"):
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r} has a path: name only the bucket, as in "
            "s3://bucket?endpoint=host:port"
        )


def _params(url: str, parts: SplitResult, accepted: frozenset[str]) -> dict[str, str]:
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r} has unknown parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    return params


def _flag(url: str, params: dict[str, str], name: str, *, default: bool | None) -> bool | None:
    text = params.get(name)
    if text is None:
        return default
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise InvalidStorageURL(f"storage URL {_shown(url)!r}: {name}={text!r} is not true or false")


def _int(url: str, params: dict[str, str], name: str, *, default: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InvalidStorageURL(
            f"storage URL {_shown(url)!r}: {name}={text!r} is not a number"
        ) from None


def _shown(url: str) -> str:
    """The URL as error messages show it: a `user:password@` part becomes `***@`."""
    return _USERINFO.sub("***@", url)
