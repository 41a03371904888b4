"""ONNX Runtime sessions: providers really obtained, the optimized-model cache, helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.models import ModelFile, NoGpuProvider, load_models, onnxruntime_conflict
from runtime.tensors import pad_batch, stack_batch
from storage import Digest


def _mlp(path: Path, width: int = 16) -> Path:
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


def test_the_optimized_graph_is_cached_by_digest(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    model = ModelFile(path, digest=Digest.of_file(path).hex)
    cache = tmp_path / "optimized"
    x = np.ones((3, 16), dtype=np.float32)
    [first] = load_models({"m": model}, cache_dir=cache)["m"].run({"x": x})
    [cached] = list(cache.iterdir())
    assert cached.name.startswith(model.digest)
    [second] = load_models({"m": model}, cache_dir=cache)["m"].run({"x": x})
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert list(cache.iterdir()) == [cached]


def test_gpu_true_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    with pytest.raises(NoGpuProvider, match="gpu=True but the session runs on"):
        load_models({"m": path}, gpu=True)


def test_gpu_auto_falls_back_to_the_cpu_and_says_so(tmp_path: Path) -> None:
    handle = load_models({"m": _mlp(tmp_path / "mlp.onnx")}, gpu="auto")["m"]
    assert handle.providers[-1] == "CPUExecutionProvider"
    assert handle.input_names == ("x",)
    assert handle.output_names == ("y",)
    assert handle.input_shapes == {"x": ["batch", 16]}


def test_one_onnxruntime_wheel_is_installed() -> None:
    assert onnxruntime_conflict() is None


def test_pad_batch_pads_and_masks() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10]], pad_value=-1, max_length=2)
    assert ids.tolist() == [[5, 6], [8, -1], [9, 10]]
    assert mask.tolist() == [[1, 1], [1, 0], [1, 1]]


def test_stack_batch_says_what_to_do_with_ragged_inputs() -> None:
    assert stack_batch([np.zeros(3), np.ones(3)]).shape == (2, 3)
    with pytest.raises(ValueError, match=r"pad them first \(pad_batch\)"):
        stack_batch([np.zeros(3), np.ones(4)])
