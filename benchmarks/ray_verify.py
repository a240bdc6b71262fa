"""Overhead of sharded verification on Ray against one process, on one machine.

    python benchmarks/ray_verify.py --samples 10000 --out benchmarks/results/ray_verify.json

The bundled model (voice-resnet) is exported once into --work with its PyTorch reference on
calibration_data/val.npz; a reference of --samples samples is made by repeating it (inputs and
PyTorch outputs together, so it is still a true reference). Each configuration runs in its own
subprocess so its driver's peak RSS (VmHWM) is its own; configurations are interleaved
(local, ray, ray, local) so a noisy machine hits both alike. Reported: wall time of
verify_artifacts (Ray start-up measured separately), the ratio ray/local, driver peak RSS, and
whether the two reports are identical (timings excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_reference(work: Path, samples: int) -> Path:
    import numpy as np

    from optkit.reference import Reference, load_reference, reference_path_for, save_reference

    model = work / "voice-resnet.onnx"
    if not model.exists():
        subprocess.run([sys.executable, "-m", "optkit", "export", "voice-resnet", "-o", str(model),
                        "--reference-data", str(ROOT / "calibration_data" / "val.npz")], check=True)
    big = work / f"ref{samples}.npz"
    if not big.exists():
        ref = load_reference(reference_path_for(model))
        reps = -(-samples // len(ref))
        tile = lambda a: np.concatenate([a] * reps)[:samples]  # noqa: E731
        save_reference(big, Reference({k: tile(v) for k, v in ref.inputs.items()},
                                      {k: tile(v) for k, v in ref.outputs.items()},
                                      None if ref.labels is None else tile(ref.labels), ref.meta))
    return big


def one(mode: str, work: Path, samples: int, workers: int, shards: int, report: Path) -> dict:
    from optkit.distributed import RayExecutor, ray_session
    from optkit.reference import load_reference
    from optkit.verify import verify_artifacts

    ref = load_reference(make_reference(work, samples))
    model = work / "voice-resnet.onnx"
    if mode == "local":
        t0 = time.perf_counter()
        rep = verify_artifacts([model], ref, batch_size=32)
        seconds, startup = time.perf_counter() - t0, 0.0
    else:
        t0 = time.perf_counter()
        with ray_session("local", num_cpus=workers) as ray:
            startup = time.perf_counter() - t0
            ex = RayExecutor(ray, workers=workers, shards=shards)
            t1 = time.perf_counter()
            rep = verify_artifacts([model], ref, batch_size=32, executor=ex)
            seconds = time.perf_counter() - t1
    report.write_text(json.dumps(rep.to_json()))
    return {"mode": mode, "samples": samples, "verify_s": round(seconds, 2), "ray_startup_s": round(startup, 2),
            "driver_peak_rss_mib": round(peak_rss_mib(), 1)}


def comparable(path: Path) -> dict:
    r = json.loads(path.read_text())
    r.pop("created"), r.pop("execution")
    for a in r["artifacts"]:
        a.pop("seconds"), a["runner"].pop("threads", None)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--shards", type=int, default=None, help="default: 4 per worker")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "cache" / "ray-verify")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--one", choices=["local", "ray"], help=argparse.SUPPRESS)
    ap.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    shards = args.shards or 4 * args.workers
    if args.one:
        print(json.dumps(one(args.one, args.work, args.samples, args.workers, shards, args.report)))
        return

    from optkit.sysinfo import cpu_info, usable_cpus

    make_reference(args.work, args.samples)
    runs = []
    for i, mode in enumerate(["local", "ray", "ray", "local"]):
        report = args.work / f"report-{i}-{mode}.json"
        res = subprocess.run([sys.executable, __file__, "--one", mode, "--samples", str(args.samples),
                              "--workers", str(args.workers), "--shards", str(shards), "--work", str(args.work),
                              "--report", str(report)], capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["report"] = str(report.resolve().relative_to(ROOT)) if report.resolve().is_relative_to(ROOT) else report.name
        runs.append(row)
        print(json.dumps(row), flush=True)
    local = min(r["verify_s"] for r in runs if r["mode"] == "local")
    ray = min(r["verify_s"] for r in runs if r["mode"] == "ray")
    same = len({json.dumps(comparable(args.work / Path(r["report"]).name), sort_keys=True) for r in runs}) == 1
    cpu = cpu_info()
    result = {
        "samples": args.samples, "workers": args.workers, "shards": shards,
        "cpu": {**cpu.to_json(), "int8": cpu.int8_acceleration(), "usable_cpus": usable_cpus()},
        "runs": runs, "local_min_s": local, "ray_min_s": ray, "ratio_ray_over_local": round(ray / local, 3),
        "reports_identical": same,
    }
    print(f"CPU: {cpu.model}, {usable_cpus()} usable cores, int8: {cpu.int8_acceleration()}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "cpu")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
