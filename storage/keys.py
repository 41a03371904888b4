"""Object keys: '/'-separated relative paths that mean the same thing on every backend.

A key maps to a file under the filesystem store's root and to an object name in a bucket, so
only names that are safe and unambiguous in both places are accepted: no leading '/', no empty,
'.' or '..' segments, no control characters, at most 1024 bytes of UTF-8 (the S3 limit).
"""

from __future__ import annotations

from storage.errors import InvalidKey

__all__ = ["check_key", "check_prefix"]

MAX_KEY_BYTES = 1024
_RULES = "keys are '/'-separated relative paths without empty, '.' or '..' segments"


def check_key(key: str) -> str:
    """Return `key` unchanged when it is a valid object key, else raise `InvalidKey`."""
    if not key:
        raise InvalidKey("empty object key: " + _RULES)
    _check_common(key, "key")
    if any(_is_bad_segment(segment) for segment in key.split("/")):
        raise InvalidKey(f"invalid object key {key!r}: {_RULES}")
    return key


def check_prefix(prefix: str) -> str:
    """Return `prefix` unchanged when keys could start with it, else raise `InvalidKey`.

    The last segment may be partial (`"logs/2024-"`), so only the complete segments before the
    last '/' follow the key rules.
    """
    _check_common(prefix, "prefix")
    complete = prefix.split("/")[:-1]
    if any(_is_bad_segment(segment) for segment in complete):
        raise InvalidKey(f"invalid key prefix {prefix!r}: {_RULES}")
    return prefix


def _check_common(text: str, what: str) -> None:
    if text.startswith("/"):
        raise InvalidKey(f"invalid object {what} {text!r}: must not start with '/'; {_RULES}")
    if any(ord(char) < 0x20 or char == "\x7f" for char in text):
        raise InvalidKey(f"invalid object {what} {text!r}: control characters are not allowed")
    if len(text.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"object {what} is longer than {MAX_KEY_BYTES} bytes: {text[:40]!r}...")


def _is_bad_segment(segment: str) -> bool:
    return segment in ("", ".", "..")
