"""The standard protocols and the model repository under load, on loopback.

1. Overhead: one `optkit serve ARTIFACT` of the bundled int8 model (ORT CPU), loaded at a fixed
   concurrency by an aiohttp client, in interleaved rounds per route: POST /verify (.npy body, and
   the same numbers as a JSON body), V2 infer with JSON tensors, V2 infer with the binary tensor extension, TF Serving predict
   ("instances"). Saturation QPS and p50/p99 per route, side by side.
2. Switch: `optkit serve --model-repository` with version 1 of the same model, loaded at the same
   concurrency over V2 binary while version 2 is copied in (a temp directory renamed into place):
   the time until answers come from version 2, errors, non-200 answers, p99 during the switch.

    python benchmarks/serve_protocols.py --out benchmarks/results/serve_protocols/serve_protocols.json
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

import latency as prep  # noqa: E402  (artifact preparation shared with the latency benchmark)
from optkit.common.fileio import write_json_atomically  # noqa: E402
from optkit.runtime import sysinfo  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bodies(x: np.ndarray, name: str) -> dict[str, tuple[str, bytes, dict[str, str]]]:
    buf = io.BytesIO()
    np.save(buf, x)
    v2_json = json.dumps({"inputs": [{"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32",
                                      "data": x.ravel().tolist()}]}).encode()
    head = json.dumps({"inputs": [{"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "output_wvp", "parameters": {"binary_data": True}}]}).encode()
    return {
        "verify_npy": ("/verify", buf.getvalue(), {"Content-Type": "application/x-npy"}),
        # the same numbers as JSON on optkit's own route: what the JSON protocol bodies compare with
        "verify_json": ("/verify", json.dumps({"mfcc": x.tolist()}).encode(), {"Content-Type": "application/json"}),
        "v2_json": (f"/v2/models/{name}/infer", v2_json, {"Content-Type": "application/json"}),
        "v2_binary": (f"/v2/models/{name}/infer", head + x.tobytes(),
                      {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}),
        "tf_instances": (f"/v1/models/{name}:predict", json.dumps({"instances": x.tolist()}).encode(),
                         {"Content-Type": "application/json"}),
    }


async def closed_loop(url: str, path: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float,
                      on_answer: Any = None) -> dict[str, Any]:
    import aiohttp

    lat: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(session: Any) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                async with session.post(url + path, data=body, headers=headers) as r:
                    data = await r.read()
                    statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
                    if on_answer is not None:
                        on_answer(t0, time.perf_counter(), r, data)
            except Exception:  # noqa: BLE001 - counted, never hidden
                errors += 1
                continue
            lat.append((time.perf_counter() - t0) * 1e3)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), trust_env=False) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    took = time.perf_counter() - t0
    a = np.array(lat) if lat else np.array([np.nan])
    return {"qps": statuses.get("200", 0) / took, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99)), "statuses": statuses, "errors": errors}


def overhead(artifact: Path, rounds: int, seconds: float, concurrency: int) -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal((1, 1, 40, 241)).astype(np.float32)
    routes = bodies(x, artifact.stem)
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in routes}
    with ServerProcess(artifact, provider="cpu", extra_args=["--no-audio", "--threads", "2"]) as srv:
        for k, (path, body, headers) in routes.items():  # warm-up
            asyncio.run(closed_loop(srv.url, path, body, headers, concurrency, 1.0))
        for r in range(rounds):
            for k, (path, body, headers) in (list(routes.items()) if r % 2 == 0 else list(routes.items())[::-1]):
                res = asyncio.run(closed_loop(srv.url, path, body, headers, concurrency, seconds))
                out[k].append(res)
                log(f"round {r}: {k}: {res['qps']:.0f} QPS, p50 {res['p50_ms']:.2f} ms, statuses {res['statuses']}")
    summary = {k: {"qps_median": float(np.median([r["qps"] for r in v])),
                   "p50_ms_median": float(np.median([r["p50_ms"] for r in v]))} for k, v in out.items()}
    base = summary["verify_npy"]["qps_median"]
    base_json = summary["verify_json"]["qps_median"]
    for k, s in summary.items():
        s["qps_vs_verify"] = s["qps_median"] / base
        # the body form's own /verify: JSON routes against /verify with JSON, binary ones against .npy
        s["qps_vs_verify_same_body"] = s["qps_median"] / (base_json if k in ("v2_json", "tf_instances",
                                                                              "verify_json") else base)
        s["per_request_ms"] = 2e3 / s["qps_median"]  # core-ms per request on 2 cores (server + client)
    return {"rounds": out, "summary": summary}


def switch(artifact: Path, work: Path, seconds: float, concurrency: int) -> dict[str, Any]:
    root = work / "repo"
    shutil.rmtree(root, ignore_errors=True)
    for v in (1, 2):
        d = root / "voice" / (str(v) if v == 1 else ".staging")
        d.mkdir(parents=True)
        shutil.copy(artifact, d / artifact.name)
        (d / "report.json").write_text(json.dumps({"artifacts": [{
            "path": artifact.name, "sha256": __import__("optkit.model.artifact", fromlist=["x"]).artifact_identity(
                artifact)["sha256"], "runner": {"runner": "onnxruntime[cpu]"}, "passed": True}]}))
    x = np.random.default_rng(0).standard_normal((1, 1, 40, 241)).astype(np.float32)
    path, body, headers = bodies(x, "voice")["v2_binary"]
    seen: list[tuple[float, float, int, str]] = []

    def on_answer(t0: float, t1: float, r: Any, data: bytes) -> None:
        version = ""
        if r.status == 200:
            n = int(r.headers.get("Inference-Header-Content-Length", len(data)))
            version = json.loads(data[:n])["model_version"]
        seen.append((t0, t1, r.status, version))

    args = ["--model-repository", str(root), "--no-audio", "--threads", "2", "--poll-interval", "0.5"]
    with ServerProcess(None, extra_args=args) as srv:
        async def run() -> dict[str, Any]:
            task = asyncio.create_task(closed_loop(srv.url, path, body, headers, concurrency, seconds, on_answer))
            await asyncio.sleep(seconds / 3)
            copied = time.perf_counter()
            (root / "voice" / ".staging").rename(root / "voice" / "2")
            res = await task
            return {**res, "copied": copied}
        res = asyncio.run(run())
        log_text = srv.log_text()
    copied = res.pop("copied")
    first_v2 = min((t1 for t0, t1, st, v in seen if v == "2"), default=None)
    window = [(t1 - t0) * 1e3 for t0, t1, st, v in seen if copied - 1 <= t0 <= (first_v2 or copied) + 1]
    return {"load": res, "served_new_version_after_s": None if first_v2 is None else first_v2 - copied,
            "answers": len(seen), "non_200": sum(1 for s in seen if s[2] != 200),
            "p99_ms_during_switch": float(np.percentile(window, 99)) if window else None,
            "switch_window_requests": len(window),
            "log": [ln for ln in log_text.splitlines() if "model repository" in ln]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "serve_protocols" / "serve_protocols.json"))
    p.add_argument("--work-dir", default=str(HERE / "cache"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--switch-seconds", type=float, default=12.0)
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    calib, _ = prep.calibration_source(None, 64)
    prep.prepare("voice-resnet", work, calib, 64)
    artifact = work / "voice-resnet" / "int8_cpu.onnx"
    model = work / "model.int8.onnx"
    shutil.copy(artifact, model)
    log("overhead, interleaved rounds")
    result = {"machine": sysinfo.collect(),
              "artifact": "voice-resnet int8 (ORT cpu form)", "concurrency": args.concurrency,
              "overhead": overhead(model, args.rounds, args.seconds, args.concurrency)}
    log("switch")
    result["switch"] = switch(model, work, args.switch_seconds, args.concurrency)
    log(json.dumps({"overhead": result["overhead"]["summary"],
                    "switch": {k: v for k, v in result["switch"].items() if k != "log"}}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
