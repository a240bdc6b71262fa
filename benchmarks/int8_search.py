"""The default int8 command on the bundled model: time, gates on ORT and OpenVINO, MACs, speed.

Steps (every one an optkit command, as a user runs it; artifacts in benchmarks/cache/int8_search/):

1. ``optkit export voice-resnet --reference-data calibration_data/val.npz`` then simplify + fold
   (the default recipe's chain; cached);
2. the default command, timed end to end from a clean output folder (no statistics cache, no
   saved search): ``optkit quantize fold.onnx -o found.int8.onnx --int8 --calibration
   calibration_data/calib``;
3. plain int8 for comparison: the same with ``--no-search`` (minmax, nothing excluded). It fails
   the gate, so it is written as ``plain.int8.failed.onnx`` (exit 3, expected);
4. ``optkit verify`` of both on the labelled validation reference, on ORT (cpu) and OpenVINO;
5. ``optkit bench fold.onnx plain.int8.failed.onnx found.int8.onnx`` on ORT CPU, interleaved:
   the found model's speed-up over fp32 as a share of plain int8's.

    python benchmarks/int8_search.py [--iterations 200]

Targets: the default command <= 2 min on 2 cores; it passes every default gate on ORT and on
OpenVINO with >= 95 % of the MACs in int8; the found model keeps >= 90 % of plain int8's
speed-up over fp32 on ORT.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache" / "int8_search"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "int8_search" / "int8_search.json"


def optkit(*args: object, check: bool = True, ok: tuple[int, ...] = (0,)) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "optkit", *[str(a) for a in args]]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    out = res.stdout + res.stderr
    print(f"$ optkit {' '.join(str(a) for a in args)}  ({seconds:.1f} s, exit {res.returncode})", flush=True)
    print("  " + out.strip().replace("\n", "\n  "), flush=True)
    if check and res.returncode not in ok:
        raise SystemExit(f"optkit {args[0]} exited {res.returncode}")
    return res.returncode, out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from optkit.runtime.sysinfo import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu.model}; int8: {cpu.int8_acceleration()}; load average {os.getloadavg()}", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    fp32 = CACHE / "export.onnx"
    ref = CACHE / "export.reference.npz"
    if not (fp32.exists() and ref.exists()):
        optkit("export", "voice-resnet", "-o", fp32, "--reference-data", "calibration_data/val.npz")
    if not (CACHE / "fold.onnx").exists():
        optkit("simplify", fp32, "-o", CACHE / "simplify.onnx")
        optkit("fold", CACHE / "simplify.onnx", "-o", CACHE / "fold.onnx")
    fold = CACHE / "fold.onnx"

    run = CACHE / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir()
    found, plain = run / "found.int8.onnx", run / "plain.int8.onnx"
    _, found_out, found_s = optkit("quantize", fold, "-o", found, "--int8", "--calibration", "calibration_data/calib")
    code, _, plain_s = optkit("quantize", fold, "-o", plain, "--int8", "--calibration", "calibration_data/calib",
                              "--no-search", ok=(0, 3))
    plain_model = plain if code == 0 else run / "plain.int8.failed.onnx"
    settings = json.loads((run / "found.int8.search.json").read_text())

    verdicts = {}
    for label, model in (("found", found), ("plain", plain_model)):
        for provider in ("cpu", "openvino"):
            rd = run / f"verify_{label}_{provider}"
            code, text, _ = optkit("verify", model, "--reference", ref, "--provider", provider, "--fp32-model", fold,
                                   "--localize", "never", "--report-dir", rd, check=False)
            rep = json.loads((rd / "report.json").read_text())["artifacts"][0]
            m = rep["outputs"]["output_wvp"]
            verdicts[f"{label}/{provider}"] = {
                "exit": code, "passed": rep["passed"], "agreement": m["agreement"], "mean_abs": m["mean_abs"],
                "accuracy_drop": rep["accuracy_drop"], "failures": rep["failures"],
            }

    bench_json = run / "bench.json"
    optkit("bench", fold, plain_model, found, "--provider", "cpu", "--threads", "2", "--iterations", args.iterations,
           "--warmup", "10", "--idle-ms", "20", "--json", bench_json)
    bench = json.loads(bench_json.read_text())
    lat: dict[str, dict[str, float]] = {}
    for r in bench["results"]:  # labels name the artifact file (and the runtime)
        for model in (fold, plain_model, found):
            if model.name in r["artifact"]:
                lat[model.name] = {"min": r["latency_ms"]["min_ms"], "p50": r["latency_ms"]["p50_ms"]}
    keep = {}
    f, p, q = lat.get(fold.name), lat.get(plain_model.name), lat.get(found.name)
    if f and p and q:
        for stat in ("min", "p50"):
            plain_speedup, found_speedup = f[stat] / p[stat], f[stat] / q[stat]
            keep[stat] = {"plain_int8_speedup": round(plain_speedup, 3), "found_speedup": round(found_speedup, 3),
                          "share_kept": round(found_speedup / plain_speedup, 3)}
    result = {
        "default_command_seconds": round(found_s, 1), "plain_command_seconds": round(plain_s, 1),
        "chosen": settings["chosen"], "trials": settings["trials"], "validation": settings["validation"],
        "int8_mac_share": settings["trials"][settings["chosen"]["trial"]]["int8_mac_share"],
        "verify": verdicts, "latency_ms": lat, "speedup_kept": keep,
        "cpu": cpu.to_json(), "load_average_end": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("default_command_seconds", "int8_mac_share", "verify", "speedup_kept")},
                     indent=1))
    del found_out


if __name__ == "__main__":
    main()
