#!/usr/bin/env bash
# On the GPU host, from the repository root, with .gpu-kit/ carried there
# (benchmarks/gpu_kit.sh builds it): install the kit under /tmp/site, then run the GPU
# tests and the GPU benchmark. What it prints and writes lands in $OUT (default /tmp/out).
set -uo pipefail
out=${OUT:-/tmp/out}
site=/tmp/site
mkdir -p "$out"
if [ ! -d "$site/onnxruntime" ]; then
  mkdir -p /tmp/ort
  wheel=$(awk '{print $2}' .gpu-kit/ort/wheel.sha256)
  cat .gpu-kit/ort/part-* >"/tmp/ort/$wheel"
  (cd /tmp/ort && sha256sum -c "$OLDPWD/.gpu-kit/ort/wheel.sha256") || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .gpu-kit/whl/*.whl "/tmp/ort/$wheel" || exit 1
fi
# The kit's onnxruntime-gpu comes first on the path, ahead of the image's CPU wheel;
# CUDA 13's libraries are those of the image's PyTorch (nvidia-* packages).
export PYTHONPATH="$site:$PWD" ORT_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export PATH="$site/bin:$PATH"
cuda_libs=$(python3 - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for d in site.getsitepackages()
        for p in glob.glob(f"{d}/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  nvidia-smi -L
  python3 -c "import sys, onnxruntime as o; print(sys.version.split()[0], o.__version__, o.__file__, o.get_available_providers())"
} 2>&1 | tee "$out/host.txt"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/runtime/test_gpu.py \
  tests/runtime/test_models.py tests/runtime/test_executor.py 2>&1 | tee "$out/tests.txt"
timeout 300 python3 -m benchmarks.gpu_throughput --rows "${ROWS:-65536}" 2>&1 \
  | tee "$out/gpu_throughput.txt"
cp benchmarks/out/gpu_throughput.json "$out/" 2>/dev/null
timeout 240 python3 -m benchmarks.gpu_throughput --heavy --rows "${HEAVY_ROWS:-32768}" 2>&1 \
  | tee "$out/gpu_throughput_heavy.txt"
cp benchmarks/out/gpu_throughput_heavy.json "$out/" 2>/dev/null
exit 0
