"""The specs the control plane acts on: verified, and never older than one it has seen.

The scaler starts workers only for specs a trusted key signed for the function they are
stored under. The highest sequence it has accepted for each function is kept in the KV
bucket `autan_sequences`, so that an older signed spec written back into the registry (a
rollback) is refused, across restarts too. A refused entry is reported (`autan status`) and
served by at most one worker, which refuses its calls with the reason (dead letters), so
that callers hear why instead of waiting.
"""

from __future__ import annotations

import msgspec
import structlog

from broker import SEQUENCES_BUCKET, Broker, Bucket, KeyNotFound, consumer_name
from runtime.core import (
    ArtifactRejected,
    FunctionOptions,
    FunctionSpec,
    Registry,
    Scaling,
    SignedSpec,
    Trust,
    decode_spec,
    split_qualname,
)

__all__ = ["Refused", "VerifiedSpecs"]

log = structlog.get_logger("autan.scaler")

# A refused entry gets one worker, with its calls refused, whatever options it claims.
_QUARANTINE = FunctionOptions(scaling=Scaling(min_warm=0, max_workers=1, keep_warm_s=60.0))


class Refused(msgspec.Struct, frozen=True):
    """A registry entry the control plane will not run, and why."""

    qualname: str
    reason: str


class VerifiedSpecs:
    """Reads the registry and verifies each entry (`trust=None`: trusts every entry)."""

    def __init__(self, registry: Registry, sequences: Bucket, trust: Trust | None) -> None:
        self.registry = registry
        self.trust = trust
        self._sequences = sequences
        self._marks: dict[str, int] = {}
        self._reported: dict[str, str] = {}

    @classmethod
    async def open(cls, broker: Broker, trust: Trust | None) -> VerifiedSpecs:
        return cls(await Registry.open(broker), await broker.bucket(SEQUENCES_BUCKET), trust)

    async def read(
        self, serving: dict[str, FunctionSpec]
    ) -> tuple[list[FunctionSpec], list[Refused]]:
        """The specs to scale (`serving`: those scaled now, kept when their entry is refused)
        and the entries refused."""
        specs, refused = [], []
        for key, signed in (await self.registry.all_signed()).items():
            try:
                specs.append(await self._verify(key, signed))
            except ArtifactRejected as exc:
                refused.append(self._refuse(key, str(exc)))
                kept = serving.get(key)
                specs.append(kept if kept is not None else _quarantined(key, signed))
            else:
                self._reported.pop(key, None)
        return specs, refused

    async def _verify(self, key: str, signed: SignedSpec) -> FunctionSpec:
        app, fn = split_qualname(key)
        if self.trust is None:
            return _decoded(key, signed)
        mark = await self._mark(key)
        spec = self.trust.verify(signed, app, fn, min_sequence=mark)
        if spec.sequence > mark:  # kept once stored: a failed write is tried again
            await self._sequences.put(key, str(spec.sequence).encode())
            self._marks[key] = spec.sequence
        return spec

    async def _mark(self, key: str) -> int:
        mark = self._marks.get(key)
        if mark is None:
            try:
                mark = int(await self._sequences.get(key))
            except (KeyNotFound, ValueError):
                mark = 0
            self._marks[key] = mark
        return mark

    def _refuse(self, key: str, reason: str) -> Refused:
        if self._reported.get(key) != reason:
            self._reported[key] = reason
            log.error("refusing a registry entry", function=key, reason=reason)
        return Refused(key, reason)


def _decoded(key: str, signed: SignedSpec) -> FunctionSpec:
    try:
        return decode_spec(signed.body)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ArtifactRejected(f"{key}: its registry entry cannot be read ({exc})") from None


def _quarantined(key: str, signed: SignedSpec) -> FunctionSpec:
    """A stand-in spec for a refused entry: this function's name and consumer, one worker."""
    app, fn = split_qualname(key)
    try:
        claimed = decode_spec(signed.body)
    except (msgspec.DecodeError, ValueError):
        claimed = None
    trigger = None
    if claimed is not None and claimed.trigger is not None and claimed.qualname == key:
        trigger = msgspec.structs.replace(claimed.trigger, consumer=consumer_name(app, fn))
    return FunctionSpec(
        app=app,
        name=fn,
        version="refused",
        python="",
        artifact="",
        artifact_bytes=0,
        options=_QUARANTINE,
        trigger=trigger,
    )
