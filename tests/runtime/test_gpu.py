"""The GPU path, on a host where a GPU execution provider works (skipped elsewhere).

`benchmarks/gpu_device.sh` runs these on a GPU host; CI's CPU-only runs skip them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.core import ModelHandle, load_models
from tests.onnx_models import gpu_works, tiny_mlp

pytestmark = pytest.mark.skipif(not gpu_works(), reason="no GPU execution provider works here")

_GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


@pytest.fixture(scope="module")
def on_gpu(tmp_path_factory: pytest.TempPathFactory) -> ModelHandle:
    path = tiny_mlp(tmp_path_factory.mktemp("gpu") / "mlp.onnx", width=384)
    return load_models({"m": path}, gpu=True)["m"]


def test_gpu_true_runs_on_a_gpu_provider_and_says_so(on_gpu: ModelHandle) -> None:
    assert on_gpu.providers[0] in _GPU_PROVIDERS
    assert on_gpu.providers[-1] == "CPUExecutionProvider"


def test_gpu_auto_takes_the_gpu(tmp_path: Path) -> None:
    handle = load_models({"m": tiny_mlp(tmp_path / "mlp.onnx")}, gpu="auto")["m"]
    assert handle.providers[0] in _GPU_PROVIDERS


def test_gpu_and_cpu_agree(on_gpu: ModelHandle, tmp_path: Path) -> None:
    on_cpu = load_models({"m": tiny_mlp(tmp_path / "mlp.onnx", width=384)})["m"]
    x = np.random.default_rng(1).standard_normal((64, 384)).astype(np.float32)
    [gpu_out] = on_gpu.run({"x": x})
    [cpu_out] = on_cpu.run({"x": x})
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-3, atol=1e-2)
