"""Variable-length speech: voice-resnet exported with a dynamic time axis, measured per length.

1. fp32 max |diff| against PyTorch at lengths 100, 200, ..., 1000 frames (and 241): ``optkit export
   --dynamic-axis input_mfcc:3 --length-range 100:1000`` writes the model; 4 seeded random samples
   per length go through PyTorch and ONNX Runtime here. Target: <= 1e-4 at every length.
2. Latency per length: ONNX Runtime CPU, batch 1, 5 lengths run interleaved (round-robin, each
   round every length once) so machine load hits every length alike; the median per length, a
   least-squares line through the medians, and the largest deviation of a median from that line
   relative to it. Target: linear within 15 %. The slope is given in ms per second of audio
   (100 frames = 1 s).
3. Calibration statistics on a mixed-length set (``--utterances`` random utterances, lengths drawn
   uniformly from 100..600 frames): :class:`optkit.quantization.calib_stats.StatsCollector` over
   every length (no padding; one inference per sample, the time axis left dynamic) vs plain fp32
   inference over the same utterances, interleaved in blocks. Target: statistics <= 2x plain.

    python benchmarks/variable_length.py                     # 256 utterances
    python benchmarks/variable_length.py --utterances 32 --rounds 5   # quick
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "variable_length" / "variable_length.json"
DIFF_LENGTHS = (100, 200, 241, 300, 400, 500, 600, 700, 800, 900, 1000)
BENCH_LENGTHS = (100, 241, 500, 750, 1000)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def export(work: Path) -> Path:
    out = work / "voice_dyn.onnx"
    cmd = [sys.executable, "-m", "optkit", "export", "voice-resnet", "-o", str(out), "--reference-samples", "8",
           "--dynamic-axis", "input_mfcc:3", "--length-range", "100:1000", "--check-lengths", "100,241,500,1000"]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print("$ optkit export voice-resnet -o voice_dyn.onnx --dynamic-axis input_mfcc:3 --length-range 100:1000 "
          "--check-lengths 100,241,500,1000\n" + res.stdout + res.stderr)
    if res.returncode:
        raise SystemExit(res.returncode)
    return out


def diffs(path: Path, threads: int) -> dict[str, float]:
    import torch

    from optkit.model.modelspec import load_model

    model = load_model("voice-resnet", None)
    sess = _session(path, threads)
    out = {}
    for i, n in enumerate(DIFF_LENGTHS):
        x = np.random.default_rng(100 + i).standard_normal((4, 1, 40, n)).astype(np.float32)
        with torch.inference_mode():
            want = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"input_mfcc": x})[0]
        out[str(n)] = float(np.abs(got - want).max())
    return out


def latency(path: Path, threads: int, rounds: int, reps: int) -> dict:
    sess = _session(path, threads)
    feeds = {n: {"input_mfcc": np.random.default_rng(n).standard_normal((1, 1, 40, n)).astype(np.float32)}
             for n in BENCH_LENGTHS}
    for feed in feeds.values():  # warm-up
        sess.run(None, feed)
    times: dict[int, list[float]] = {n: [] for n in BENCH_LENGTHS}
    for _ in range(rounds):
        for n, feed in feeds.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                sess.run(None, feed)
            times[n].append((time.perf_counter() - t0) / reps * 1e3)
    med = {n: float(np.median(v)) for n, v in times.items()}
    xs = np.array(BENCH_LENGTHS, float)
    ys = np.array([med[n] for n in BENCH_LENGTHS])
    slope, intercept = np.polyfit(xs, ys, 1)
    fit = slope * xs + intercept
    dev = np.abs(ys - fit) / fit
    return {"median_ms": {str(n): round(med[n], 3) for n in BENCH_LENGTHS},
            "throughput_per_s": {str(n): round(1e3 / med[n], 1) for n in BENCH_LENGTHS},
            "fit_ms": {str(n): round(float(f), 3) for n, f in zip(BENCH_LENGTHS, fit)},
            "slope_ms_per_s_audio": round(float(slope) * 100, 3), "intercept_ms": round(float(intercept), 3),
            "max_deviation_from_line": round(float(dev.max()), 4), "rounds": rounds, "reps": reps}


def calibration(path: Path, threads: int, n: int, block: int) -> dict:
    import onnx

    from optkit.quantization.calib_stats import StatsCollector

    # the int8 pass calibrates its pre-processed model; shape inference is what gives the statistics
    # their tensors (value_info, here with the symbolic time axis)
    inferred = path.with_name("voice_dyn.inferred.onnx")
    onnx.save(onnx.shape_inference.infer_shapes(onnx.load(str(path))), str(inferred))
    path = inferred
    rng = np.random.default_rng(7)
    lengths = rng.integers(100, 601, size=n)
    utts = [rng.standard_normal((1, 40, int(t))).astype(np.float32) for t in lengths]
    plain = _session(path, threads)
    collector = StatsCollector(path, "input_mfcc", threads=threads)
    t_plain = t_stats = 0.0
    for start in range(0, n, block):
        part = utts[start : start + block]
        t0 = time.perf_counter()
        for u in part:
            plain.run(None, {"input_mfcc": u[None]})
        t_plain += time.perf_counter() - t0
        t0 = time.perf_counter()
        collector.update(part)
        t_stats += time.perf_counter() - t0
    stats = collector.take()
    ranges = stats.ranges("entropy")
    return {"utterances": n, "frames_min": int(lengths.min()), "frames_max": int(lengths.max()),
            "distinct_lengths": int(len(np.unique(lengths))), "plain_s": round(t_plain, 2),
            "stats_s": round(t_stats, 2), "ratio": round(t_stats / t_plain, 2), "samples_in_stats": stats.samples,
            "tensors": len(stats.names), "entropy_ranges_finite": bool(all(np.isfinite(v).all() for v in ranges.values()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utterances", type=int, default=256)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="optkit-varlen-") as work:
        path = export(Path(work))
        result = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                  "max_abs_vs_torch": diffs(path, args.threads),
                  "latency": latency(path, args.threads, args.rounds, args.reps),
                  "calibration": calibration(path, args.threads, args.utterances, args.block)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
