"""The default int8 command on the bundled model, in one process vs with its trials on Ray.

    python benchmarks/ray_int8_search.py [--workers 2] [--out benchmarks/results/ray_int8_search/ray_int8_search.json]

The default recipe's fold model of the bundled voice model (cached in
benchmarks/cache/int8_search/, made as benchmarks/int8_search.py makes it) is quantised with the
default settings (search on, budget 8, calibration_data/calib, statistics recomputed), once in
one process and once with a local Ray instance of ``--workers`` CPUs (calibration statistics in
shards, trials as Ray tasks), each in its own subprocess, one after the other. Reported per run:
the pass's wall time, its calibration and search parts, Ray's start-up (separately), and whether
the two runs kept the same trials (timings excluded), chose the same trial and wrote the same
model bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache" / "int8_search"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "ray_int8_search" / "ray_int8_search.json"


def fold_model() -> Path:
    """The default recipe's chain (export -> simplify -> fold), cached."""
    fold = CACHE / "fold.onnx"
    if fold.exists():
        return fold
    CACHE.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for args in (["export", "voice-resnet", "-o", CACHE / "export.onnx", "--reference-data", "calibration_data/val.npz"],
                 ["simplify", CACHE / "export.onnx", "-o", CACHE / "simplify.onnx"],
                 ["fold", CACHE / "simplify.onnx", "-o", fold]):
        subprocess.run([sys.executable, "-m", "optkit", *map(str, args)], cwd=ROOT, env=env, check=True)
    return fold


def one(mode: str, workers: int, out_dir: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    import contextlib

    from optkit.model.artifact import Artifact
    from optkit.pipeline.distributed import RayExecutor, ray_session
    from optkit.quantization.executor import calibration_on
    from optkit.passes import get_pass
    from optkit.passes.quantize_int8 import QuantizeInt8Config

    out = out_dir / "found.int8.onnx"
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = QuantizeInt8Config(calibration=str(ROOT / "calibration_data" / "calib"), recalibrate=True)
    src = Artifact.from_file(fold_model(), kind="onnx")
    startup = 0.0
    with contextlib.ExitStack() as stack:
        executor = None
        if mode == "ray":
            t0 = time.perf_counter()
            ray = stack.enter_context(ray_session("local", num_cpus=workers))
            executor = RayExecutor(ray, workers=workers, echo=lambda s: print(s, flush=True))
            startup = time.perf_counter() - t0
        stack.enter_context(calibration_on(executor))
        t0 = time.perf_counter()
        result = get_pass("quantize-int8")(src, cfg, out)
        seconds = time.perf_counter() - t0
    info = result.info
    return {"mode": mode, "workers": workers if mode == "ray" else None,
            "pass_s": round(seconds, 2), "ray_startup_s": round(startup, 2),
            "calibration_s": info["calibration_seconds"], "search_s": info["search_seconds"],
            "trial_seconds": [t["seconds"] for t in info["int8_search"]["trials"]],
            "trials": [{k: v for k, v in t.items() if k != "seconds"} for t in info["int8_search"]["trials"]],
            "chosen": info["int8_search"]["chosen"], "notes": info["int8_search"]["notes"],
            "model_sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--one", choices=("local", "ray"), help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    run = CACHE / "ray_search"
    if args.one:
        Path(args.result).write_text(json.dumps(one(args.one, args.workers, run / args.one)))
        return
    sys.path.insert(0, str(ROOT))
    from optkit.runtime.sysinfo import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu.model}; int8: {cpu.int8_acceleration()}; load average {os.getloadavg()}", flush=True)
    fold_model()
    runs = []
    for mode in ("local", "ray"):
        res = run / f"{mode}.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--one", mode, "--workers", str(args.workers), "--result", str(res)],
                       cwd=ROOT, env=env, check=True)
        r = json.loads(res.read_text())
        r["process_s"] = round(time.perf_counter() - t0, 2)
        print(json.dumps({k: r[k] for k in ("mode", "pass_s", "ray_startup_s", "calibration_s", "search_s",
                                             "trial_seconds", "chosen", "notes", "process_s")}), flush=True)
        runs.append(r)
    local, ray = runs
    result = {
        "model": "voice-resnet (bundled), default recipe's fold model; default int8 settings",
        "runs": runs,
        "same_trials": local["trials"] == ray["trials"], "same_chosen": local["chosen"] == ray["chosen"],
        "same_model_bytes": local["model_sha256"] == ray["model_sha256"],
        "ratio_pass": round(ray["pass_s"] / local["pass_s"], 3),
        "ratio_search": round(ray["search_s"] / local["search_s"], 3),
        "cpu": cpu.to_json(), "load_average_end": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("same_trials", "same_chosen", "same_model_bytes", "ratio_pass",
                                             "ratio_search", "load_average_end")}, indent=1))


if __name__ == "__main__":
    main()
