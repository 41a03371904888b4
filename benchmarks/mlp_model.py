"""The benchmarks' synthetic MLP: 384 -> 1024 -> 384 with ReLU, float32, batch dynamic.

Apart from the apps that use it so that the GPU benchmark imports no bundled function
(whose data come from the `autan[models]` wheels, absent beside `autan[gpu]`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["MLP_PATH", "build_mlp"]

MLP_PATH = Path(__file__).resolve().parent / "out" / "mlp-384-1024-384.onnx"


def build_mlp(path: Path = MLP_PATH) -> Path:
    """A 384 -> 1024 -> 384 MLP with ReLU, float32, batch dimension left dynamic."""
    if path.exists():
        return path
    rng = np.random.default_rng(7)
    shapes = {"w0": (384, 1024), "b0": (1024,), "w1": (1024, 384), "b1": (384,)}
    weights = [
        numpy_helper.from_array((rng.standard_normal(s) * 0.05).astype(np.float32), n)
        for n, s in shapes.items()
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 384])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 384])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
