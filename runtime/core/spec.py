"""What deploy writes: one function's spec, signed, in the registry.

A `FunctionSpec` says everything that decides what runs: app, name, version, every
option, the digests of the artifact and the models, the Python version, the trigger's
stream, and a per-function sequence number (each deploy of a function signs the next).
Deploy signs its bytes (`core.trust`); the registry keeps them as a `SignedSpec`, and a
worker runs nothing whose signature, name or sequence does not check out.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from broker import Source, calls_source
from runtime.core.options import FunctionOptions

__all__ = [
    "FunctionSpec",
    "ModelEntry",
    "Parameter",
    "Signature",
    "SignedSpec",
    "decode_spec",
    "encode_spec",
    "python_version",
    "split_qualname",
]


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


class Parameter(msgspec.Struct, frozen=True):
    """One argument of a function (after its Context): its JSON Schema ({} where its
    annotation says nothing a schema can), and whether a caller must give it."""

    name: str
    schema: dict[str, Any]
    required: bool = True


class Signature(msgspec.Struct, frozen=True):
    """What a caller passes and gets back, as JSON Schemas (for a batched function: one
    input and one result, not the lists the function itself takes and returns)."""

    parameters: tuple[Parameter, ...]
    result: dict[str, Any]
    doc: str = ""  # the function's docstring
    # A batched function whose batch is annotated as an array: it gets the batch stacked.
    stacked: bool = False


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One deployed function version: what a worker needs to trust before it runs it."""

    app: str
    name: str
    version: str
    python: str
    artifact: str  # sha256 hex of the cloudpickled function and setup hook
    artifact_bytes: int
    options: FunctionOptions
    models: tuple[ModelEntry, ...] = ()
    sequence: int = 0  # one more at each deploy of this function: an older one is a rollback
    deployed_unix_s: float = 0.0
    trigger: Source | None = None  # set for functions with `on=`: the stream that feeds them
    layer: str = ""  # sha256 hex of the zip of its requirements' packages ("" : none)
    layer_bytes: int = 0
    signature: Signature | None = None  # from its annotations: the HTTP bridge's OpenAPI

    @property
    def qualname(self) -> str:
        return f"{self.app}.{self.name}"

    @property
    def source(self) -> Source:
        """Where this function's calls come from: its trigger stream, or the calls stream."""
        return self.trigger or calls_source(self.app, self.name)


class SignedSpec(msgspec.Struct, frozen=True):
    """A registry entry: the spec's exact bytes, their Ed25519 signature, the signer's key."""

    body: bytes  # `encode_spec(spec)`
    signature: bytes
    key: str  # the signer's public key, hex


_spec_encoder = msgspec.msgpack.Encoder()
_spec_decoder = msgspec.msgpack.Decoder(FunctionSpec)


def encode_spec(spec: FunctionSpec) -> bytes:
    return _spec_encoder.encode(spec)


def decode_spec(body: bytes) -> FunctionSpec:
    """The spec in `body`; msgspec.DecodeError (a ValidationError for bad options)."""
    return _spec_decoder.decode(body)
