"""ONNX Runtime sessions: the only module that imports onnxruntime.

ONNX Runtime 1.29 and later try to reach the network unless
ORT_DISABLE_TELEMETRY=1 is in the environment before the import; the package
sets it in runtime/__init__.py, and this module sets it again so that it holds
whatever imported it first.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import numpy.typing as npt

__all__ = [
    "ModelHandle",
    "NoGpuProvider",
    "load_models",
    "onnxruntime_conflict",
    "preload_onnxruntime",
]

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def preload_onnxruntime() -> None:
    """Import onnxruntime now (for the fork server): no session, so no thread pools yet."""
    import onnxruntime

    onnxruntime.get_available_providers()


class NoGpuProvider(RuntimeError):
    """`gpu=True` was asked for but no GPU execution provider works on this host."""


def onnxruntime_conflict() -> str | None:
    """Say why the environment is broken when both onnxruntime wheels are installed."""
    found = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(dist)
    if len(found) < 2:
        return None
    return (
        "both onnxruntime and onnxruntime-gpu are installed; they share the module "
        "'onnxruntime' and overwrite each other: pip uninstall -y onnxruntime onnxruntime-gpu, "
        "then install exactly one (pip install 'autan[cpu]' or 'autan[gpu]')"
    )


class ModelHandle:
    """One ONNX Runtime session, built once per worker and shared by every call.

    `run` is thread-safe (ONNX Runtime allows concurrent `run` on one session).
    """

    def __init__(self, name: str, session: Any) -> None:
        self.name = name
        self.session = session
        self.input_names: tuple[str, ...] = tuple(i.name for i in session.get_inputs())
        self.output_names: tuple[str, ...] = tuple(o.name for o in session.get_outputs())
        self.input_shapes: dict[str, list[int | str | None]] = {
            i.name: list(i.shape) for i in session.get_inputs()
        }
        self.providers: tuple[str, ...] = tuple(session.get_providers())

    def run(
        self, feeds: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[Any]]:
        """Run the session; `outputs` defaults to all of them, in declaration order."""
        result = self.session.run(list(outputs) if outputs else None, dict(feeds))
        return [np.asarray(r) for r in result]

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, providers={list(self.providers)})"


def load_models(
    paths: Mapping[str, Path],
    *,
    gpu: bool = False,
    device_id: int = 0,
    intra_op_threads: int = 0,
) -> dict[str, ModelHandle]:
    """Build one session per model. With `gpu=True`, fail unless a GPU provider really works."""
    conflict = onnxruntime_conflict()
    if conflict:
        raise RuntimeError(conflict)
    return {
        name: _load_one(name, path, gpu=gpu, device_id=device_id, threads=intra_op_threads)
        for name, path in paths.items()
    }


def _load_one(name: str, path: Path, *, gpu: bool, device_id: int, threads: int) -> ModelHandle:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = _providers(ort.get_available_providers(), gpu=gpu, device_id=device_id)
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    handle = ModelHandle(name, session)
    if gpu and not set(handle.providers) & set(_GPU_PROVIDERS):
        raise NoGpuProvider(
            f"model {name!r}: gpu=True but the session runs on {list(handle.providers)} "
            f"(available: {ort.get_available_providers()}); install 'autan[gpu]' on a host "
            "with an NVIDIA GPU and CUDA, or deploy the function with gpu=False"
        )
    return handle


def _providers(available: Sequence[str], *, gpu: bool, device_id: int) -> list[Any]:
    chosen: list[Any] = []
    if gpu:
        chosen = [(p, {"device_id": str(device_id)}) for p in _GPU_PROVIDERS if p in available]
    return [*chosen, "CPUExecutionProvider"]
