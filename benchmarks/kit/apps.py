"""The benchmarks' own app, `bench`: a small ONNX model and a 10 ms job, deployed beside `demo`.

    tiny(ctx, x)      a 2-layer MLP 64 -> 64 -> 64 (float32, dynamic batch) on ONNX Runtime:
                      the "small model" of the cold-start benchmark
    work(ctx, i)      sleeps 10 ms and returns i: the burst benchmark's job, scaled 0 -> 4 -> 0
    work_one(ctx, i)  the same job held to one worker: the burst benchmark's floor

The model is written to `benchmarks/out/tiny_mlp.onnx` when this module is imported, so that
`Model.file` finds it at decoration. Its weights come from a fixed seed: the same bytes on
every run, so deploying again gives the same version.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import time
from pathlib import Path

import numpy as np

from runtime import App, Context, Model, Scaling

__all__ = ["FEATURES", "TINY_MODEL", "app", "tiny", "work", "work_one"]

FEATURES = 64
TINY_MODEL = Path(__file__).resolve().parent.parent / "out" / "tiny_mlp.onnx"
WORK_S = 0.010

_INPUT, _OUTPUT = "x", "y"


def build_tiny_model(path: Path = TINY_MODEL) -> Path:
    """Write the MLP (MatMul, Add, Relu, MatMul, Add) to `path` unless it is there already."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        values = (rng.standard_normal(shape) / np.sqrt(FEATURES)).astype(np.float32)
        return numpy_helper.from_array(values, name)

    nodes = [
        helper.make_node("MatMul", [_INPUT, "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["h3"]),
        helper.make_node("MatMul", ["h3", "w2"], ["h4"]),
        helper.make_node("Add", ["h4", "b2"], [_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info(_INPUT, TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info(_OUTPUT, TensorProto.FLOAT, ["batch", FEATURES])],
        initializer=[
            weight("w1", FEATURES, FEATURES),
            weight("b1", FEATURES),
            weight("w2", FEATURES, FEATURES),
            weight("b2", FEATURES),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(path)
    return path


app = App("bench")


@app.function(timeout_s=30, models={"mlp": Model.file(build_tiny_model())})
def tiny(ctx: Context, x: list[float]) -> list[float]:
    """The MLP on one input vector of `FEATURES` floats."""
    (y,) = ctx.models["mlp"].run({_INPUT: np.asarray([x], dtype=np.float32)})
    return [float(v) for v in y[0]]


# keep_warm_s=2: the burst benchmark waits for the way back to zero.
@app.function(timeout_s=30, scaling=Scaling(max_workers=4, target_backlog=16, keep_warm_s=2))
def work(ctx: Context, i: int) -> int:
    """10 ms of waiting (not computing: four workers on two cores still overlap)."""
    time.sleep(WORK_S)
    return i


# One worker at most, kept warm between the floor's rounds; the benchmark stops it after each.
@app.function(timeout_s=30, scaling=Scaling(max_workers=1, keep_warm_s=600))
def work_one(ctx: Context, i: int) -> int:
    """`work`, held to one worker."""
    time.sleep(WORK_S)
    return i
