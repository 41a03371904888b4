"""What deploy writes: the signed manifest in object storage and the spec in the registry."""

from __future__ import annotations

import hashlib
import hmac
import sys

import msgspec

from broker import Source, calls_source
from runtime.core.options import FunctionOptions

__all__ = ["FunctionSpec", "Manifest", "ModelEntry", "python_version", "split_qualname"]


def split_qualname(qualname: str) -> tuple[str, str]:
    """`demo.embed` -> ("demo", "embed"); ValueError says how to write it."""
    app, sep, fn = qualname.partition(".")
    if not sep or not app or not fn:
        raise ValueError(f"name the function as APP.FN (e.g. demo.embed), got {qualname!r}")
    return app, fn


def python_version() -> str:
    """`major.minor`: a cloudpickle from another minor version crashes the interpreter."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class ModelEntry(msgspec.Struct, frozen=True):
    """A model file stored content-addressed under `sha256/<digest>`."""

    name: str
    digest: str
    size_bytes: int
    filename: str
    optimization: str = "all"


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker needs to trust before it unpickles anything."""

    app: str
    name: str
    version: str
    python: str
    artifact: str
    artifact_bytes: int
    models: tuple[ModelEntry, ...] = ()
    options: FunctionOptions = FunctionOptions()
    created_unix_s: float = 0.0

    def sign(self, key: bytes) -> bytes:
        """The stored form: the HMAC-SHA256 of the body, a newline, the JSON body."""
        body = msgspec.json.encode(self)
        return hmac.new(key, body, hashlib.sha256).hexdigest().encode() + b"\n" + body

    @classmethod
    def verify(cls, stored: bytes, key: bytes) -> Manifest | None:
        """The manifest if its signature matches `key`, else None."""
        signature, _, body = stored.partition(b"\n")
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, signature):
            return None
        return msgspec.json.decode(body, type=cls)


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The registry entry of one function: its current version and where its manifest is."""

    app: str
    name: str
    version: str
    manifest_key: str
    python: str
    options: FunctionOptions
    models: tuple[ModelEntry, ...] = ()
    deployed_unix_s: float = 0.0
    trigger: Source | None = None  # set for functions with `on=`: the stream that feeds them

    @property
    def qualname(self) -> str:
        return f"{self.app}.{self.name}"

    @property
    def source(self) -> Source:
        """Where this function's calls come from: its trigger stream, or the calls stream."""
        return self.trigger or calls_source(self.app, self.name)
