"""Small ONNX models built with onnx.helper for tests, and whether a GPU provider works here."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.core import NoGpuProvider, load_models

__all__ = ["gpu_works", "tiny_mlp"]


def tiny_mlp(path: Path, width: int = 16) -> Path:
    """MatMul, Relu, MatMul: `width` floats in and out, batch dimension dynamic."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), f"w{i}")
        for i in range(2)
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@functools.cache
def gpu_works() -> bool:
    """Whether a session with gpu=True really runs on a GPU provider on this host."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_models({"m": tiny_mlp(Path(tmp) / "mlp.onnx")}, gpu=True)
        except NoGpuProvider:
            return False
    return True
