#!/usr/bin/env bash
# ONNX Runtime's CUDA (and TensorRT) execution providers on a lent GPU machine that has CUDA
# PyTorch but no onnxruntime-gpu: the onnxruntime-gpu wheel (255.6 MB, over one call's 64 MiB
# carry limit) is carried in 50 MB pieces into /tmp/ck over consecutive calls while the machine
# stays warm, then reassembled here. Run from the repo root:  bash benchmarks/gpu_ort_cuda.sh
# Outputs go to $OUT (the device tool returns that folder), else ./gpu_check_out/.
set -u
OUT_DIR="${OUT:-./gpu_check_out}"; mkdir -p "$OUT_DIR" /tmp/m
WHEEL=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ck/p* > "$WHEEL" && ls -la "$WHEEL"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEEL" || { echo "pip install failed"; exit 1; }
export PYTHONPATH="/tmp/site:."
{
echo "=== onnxruntime-gpu"
python3 - <<'PY'
import onnxruntime as ort
print(ort.__version__, ort.__file__)
try:
    ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels PyTorch brought
    print("preload_dlls: ok")
except Exception as exc:
    print("preload_dlls:", exc)
print("providers:", ort.get_available_providers())
PY
echo "=== export (CPU PyTorch) voice-resnet and voice-resnet-seed"
python3 -m optkit export voice-resnet -o /tmp/m/vr.onnx --reference-samples 256 | tail -2
python3 -m optkit export voice-resnet-seed -o /tmp/m/seed.onnx --reference-samples 16 | tail -2
echo "=== verify --provider cuda"
python3 -m optkit verify /tmp/m/vr.onnx --reference /tmp/m/vr.reference.npz --provider cuda 2>&1 | grep -v W:onnxruntime | tail -5; echo "rc=${PIPESTATUS[0]}"
python3 -m optkit verify /tmp/m/seed.onnx --reference /tmp/m/seed.reference.npz --provider cuda 2>&1 | grep -v W:onnxruntime | tail -5; echo "rc=${PIPESTATUS[0]}"
echo "=== verify --provider tensorrt (no TensorRT libraries here: optkit must refuse the CPU/CUDA fallback)"
python3 -m optkit verify /tmp/m/vr.onnx --reference /tmp/m/vr.reference.npz --provider tensorrt 2>&1 | tail -3; echo "rc=${PIPESTATUS[0]}"
echo "=== bench seed: ORT CPU (16 threads) vs ORT CUDA"
python3 -m optkit bench /tmp/m/seed.onnx --provider cpu,cuda --batch 1,8 --iterations 30 --warmup 5 --threads 16 --json "$OUT_DIR/bench_ort_cuda.json" 2>&1 | grep -v "^loading" | tail -14
echo "=== pytest -m gpu"
timeout 240 python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu_device.py 2>&1 | tail -15
} 2>&1 | tee "$OUT_DIR/gpu_ort_cuda.log"
