"""The MLP of the batching benchmark on the GPU (`gpu=True`): imported only where CUDA works."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import numpy.typing as npt

from benchmarks.kit.mlp_model import build_mlp
from runtime import App, Batching, Context, Model, Scaling
from runtime.core import GpuChoice

__all__ = ["BATCH", "HIDDEN", "REPEATS", "app", "mlp_gpu"]

BATCH = int(os.environ.get("AUTAN_BENCH_GPU_BATCH", "256"))
# Which MLP (`benchmarks.kit.mlp_model.build_mlp`): the by default, or a heavier one.
HIDDEN = int(os.environ.get("AUTAN_BENCH_GPU_HIDDEN", "1024"))
REPEATS = int(os.environ.get("AUTAN_BENCH_GPU_REPEATS", "0"))
# "auto" only for the benchmark's CPU dry run (`--cpu-dry-run`); a GPU figure needs True.
GPU: GpuChoice = "auto" if os.environ.get("AUTAN_BENCH_GPU") == "auto" else True

app = App("gpubench")


@app.function(
    models={"mlp": Model.file(build_mlp(hidden=HIDDEN, repeats=REPEATS))},
    batching=Batching(max_size=BATCH, max_delay_ms=2),
    scaling=Scaling(max_workers=1),
    gpu=GPU,
    timeout_s=60,
)
def mlp_gpu(ctx: Context, rows: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
    handle = ctx.models["mlp"]
    [out] = handle.run({"x": handle.stack(rows)})
    return list(out)
