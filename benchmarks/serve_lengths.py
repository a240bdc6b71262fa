"""Issue 23's two remaining targets for variable-length speech, on this machine:

1. Serving a realistic length mix. voice-resnet exported with a dynamic time axis (``optkit export
   --dynamic-axis input_mfcc:3 --length-range 100:1000``, as benchmarks/variable_length.py does) is
   served once by ``optkit serve`` (default flags, 127.0.0.1); the same closed-loop ramp
   (``optkit.serve.loadtest.closed_loop_step``) runs, step by step in turn on that one server, with
   fixed 241-frame requests (2.41 s) and with a 1-6 s mix: lengths drawn uniformly from the whole
   numbers 100..600 frames (100 frames = 1 s; the list drawn with seed 0, the requests drawn from it
   with ``--seed``). Saturation QPS = the best step of each. Target:
   ``mix_qps * mean_len / 241 >= 0.8 * fixed_qps`` (the mix's QPS scaled by its mean length, i.e.
   frames per second served), no 500s; p99 per length bucket (6 equal-width buckets) in the table.
2. Calibration peak RSS. Mixed-length statistics (``calib_stats.collect_stats`` over
   ``--utterances`` utterances of 100..600 frames, one sample at its own length, as
   ``quantize --int8`` does for a mixed-length set) vs fixed-length statistics over the same number
   of utterances all at the longest length (600), each in its own subprocess reporting its peak RSS
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Target: mixed <= fixed. Statistics time is in
   benchmarks/variable_length.py.

    python benchmarks/serve_lengths.py            # full: 256 utterances, ramp 1..16 of 5 s steps
    python benchmarks/serve_lengths.py --quick    # a check that it runs: 32 utterances, 1 s steps to 4
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serve_lengths" / "serve_lengths.json"
FIXED = 241
MIX_LO, MIX_HI = 100, 600
TARGET_RATIO = 0.8


def mix_lengths(n: int = 2000, seed: int = 0) -> list[int]:
    """The stated 1-6 s distribution: ``n`` lengths uniform over the whole numbers 100..600."""
    return [int(v) for v in np.random.default_rng(seed).integers(MIX_LO, MIX_HI + 1, size=n)]


# -- 1. serving -------------------------------------------------------------------------------------
def serving(model: Path, concurrencies: list[int], step_seconds: float, timeout: float, seed: int) -> dict:
    from optkit.serve import loadtest as lt
    from optkit.serve.server import ServerProcess

    lengths = mix_lengths()
    with ServerProcess(model, extra_args=[], startup_timeout=300) as srv:
        md = lt.fetch_metadata(srv.url)
        fixed, mix = lt.length_mix(md, [FIXED], seed), lt.length_mix(md, lengths, seed)
        url = f"{srv.url}/verify"
        for source in (fixed, mix):
            asyncio.run(lt._warm_up(url, source, timeout))
        steps: dict[str, list] = {"fixed": [], "mix": []}
        for c in concurrencies:  # in turn on one server: the machine's load drifts hit both alike
            for name, source in (("fixed", fixed), ("mix", mix)):
                step = asyncio.run(lt.closed_loop_step(url, source, c, step_seconds, timeout))
                steps[name].append(step)
                print(f"{name:>5} c={c}: {step.qps:.2f} QPS, p99 {lt._f(step.p99_ms)} ms, "
                      f"500s {step.status_counts.get('500', 0)}, failed {step.failed}", file=sys.stderr)

    def summary(name: str, source) -> dict:  # noqa: ANN001
        best = max(steps[name], key=lambda s: s.qps)
        return {"saturation_qps": round(best.qps, 3), "at_concurrency": best.concurrency,
                "status_500": sum(int(s.status_counts.get("500", 0)) for s in steps[name]),
                "failed": sum(s.failed for s in steps[name]),
                "steps": [{"concurrency": s.concurrency, "qps": round(s.qps, 3), "p50_ms": lt._r(s.p50_ms),
                           "p99_ms": lt._r(s.p99_ms), "failed": s.failed} for s in steps[name]],
                "per_length": source.rows(), "length_mix": source.mix_json()}

    out = {"fixed_241": summary("fixed", fixed), "mix_1_6s": summary("mix", mix)}
    mean_len = float(np.mean(lengths))
    fixed_qps, mix_qps = out["fixed_241"]["saturation_qps"], out["mix_1_6s"]["saturation_qps"]
    scaled = mix_qps * mean_len / FIXED
    out.update(mean_length=round(mean_len, 2), mix_qps_scaled_to_241=round(scaled, 3),
               ratio=round(scaled / fixed_qps, 3) if fixed_qps else None,
               target=f"mix_qps * mean_len / {FIXED} >= {TARGET_RATIO} x fixed_qps, no 500s",
               within_target=bool(fixed_qps and scaled >= TARGET_RATIO * fixed_qps
                                  and out["fixed_241"]["status_500"] == out["mix_1_6s"]["status_500"] == 0),
               table=mix.table_lines("mix 1-6 s, per length bucket (every step):"))
    return out


# -- 2. calibration peak RSS ------------------------------------------------------------------------
def child(kind: str, model: Path, n: int, chunk_size: int) -> None:
    """One calibration in this (fresh) process; prints one JSON line with its peak RSS."""
    from optkit.passes.quantize_int8 import preprocess
    from optkit.quantization import calib_stats

    rng = np.random.default_rng(7)
    lengths = rng.integers(MIX_LO, MIX_HI + 1, size=n)
    if kind == "mixed":  # a list of samples at their own lengths: never padded, never stacked
        x = [rng.standard_normal((1, 40, int(t))).astype(np.float32) for t in lengths]
    else:  # the same count, every one at the longest length of the mix
        x = rng.standard_normal((n, 1, 40, MIX_HI)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="optkit-calib-rss-") as work:
        pre = Path(work) / "pre.onnx"
        preprocess(model, pre)
        t0 = time.perf_counter()
        stats = calib_stats.collect_stats(pre, x, "input_mfcc", chunk_size=chunk_size, progress=False,
                                          check_finite=False)
        took = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"kind": kind, "utterances": n, "frames": int(sum(s.shape[-1] for s in x)),
                      "tensors": len(stats.names), "stats_s": round(took, 2), "peak_rss_mib": round(peak_kib / 1024, 1)}))


def calibration_rss(model: Path, n: int, chunk_size: int) -> dict:
    rows = {}
    for kind in ("fixed", "mixed"):
        cmd = [sys.executable, __file__, "--child", kind, "--model", str(model), "--utterances", str(n),
               "--chunk-size", str(chunk_size)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode:
            raise SystemExit(f"{kind} calibration failed:\n{proc.stderr[-3000:]}")
        rows[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{kind:>6}: {rows[kind]['stats_s']} s, peak RSS {rows[kind]['peak_rss_mib']} MiB", file=sys.stderr)
    return {**rows, "chunk_size": chunk_size,
            "target": f"mixed-length peak RSS <= fixed-length calibration at {MIX_HI} frames",
            "within_target": rows["mixed"]["peak_rss_mib"] <= rows["fixed"]["peak_rss_mib"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run: 32 utterances, 1 s steps, concurrency 1,2,4")
    ap.add_argument("--utterances", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--step-seconds", type=float, default=None)
    ap.add_argument("--concurrency", default=None, help="comma-separated (default 1,2,4,8,16; quick 1,2,4)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the request draw")
    ap.add_argument("-o", "--output", type=Path, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.utterances or (32 if args.quick else 256)
    if args.child:
        child(args.child, args.model, n, args.chunk_size)
        return
    step_s = args.step_seconds or (1.0 if args.quick else 5.0)
    conc = [int(c) for c in (args.concurrency or ("1,2,4" if args.quick else "1,2,4,8,16")).split(",")]
    from variable_length import export  # the same dynamic-axis export as benchmarks/variable_length.py

    with tempfile.TemporaryDirectory(prefix="optkit-serve-lengths-") as work:
        model = export(Path(work))
        result = {"benchmark": "serve_lengths", "quick": args.quick,
                  "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                              "load_average": [round(v, 2) for v in os.getloadavg()]},
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "serving": serving(model, conc, step_s, args.timeout, args.seed),
                  "calibration_rss": calibration_rss(model, n, args.chunk_size)}
    out = args.output or (DEFAULT_OUT.with_name("serve_lengths.quick.json") if args.quick else DEFAULT_OUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    from optkit.common.fileio import write_json_atomically

    write_json_atomically(out, result)
    s, c = result["serving"], result["calibration_rss"]
    print("\n".join(s.pop("table")))
    print(f"\nserving: fixed {FIXED} frames {s['fixed_241']['saturation_qps']} QPS; mix 1-6 s "
          f"{s['mix_1_6s']['saturation_qps']} QPS x mean {s['mean_length']} / {FIXED} = {s['mix_qps_scaled_to_241']}"
          f" -> ratio {s['ratio']} (target >= {TARGET_RATIO}); 500s: fixed {s['fixed_241']['status_500']}, "
          f"mix {s['mix_1_6s']['status_500']}; within target: {s['within_target']}")
    print(f"calibration peak RSS ({n} utterances): fixed {MIX_HI} frames {c['fixed']['peak_rss_mib']} MiB, "
          f"mixed {MIX_LO}..{MIX_HI} {c['mixed']['peak_rss_mib']} MiB; within target: {c['within_target']}")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
