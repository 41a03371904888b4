"""The registry entry a worker serves: verified with its keys, or refused with the reason."""

from __future__ import annotations

import msgspec
import structlog

from broker import ErrorInfo, consumer_name
from runtime.core import (
    ArtifactRejected,
    FunctionOptions,
    FunctionSpec,
    SignedSpec,
    Trust,
    decode_spec,
)

__all__ = ["verified"]


def verified(
    trust: Trust,
    signed: SignedSpec,
    app: str,
    fn: str,
    min_sequence: int,
    log: structlog.typing.FilteringBoundLogger,
) -> tuple[FunctionSpec, ErrorInfo | None]:
    """The spec to serve, if a trusted key signed it for this function and it is not
    older than what the provider asked for. Else the reason, and a spec good for
    refusing calls only: the unverified one, pulling from this function's own consumer
    whatever it says."""
    try:
        spec = trust.verify(signed, app, fn, min_sequence=min_sequence)
    except (ArtifactRejected, ValueError) as exc:
        log.error("refusing the function; failing its calls", error=str(exc))
        return _unverified(signed, app, fn), ErrorInfo("ArtifactRejected", str(exc))
    return spec, None


def _unverified(signed: SignedSpec, app: str, fn: str) -> FunctionSpec:
    """What a refused entry says, pinned to this function's own consumer (so that it can
    point the worker at no other function's calls), or a stand-in when it cannot be read."""
    try:
        spec = decode_spec(signed.body)
    except (msgspec.DecodeError, ValueError):
        spec = FunctionSpec(
            app=app, name=fn, version="?", python="?", artifact="", artifact_bytes=0,
            options=FunctionOptions(),
        )  # fmt: skip
    own = consumer_name(app, fn)
    source = msgspec.structs.replace(spec.source, consumer=own)
    trigger = source if spec.trigger is not None else None
    return msgspec.structs.replace(spec, app=app, name=fn, trigger=trigger)
