"""Turn a registered spec into a runnable function: verify, then unpickle, then build sessions.

Unpickling is code execution, so nothing is unpickled before the manifest's
signature, the Python version and the artifact's digest all check out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import cloudpickle
import msgspec

from runtime.core import (
    ArtifactRejected,
    Context,
    FunctionSpec,
    Manifest,
    ModelFile,
    python_version,
)
from storage import ArtifactStore, Digest, DiskCache, IntegrityError, ObjectNotFound

__all__ = ["Loaded", "fetch_function"]


class Loaded(msgspec.Struct):
    """A verified function, its setup hook and its model files on local disk."""

    manifest: Manifest
    fn: Callable[..., Any]
    setup: Callable[[Context], Any] | None
    models: dict[str, ModelFile]
    timings_ms: dict[str, float]


async def fetch_function(
    spec: FunctionSpec, artifacts: ArtifactStore, cache: DiskCache, signing_key: bytes
) -> Loaded:
    """Fetch and verify the artifact and models of `spec`; ArtifactRejected says why not."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    manifest = await _manifest(spec, artifacts, signing_key)
    timings["manifest"] = _ms_since(started)
    started = time.perf_counter()
    try:
        data = await artifacts.get_bytes(Digest(manifest.artifact, manifest.artifact_bytes))
        models = {
            m.name: ModelFile(
                await artifacts.fetch(Digest(m.digest, m.size_bytes), cache),
                digest=m.digest,
                optimization=m.optimization,
            )
            for m in manifest.models
        }
    except IntegrityError as exc:
        raise ArtifactRejected(f"{spec.qualname} {spec.version}: {exc}") from exc
    timings["fetch"] = _ms_since(started)
    started = time.perf_counter()
    fn, setup = cloudpickle.loads(data)
    timings["unpickle"] = _ms_since(started)
    return Loaded(manifest, fn, setup, models, timings)


async def _manifest(spec: FunctionSpec, artifacts: ArtifactStore, key: bytes) -> Manifest:
    try:
        raw = await artifacts.store.get(spec.manifest_key)
    except ObjectNotFound as exc:
        raise ArtifactRejected(
            f"{spec.qualname}: manifest {spec.manifest_key} is missing from object storage; "
            "redeploy with 'autan deploy'"
        ) from exc
    manifest = Manifest.verify(raw, key)
    if manifest is None:
        raise ArtifactRejected(
            f"{spec.qualname}: the manifest's signature does not match this worker's signing key "
            "(altered, or signed with another AUTAN_SIGNING_KEY); redeploy with 'autan deploy'"
        )
    if manifest.python != python_version():
        raise ArtifactRejected(
            f"{spec.qualname} was packaged on Python {manifest.python} and this worker runs "
            f"{python_version()}; a pickle from another minor version cannot be loaded: run "
            "workers on the deploying Python version, or redeploy from this one"
        )
    if (manifest.app, manifest.name, manifest.version) != (spec.app, spec.name, spec.version):
        raise ArtifactRejected(f"{spec.qualname}: the manifest describes another function")
    return manifest


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
