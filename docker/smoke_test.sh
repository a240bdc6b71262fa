#!/usr/bin/env bash
# Smoke-test a built optkit-voice image: start it on 127.0.0.1, wait for /ready (bounded), check the
# metadata, one /verify with a .npy body, the V2 and TF Serving routes (metadata, infer, predict, 404), the healthcheck and the non-root user, then remove it.
#   docker build -f docker/Dockerfile.cpu --build-arg MODEL_DIR=optkit-out --build-arg ARTIFACT=int8.int8.onnx -t optkit-voice:cpu .
#   bash docker/smoke_test.sh optkit-voice:cpu SAMPLE.npy
set -euo pipefail
image=${1:?usage: smoke_test.sh IMAGE SAMPLE.npy [PORT]}
sample=${2:?usage: smoke_test.sh IMAGE SAMPLE.npy [PORT]}
port=${3:-18080}
cid=$(docker run -d -p "127.0.0.1:${port}:8000" -e MODEL_VERSION=smoke-test "$image")
trap 'docker rm -f "$cid" >/dev/null' EXIT
start=$(date +%s)
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:${port}/ready" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:${port}/ready" >/dev/null || { docker logs "$cid" | tail -20; echo "FAIL: not ready" >&2; exit 1; }
echo "ready after $(( $(date +%s) - start )) s"
curl -sf "http://127.0.0.1:${port}/metadata" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["model_version"] == "smoke-test", d; print("metadata:", {k: d[k] for k in ("artifact", "sha256", "precision", "provider_in_use")})'
curl -sf -H 'Content-Type: application/x-npy' --data-binary "@${sample}" "http://127.0.0.1:${port}/verify" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert 0 <= d["probability"] <= 1, d; print("verify:", d)'
# the standard protocols: the bundled artifact is model "<file stem>", version 1
name=$(curl -sf "http://127.0.0.1:${port}/metadata" | python3 -c 'import json, sys, pathlib; print(pathlib.Path(json.load(sys.stdin)["artifact"]).stem)')
curl -sf "http://127.0.0.1:${port}/v2/health/ready" >/dev/null || { echo "FAIL: /v2/health/ready" >&2; exit 1; }
curl -sf "http://127.0.0.1:${port}/v2/models/${name}" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["versions"] == ["1"], d; print("v2 metadata:", d["inputs"])'
python3 -c 'import json, sys, numpy as np; x = np.load(sys.argv[1]).astype(np.float32).reshape(1, 1, 40, 241); print(json.dumps({"id": "smoke", "inputs": [{"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}))' "$sample" \
  | curl -sf -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:${port}/v2/models/${name}/infer" \
  | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["id"] == "smoke" and 0 <= d["outputs"][0]["data"][0] <= 1, d; print("v2 infer:", d["outputs"][0])'
python3 -c 'import json, sys, numpy as np; x = np.load(sys.argv[1]).astype(np.float32).reshape(1, 1, 40, 241); print(json.dumps({"instances": x.tolist()}))' "$sample" \
  | curl -sf -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:${port}/v1/models/${name}:predict" \
  | python3 -c 'import json, sys; d = json.load(sys.stdin); assert 0 <= d["predictions"][0][0] <= 1, d; print("tf predict:", d)'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "http://127.0.0.1:${port}/v2/models/no-such-model/infer")
[ "$code" = 404 ] || { echo "FAIL: unknown model gave $code" >&2; exit 1; }
uid=$(docker exec "$cid" id -u)
[ "$uid" != 0 ] || { echo "FAIL: runs as root" >&2; exit 1; }
echo "user id: $uid"
for _ in $(seq 1 60); do  # the first HEALTHCHECK runs after its 30 s interval
  status=$(docker inspect --format '{{.State.Health.Status}}' "$cid")
  [ "$status" = starting ] || break
  sleep 2
done
echo "health: $status"
[ "$status" = healthy ]
