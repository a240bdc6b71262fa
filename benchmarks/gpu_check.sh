#!/usr/bin/env bash
# One short GPU check for a lent machine (<= 6 minutes, no network). Run from the repo root:
#
#   bash benchmarks/gpu_check.sh              # everything
#   bash benchmarks/gpu_check.sh --cpu-only   # only the CPU-side parts (to test the script)
#
# Prints the nvidia-smi summary and versions, checks that optkit's GPU modules import without
# tensorrt/onnxruntime-gpu/polygraphy, runs `pytest -m gpu tests/test_gpu_device.py`, prints
# optkit.runtime.gpu.gpu_status(), and measures PyTorch CUDA latency (fp32 / fp16 autocast, batch 1 and 8)
# and CUDA-vs-CPU output differences of the voice-resnet-seed model.
# Outputs go to $OUT if set (the device tool returns that folder), else ./gpu_check_out/.
# Environment: PYTHON (default python3), GPU_CHECK_MODEL (default voice-resnet-seed).
set -u

CPU_ONLY=0
[ "${1:-}" = "--cpu-only" ] && CPU_ONLY=1
OUT_DIR="${OUT:-./gpu_check_out}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
MODEL="${GPU_CHECK_MODEL:-voice-resnet-seed}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
LOG="$OUT_DIR/gpu_check.log"
START=$(date +%s)

section() { echo; echo "=== $* (t+$(( $(date +%s) - START ))s)"; }

{
section "nvidia-smi"
if [ "$CPU_ONLY" = 1 ]; then
    echo "skipped (--cpu-only)"
elif command -v nvidia-smi >/dev/null 2>&1; then
    timeout 30 nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,memory.used,utilization.gpu \
        --format=csv || echo "nvidia-smi query failed (rc=$?)"
    timeout 30 nvidia-smi | head -n 15
else
    echo "nvidia-smi not found"
fi

section "versions"
"$PY" - <<'EOF'
import importlib, importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], platform.platform())
for dist in ("optkit", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "polygraphy",
             "cuda-python", "click", "pytest", "pyyaml", "tqdm", "onnxsim", "onnxconverter-common", "openvino"):
    try:
        print(f"  {dist:22s} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"  {dist:22s} -")
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "devices", torch.cuda.device_count() if torch.cuda.is_available() else 0)
except Exception as exc:
    print("torch import failed:", exc)
try:
    import onnxruntime as ort
    print("onnxruntime providers", ort.get_available_providers())
except Exception as exc:
    print("onnxruntime import failed:", exc)
EOF

section "optkit GPU modules import without heavy dependencies"
"$PY" -c "
import sys
import optkit, optkit.runtime.gpu, optkit.runtime.engine_meta, optkit.runtime.registry, optkit.runtime.tensorrt, optkit.runtime.onnxruntime
import optkit.passes.build_engine, optkit.cli, optkit.cli.engine_cmd
heavy = sorted({'torch', 'onnxruntime', 'tensorrt', 'polygraphy', 'onnx'} & set(sys.modules))
print('imported heavy modules:', heavy or 'none', '->', 'OK' if not heavy else 'PROBLEM')
" || echo "IMPORT FAILED (rc=$?)"

section "pytest -m gpu tests/test_gpu_device.py"
if "$PY" -c "import pytest" 2>/dev/null; then
    timeout 120 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu_device.py \
        --junitxml="$OUT_DIR/pytest_gpu.xml"
    echo "pytest rc=$?"
else
    echo "pytest is not installed here: skipped (pip install pytest to run tests/test_gpu_device.py)"
fi

section "optkit.runtime.gpu.gpu_status()"
timeout 45 "$PY" benchmarks/gpu_check.py status --out "$OUT_DIR/gpu_status.json" || echo "status failed (rc=$?)"

section "PyTorch CUDA latency and CUDA-vs-CPU accuracy: $MODEL"
if [ "$CPU_ONLY" = 1 ]; then
    timeout 150 "$PY" benchmarks/gpu_check.py torch --model "$MODEL" --cpu-only --samples 2 \
        --out "$OUT_DIR/torch_cuda.json" || echo "torch check failed (rc=$?)"
else
    timeout 150 "$PY" benchmarks/gpu_check.py torch --model "$MODEL" --batches 1,8 --iterations 50 --warmup 10 \
        --out "$OUT_DIR/torch_cuda.json" || echo "torch check failed (rc=$?)"
fi

section "done"
} 2>&1 | tee "$LOG"
echo "log and results in $OUT_DIR"
