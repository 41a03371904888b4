"""Turn a verified spec into a runnable function: fetch by digest, then unpickle.

Unpickling is code execution: the spec's signature has been checked (`core.Trust`)
before this runs, and every byte fetched here is checked against the digest the
signed spec gives.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import cloudpickle
import msgspec

from runtime.core import ArtifactRejected, Context, FunctionSpec, ModelFile
from runtime.worker.sources import name_sources
from storage import (
    ArtifactStore,
    Digest,
    DiskCache,
    IntegrityError,
    ObjectNotFound,
    unpack_zip,
)

__all__ = ["Loaded", "fetch_function"]


class Loaded(msgspec.Struct):
    """A verified function, its setup hook and its model files on local disk."""

    fn: Callable[..., Any]
    setup: Callable[[Context], Any] | None
    models: dict[str, ModelFile]
    timings_ms: dict[str, float]


async def fetch_function(spec: FunctionSpec, artifacts: ArtifactStore, cache: DiskCache) -> Loaded:
    """Fetch the artifact and models of a verified `spec`; ArtifactRejected says why not."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        data = await artifacts.get_bytes(Digest(spec.artifact, spec.artifact_bytes))
        models = {
            m.name: ModelFile(
                await artifacts.fetch(Digest(m.digest, m.size_bytes), cache),
                digest=m.digest,
                optimization=m.optimization,
            )
            for m in spec.models
        }
        if spec.layer:  # its requirements' packages, first on the path
            zipped = await artifacts.fetch(Digest(spec.layer, spec.layer_bytes), cache)
            layer = cache.root / "layers" / spec.layer
            await anyio.to_thread.run_sync(unpack_zip, zipped, layer)
            if str(layer) not in sys.path:
                sys.path.insert(0, str(layer))
    except IntegrityError as exc:
        raise ArtifactRejected(f"{spec.qualname} {spec.version}: {exc}") from exc
    except ObjectNotFound as exc:
        raise ArtifactRejected(
            f"{spec.qualname} {spec.version}: {exc}; redeploy with 'autan deploy'"
        ) from exc
    timings["fetch"] = _ms_since(started)
    started = time.perf_counter()
    fn, setup = cloudpickle.loads(data)
    name_sources(fn, setup)  # tracebacks name the user's files, not "<dynamic-code>"
    timings["unpickle"] = _ms_since(started)
    return Loaded(fn, setup, models, timings)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
