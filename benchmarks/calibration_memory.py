"""Calibration time and peak memory per method (minmax, entropy, percentile).

Exports ``voice-resnet-seed`` (the production-size model) once, then calibrates it with each
method in its own subprocess, so each peak RSS (the child's VmHWM from /proc, falling back to
``getrusage``) belongs to one method alone. Results go to
``benchmarks/results/calibration_memory/calibration_memory.json``.

    python benchmarks/calibration_memory.py                  # 256 samples, ~20 min on 2 cores
    python benchmarks/calibration_memory.py --samples 4      # quick check

Calibration data: ``calibration_data/calib`` when it exists; otherwise seeded random samples
(noted in the results; memory and time do not depend on the values, ranges do).
Target: peak RSS <= 4 GiB for every method with 256 samples.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT / "calibration_data" / "calib"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration_memory" / "calibration_memory.json"
METHODS = ("minmax", "entropy", "percentile")
TARGET_GIB = 4.0


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def export_seed_model(path: Path) -> str:
    """The seed model as ONNX: via optkit's export pass if present, else torch.onnx.export."""
    if path.exists():
        return "cached"
    try:
        from optkit.passes import get_pass

        step = get_pass("export")
        cfg = step.make_config({"model": "voice-resnet-seed", "reference_samples": 2, "opset": 17})
        step.run(None, cfg, path)
        return "optkit export pass"
    except ModuleNotFoundError:
        import torch

        from optkit import zoo

        model = zoo.build("voice-resnet-seed")
        torch.onnx.export(model, (torch.randn(1, 1, 40, 241),), str(path), input_names=["input_mfcc"],
                          output_names=["output_wvp"], dynamic_axes={"input_mfcc": {0: "batch"}},
                          opset_version=17, dynamo=False)
        return "torch.onnx.export(dynamo=False)"


def child(args: argparse.Namespace) -> None:
    """One method: pre-process + calibrate; prints one JSON line."""
    import numpy as np

    from optkit.quantization import calibration
    from optkit.data.samples import random_samples
    from optkit.data.source import load_samples
    from optkit.passes.quantize_int8 import preprocess

    shape = (1, 40, 241)
    if args.data and Path(args.data).is_dir():
        samples = load_samples(args.data, sample_shape=shape, limit=args.samples).x
    else:
        samples = random_samples(args.samples, shape, seed=0).x
    with tempfile.TemporaryDirectory(prefix="calib-bench-") as work:
        pre = Path(work) / "pre.onnx"
        t0 = time.perf_counter()
        preprocess(Path(args.model), pre)
        t_pre = time.perf_counter() - t0
        rss_before = _proc_status_kib("VmRSS")
        t0 = time.perf_counter()
        ranges = calibration.calibrate(pre, np.ascontiguousarray(samples), "input_mfcc", method=args.child,
                                       chunk_size=args.chunk_size, work_dir=work, progress=False)
        t_cal = time.perf_counter() - t0
    hwm = _proc_status_kib("VmHWM")
    if hwm is None:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "method": args.child, "samples": int(len(samples)), "chunk_size": args.chunk_size,
        "tensors": len(ranges.data), "preprocess_s": round(t_pre, 2), "calibration_s": round(t_cal, 2),
        "s_per_sample": round(t_cal / len(samples), 3), "rss_before_calibration_mib": round((rss_before or 0) / 1024, 1),
        "peak_rss_mib": round(hwm / 1024, 1),
    }))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--work", default=None, help="directory for the exported model (kept between runs)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0

    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "optkit-bench"
    work.mkdir(parents=True, exist_ok=True)
    model = work / "voice-resnet-seed.onnx"
    t0 = time.perf_counter()
    how = export_seed_model(model)
    print(f"model: {model} ({how}, {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    data_path = Path(args.data).resolve()
    # results carry no machine-specific paths: name the data relative to the repository
    data_note = str(data_path.relative_to(ROOT)) if data_path.is_relative_to(ROOT) else str(args.data)
    if not Path(args.data).is_dir():
        data_note = f"seeded random samples ({args.data} not found)"
        print(f"note: {data_note}", file=sys.stderr)

    results = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cmd = [sys.executable, __file__, "--child", method, "--model", str(model), "--samples", str(args.samples),
               "--chunk-size", str(args.chunk_size), "--data", args.data]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            results.append({"method": method, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"})
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["wall_s"] = round(wall, 1)
        row["within_target"] = row["peak_rss_mib"] <= TARGET_GIB * 1024
        results.append(row)
        print(f"{method:>10}: {row['calibration_s']:.1f} s ({row['s_per_sample']:.2f} s/sample), "
              f"peak RSS {row['peak_rss_mib'] / 1024:.2f} GiB", file=sys.stderr)

    import onnxruntime

    payload = {
        "benchmark": "calibration_memory",
        "model": "voice-resnet-seed",
        "data": data_note,
        "samples": args.samples,
        "chunk_size": args.chunk_size,
        "target_peak_rss_gib": TARGET_GIB,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from optkit.common.fileio import write_json_atomically

    write_json_atomically(out, payload)
    print(f"wrote {out}", file=sys.stderr)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
