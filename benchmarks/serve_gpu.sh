#!/usr/bin/env bash
# `optkit serve` on ONNX Runtime's CUDA execution provider, under load, on a lent GPU machine that
# has CUDA PyTorch but neither onnxruntime-gpu nor the serve extra, and no package index.
#
# Before it runs there, the wheels must be on that machine (cp312, manylinux x86-64):
#   /tmp/ck/p*      onnxruntime-gpu 1.31.1 in pieces (the wheel, 256 MB, is larger than what one
#                   call may carry; the pieces are copied into /tmp/ck over consecutive calls while
#                   the machine stays warm), reassembled here;
#   .gpu/whl/*.whl  fastapi, starlette, pydantic(-core), annotated-types, typing-inspection,
#                   typing-extensions, uvicorn, httptools, python-multipart, opentelemetry-api,
#                   importlib-metadata, onnxconverter-common (the fp16 pass).
# Then, from the repo root:  bash benchmarks/serve_gpu.sh [serve_load.py arguments, e.g. --model voice-resnet-seed]
# Writes $OUT/serve_load_gpu.{json,md} (the device tool returns $OUT), else ./gpu_check_out/.
set -u
OUT_DIR="${OUT:-./gpu_check_out}"; mkdir -p "$OUT_DIR"
WHEEL=/tmp/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ck/p* > "$WHEEL" && ls -la "$WHEEL" && sha256sum "$WHEEL"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEEL" .gpu/whl/*.whl \
  || { echo "pip install failed"; exit 1; }
export PYTHONPATH="/tmp/site:." PYTHONUNBUFFERED=1
{
echo "=== machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -c "import onnxruntime as o, torch, fastapi, uvicorn; print('onnxruntime', o.__version__, o.get_available_providers()); print('torch', torch.__version__, torch.cuda.is_available()); print('fastapi', fastapi.__version__, 'uvicorn', uvicorn.__version__)"
echo "=== serve_load --gpu"
timeout 480 python3 benchmarks/serve_load.py --gpu --work-dir /tmp/sgw --out "$OUT_DIR/serve_load_gpu.json" "$@"
echo "rc=$?"
} 2>&1 | tee "$OUT_DIR/serve_gpu.log"
