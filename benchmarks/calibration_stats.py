"""Calibration statistics for every range method vs plain fp32 inference over the same samples.

On ``voice-resnet-seed`` (the production-size model) with 256 samples of calibration_data/calib:

- plain: ONNX Runtime fp32 (the pre-processed model, batch 1, one run per sample);
- stats: :class:`optkit.quantization.calib_stats.StatsCollector` (one session over the augmented model), then
  the ranges of all four methods (minmax, percentile, entropy, mse) from those statistics.

Both run interleaved in blocks of ``--block`` samples (plain block, stats block, ...) in one
process, so machine load hits both alike; the statistics of the blocks are merged (the same
code a sharded calibration uses) and checked against a one-pass collection when ``--check``.
Peak RSS is this process's VmHWM: both sessions are alive at once, so it is an upper bound for
``optkit quantize`` (which holds only the statistics session).

    python benchmarks/calibration_stats.py                      # 256 samples
    python benchmarks/calibration_stats.py --samples 8 --block 4  # quick check

Targets: statistics for all methods <= 2x plain inference time; peak RSS <= 2 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT / "calibration_data" / "calib"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "calibration_stats" / "calibration_stats.json"
CACHE = ROOT / "benchmarks" / "cache" / "voice-resnet-seed"


def _vm(field: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return None


def prepare(cache: Path) -> Path:
    """The seed model, exported and pre-processed as `optkit quantize` does (cached)."""
    from optkit.passes import get_pass
    from optkit.passes.quantize_int8 import preprocess

    cache.mkdir(parents=True, exist_ok=True)
    fp32, pre = cache / "fp32.onnx", cache / "preprocessed.onnx"
    if not fp32.exists():
        step = get_pass("export")
        step.run(None, step.make_config({"model": "voice-resnet-seed", "reference_samples": 2, "opset": 17}), fp32)
    if not pre.exists():
        preprocess(fp32, pre)
    return pre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--block", type=int, default=32, help="samples per interleaved block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--check", action="store_true", help="also collect in one pass and compare (slower)")
    ap.add_argument("--compare-ort", type=int, default=0, metavar="N",
                    help="instead: on the first N samples, ONNX Runtime's entropy calibrator (what optkit used "
                         "before, chunks of 2) vs these statistics + all four methods' ranges, alternated")
    ap.add_argument("--stats-only", action="store_true",
                    help="instead: only the statistics + ranges (no plain session), for the peak RSS of what "
                         "`optkit quantize` holds")
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort

    from optkit.quantization import calib_stats
    from optkit.data.samples import random_samples
    from optkit.data.source import load_samples
    from optkit.runtime.sysinfo import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu.model}; int8: {cpu.int8_acceleration()}; load average {os.getloadavg()}", flush=True)
    pre = prepare(CACHE)
    shape = (1, 40, 241)
    if Path(args.data).is_dir():
        x, data = load_samples(args.data, sample_shape=shape, limit=args.samples).x, os.path.relpath(args.data, ROOT)
    else:
        x, data = random_samples(args.samples, shape).x, "random (seed 0)"
    if args.compare_ort:
        compare_ort(pre, x[: args.compare_ort], args)
        return
    if args.stats_only:
        t = time.perf_counter()
        stats = calib_stats.collect_stats(pre, x, "input_mfcc", threads=args.threads, progress=False)
        for method in calib_stats.METHODS:
            stats.ranges(method)
        result = {"samples": len(x), "seconds": round(time.perf_counter() - t, 1),
                  "peak_rss_gib": round(_vm("VmHWM") or 0.0, 3), "load_average": os.getloadavg()}
        print(json.dumps(result))
        Path(args.out).with_name("calibration_stats_rss.json").write_text(json.dumps(result, indent=1) + "\n")
        return
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    plain = ort.InferenceSession(str(pre), so, providers=["CPUExecutionProvider"])
    name = plain.get_inputs()[0].name
    t0 = time.perf_counter()
    collector = calib_stats.StatsCollector(pre, name, threads=args.threads)
    setup_s = time.perf_counter() - t0
    plain.run(None, {name: x[:1]})  # warm-up (first-run allocations), both sessions
    plain_s = stats_s = 0.0
    merged = None
    merge_s = 0.0
    for start in range(0, len(x), args.block):
        block = x[start : start + args.block]
        t = time.perf_counter()
        for i in range(len(block)):
            plain.run(None, {name: block[i : i + 1]})
        plain_s += time.perf_counter() - t
        t = time.perf_counter()
        collector.update(block)
        stats_s += time.perf_counter() - t
        t = time.perf_counter()
        part = collector.take()
        merged = part if merged is None else merged.merge(part)  # what a sharded run's driver does
        merge_s += time.perf_counter() - t
        print(f"  {start + len(block)}/{len(x)} samples: plain {plain_s:.1f} s, statistics {stats_s:.1f} s",
              flush=True)
    t = time.perf_counter()
    ranges_s = {}
    for method in calib_stats.METHODS:
        tm = time.perf_counter()
        merged.ranges(method)
        ranges_s[method] = round(time.perf_counter() - tm, 3)
    post_s = time.perf_counter() - t + merge_s
    total = stats_s + post_s
    result = {
        "model": "voice-resnet-seed", "samples": int(len(x)), "data": data, "block": args.block,
        "threads": args.threads, "tensors": len(merged.names),
        "elements_per_sample": int(merged.counts.sum() // max(1, merged.samples)),
        "plain_fp32_seconds": round(plain_s, 2), "statistics_seconds": round(stats_s, 2),
        "merge_and_ranges_seconds": round(post_s, 2), "ranges_seconds": ranges_s,
        "collector_setup_seconds": round(setup_s, 2),
        "ratio_all_methods_vs_plain": round(total / plain_s, 3),
        "peak_rss_gib": round(_vm("VmHWM") or 0.0, 3),
        "cpu": cpu_info().to_json(), "python": platform.python_version(), "onnxruntime": ort.__version__,
        "load_average": os.getloadavg(),
    }
    if args.check:
        one = calib_stats.collect_stats(pre, x, name, threads=args.threads)
        result["merged_equals_one_pass"] = bool(one.same_as(merged))
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"statistics for all methods: {total:.1f} s = {total / plain_s:.2f}x plain fp32 inference "
          f"({plain_s:.1f} s) over the same {len(x)} samples; peak RSS {result['peak_rss_gib']:.2f} GiB")


def compare_ort(pre: Path, x, args: argparse.Namespace) -> None:
    """ORT's entropy calibrator vs optkit's statistics (+ every method's ranges), same samples,
    alternated twice so load changes hit both."""
    import tempfile

    from optkit.quantization import calib_stats
    from optkit.quantization import calibration

    times: dict[str, list[float]] = {"ort_entropy": [], "optkit_all_methods": []}
    for _ in range(2):
        with tempfile.TemporaryDirectory() as work:
            t = time.perf_counter()
            calibration.calibrate(pre, x, "input_mfcc", method="entropy", chunk_size=2, work_dir=work, progress=False)
            times["ort_entropy"].append(time.perf_counter() - t)
        t = time.perf_counter()
        stats = calib_stats.collect_stats(pre, x, "input_mfcc", threads=args.threads, progress=False)
        for method in calib_stats.METHODS:
            stats.ranges(method)
        times["optkit_all_methods"].append(time.perf_counter() - t)
        print({k: [round(v, 1) for v in vs] for k, vs in times.items()}, flush=True)
    best = {k: min(v) for k, v in times.items()}
    result = {"samples": len(x), "seconds": times, "speedup_min": round(best["ort_entropy"] / best["optkit_all_methods"], 2),
              "load_average": os.getloadavg()}
    print(json.dumps(result, indent=1))
    out = Path(args.out).with_name("calibration_vs_ort.json")
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
