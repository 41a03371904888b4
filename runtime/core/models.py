"""ONNX Runtime sessions: the only module that imports onnxruntime.

ONNX Runtime 1.29 and later try to reach the network unless
ORT_DISABLE_TELEMETRY=1 is in the environment before the import; the package
sets it in runtime/__init__.py, and this module sets it again so that it holds
whatever imported it first.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

if os.environ.get("ORT_DISABLE_TELEMETRY") != "1":  # as in runtime/__init__.py
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import numpy.typing as npt

from runtime.core.options import GPU, GpuChoice
from runtime.core.tensors import pad_batch, stack_batch

__all__ = [
    "ModelFile",
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


def onnxruntime_conflict(path: Sequence[str] | None = None) -> str | None:
    """Say why the environment is broken when both onnxruntime wheels are installed
    in one directory (of `path`, default sys.path).

    There they overwrite each other's files. In two directories the first on the
    path shadows the other whole, which is sound (a GPU wheel installed with
    `pip --target` ahead of an image's CPU one, say).
    """
    places = {}
    for name in ("onnxruntime", "onnxruntime-gpu"):
        context = importlib.metadata.DistributionFinder.Context(
            name=name, path=list(sys.path if path is None else path)
        )
        found = next(iter(importlib.metadata.distributions(context=context)), None)
        if found is not None:
            places[name] = str(found.locate_file(""))
    if len(places) < 2 or len(set(places.values())) > 1:
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

    # Helpers to form a batch's inputs: ctx.models["encoder"].pad([...]) and .stack([...]).
    pad = staticmethod(pad_batch)
    stack = staticmethod(stack_batch)

    def run(
        self, feeds: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[Any]]:
        """Run the session; `outputs` defaults to all of them, in declaration order."""
        result = self.session.run(list(outputs) if outputs else None, dict(feeds))
        return [np.asarray(r) for r in result]

    def __repr__(self) -> str:
        return f"ModelHandle({self.name!r}, providers={list(self.providers)})"


class ModelFile(msgspec.Struct, frozen=True):
    """A model file on local disk, with what is needed to build its session."""

    path: Path
    digest: str = ""  # sha256 hex; enables the optimized-model cache
    optimization: str = "all"


_LEVELS = {"none": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
           "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}  # fmt: skip


def load_models(
    models: Mapping[str, ModelFile | Path],
    *,
    gpu: GpuChoice = False,
    device_id: int = 0,
    intra_op_threads: int = 0,
    cache_dir: Path | None = None,
    spinning: bool = True,
) -> dict[str, ModelHandle]:
    """Build one session per model.

    `gpu=True` fails unless a GPU provider really runs the session; `"auto"` takes
    TensorRT or CUDA when they work and the CPU otherwise. With `cache_dir`, a CPU
    session's optimized graph is saved by digest, and the next cold start loads it
    with optimizations off (MiniLM in a fresh worker: ~230 ms down to ~160 ms here).
    `spinning=False`: intra-op threads sleep between parallel sections instead of
    spinning (a worker's event loop needs those cores: 2 spinning threads on 2 cores
    halved a batched MLP's rows/s).
    """
    conflict = onnxruntime_conflict() if models else None
    if conflict:
        raise RuntimeError(conflict)
    return {
        name: _load_one(
            name,
            model if isinstance(model, ModelFile) else ModelFile(model),
            gpu=gpu,
            device_id=device_id,
            threads=intra_op_threads,
            cache_dir=cache_dir,
            spinning=spinning,
        )
        for name, model in models.items()
    }


def _load_one(
    name: str,
    model: ModelFile,
    *,
    gpu: GpuChoice,
    device_id: int,
    threads: int,
    cache_dir: Path | None,
    spinning: bool,
) -> ModelHandle:
    import onnxruntime as ort

    providers = _providers(ort.get_available_providers(), gpu=gpu, device_id=device_id)
    on_cpu = len(providers) == 1
    cached = _optimized_path(model, cache_dir, ort.__version__) if on_cpu else None
    path, options = model.path, _options(ort, model.optimization, threads, spinning)
    if cached is not None and cached.exists():
        path, options = cached, _options(ort, "none", threads, spinning)
    elif cached is not None:
        options.optimized_model_filepath = str(cached.with_suffix(f".{os.getpid()}.tmp"))
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if cached is not None and options.optimized_model_filepath:
        os.replace(options.optimized_model_filepath, cached)
    handle = ModelHandle(name, session)
    _check_gpu(handle, gpu, ort.get_available_providers())
    return handle


def _options(ort: Any, optimization: str, threads: int, spinning: bool = True) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if threads > 1 and not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _optimized_path(model: ModelFile, cache_dir: Path | None, version: str) -> Path | None:
    if cache_dir is None or not model.digest or model.optimization == "none":
        return None
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"{model.digest}.{model.optimization}.ort{version}.cpu.onnx"


def _check_gpu(handle: ModelHandle, gpu: GpuChoice, available: Sequence[str]) -> None:
    required = gpu is True or isinstance(gpu, GPU)
    if required and not set(handle.providers) & set(_GPU_PROVIDERS):
        raise NoGpuProvider(
            f"model {handle.name!r}: gpu=True but the session runs on {list(handle.providers)} "
            f"(available: {list(available)}); install 'autan[gpu]' on a host with an NVIDIA "
            "GPU and CUDA, or deploy the function with gpu='auto' or gpu=False"
        )


def _providers(available: Sequence[str], *, gpu: GpuChoice, device_id: int) -> list[Any]:
    chosen: list[Any] = []
    if gpu:
        usable = [p for p in _GPU_PROVIDERS if p in available]
        if "TensorrtExecutionProvider" in usable and not _tensorrt_loadable():
            usable.remove("TensorrtExecutionProvider")  # listed by every GPU wheel
        chosen = [(p, {"device_id": str(device_id)}) for p in usable]
    return [*chosen, "CPUExecutionProvider"]


@functools.cache
def _tensorrt_loadable() -> bool:
    """Whether TensorRT's runtime library loads here.

    onnxruntime-gpu lists TensorRT whether or not TensorRT is installed; asked for it
    without, ONNX Runtime prints an error and falls back to CUDA on every session.
    """
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False
