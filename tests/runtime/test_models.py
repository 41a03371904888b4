"""ONNX Runtime sessions: providers really obtained, the optimized-model cache, helpers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.core import (
    ModelFile,
    NoGpuProvider,
    load_models,
    models,
    onnxruntime_conflict,
    pad_batch,
    stack_batch,
)
from storage import Digest
from tests.onnx_models import gpu_works, tiny_mlp


def test_the_optimized_graph_is_cached_by_digest(tmp_path: Path) -> None:
    path = tiny_mlp(tmp_path / "mlp.onnx")
    model = ModelFile(path, digest=Digest.of_file(path).hex)
    cache = tmp_path / "optimized"
    x = np.ones((3, 16), dtype=np.float32)
    [first] = load_models({"m": model}, cache_dir=cache)["m"].run({"x": x})
    [cached] = list(cache.iterdir())
    assert cached.name.startswith(model.digest)
    [second] = load_models({"m": model}, cache_dir=cache)["m"].run({"x": x})
    np.testing.assert_allclose(first, second, rtol=1e-6)
    assert list(cache.iterdir()) == [cached]


@pytest.mark.skipif(gpu_works(), reason="a GPU execution provider works on this host")
def test_gpu_true_fails_clearly_without_a_gpu(tmp_path: Path) -> None:
    path = tiny_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(NoGpuProvider, match="gpu=True but the session runs on"):
        load_models({"m": path}, gpu=True)


def test_gpu_auto_falls_back_to_the_cpu_and_says_so(tmp_path: Path) -> None:
    handle = load_models({"m": tiny_mlp(tmp_path / "mlp.onnx")}, gpu="auto")["m"]
    assert handle.providers[-1] == "CPUExecutionProvider"
    assert handle.input_names == ("x",)
    assert handle.output_names == ("y",)
    assert handle.input_shapes == {"x": ["batch", 16]}


def test_one_onnxruntime_wheel_is_installed() -> None:
    assert onnxruntime_conflict() is None


def _dist(site: Path, name: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")


def test_both_onnxruntime_wheels_in_one_directory_are_refused(tmp_path: Path) -> None:
    _dist(tmp_path / "site", "onnxruntime")
    _dist(tmp_path / "site", "onnxruntime-gpu")
    message = onnxruntime_conflict([str(tmp_path / "site")])
    assert message is not None
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in message


def test_a_gpu_wheel_ahead_of_a_cpu_one_elsewhere_on_the_path_is_sound(tmp_path: Path) -> None:
    _dist(tmp_path / "target", "onnxruntime-gpu")  # pip install --target, first on the path
    _dist(tmp_path / "image", "onnxruntime")
    assert onnxruntime_conflict([str(tmp_path / "target"), str(tmp_path / "image")]) is None


def test_pad_batch_pads_and_masks() -> None:
    ids, mask = pad_batch([[5, 6, 7], [8], [9, 10]], pad_value=-1, max_length=2)
    assert ids.tolist() == [[5, 6], [8, -1], [9, 10]]
    assert mask.tolist() == [[1, 1], [1, 0], [1, 1]]


def test_stack_batch_says_what_to_do_with_ragged_inputs() -> None:
    assert stack_batch([np.zeros(3), np.ones(3)]).shape == (2, 3)
    with pytest.raises(ValueError, match=r"pad them first \(pad_batch\)"):
        stack_batch([np.zeros(3), np.ones(4)])


_ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("gpu", "tensorrt", "expected"),
    [
        (False, True, ["CPUExecutionProvider"]),
        (True, False, ["CUDAExecutionProvider", "CPUExecutionProvider"]),
        ("auto", True, _ALL),
    ],
)
def test_providers_asked_for(
    monkeypatch: pytest.MonkeyPatch, gpu: bool | str, tensorrt: bool, expected: list[str]
) -> None:
    monkeypatch.setattr(models, "_tensorrt_loadable", lambda: tensorrt)
    chosen = models._providers(_ALL, gpu=gpu, device_id=1)  # type: ignore[arg-type]
    assert [p if isinstance(p, str) else p[0] for p in chosen] == expected
    assert all(p[1] == {"device_id": "1"} for p in chosen if not isinstance(p, str))
