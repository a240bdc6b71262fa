"""Overhead of sharded verification on Ray against one process, on one machine, and the
driver's memory as the number of samples grows.

    python benchmarks/ray_verify.py --samples 10000 --out benchmarks/results/ray_verify/ray_verify.json
    python benchmarks/ray_verify.py --samples 2500 5000 10000 --data npz shards --rounds 1 \
        --out benchmarks/results/ray_verify/ray_verify_memory.json

The bundled model (voice-resnet) is exported once into --work with its PyTorch reference on
calibration_data/val.npz; a reference of N samples is made by repeating it (inputs and PyTorch
outputs together, so it is still a true reference), in two forms (--data):

- ``npz``: one reference .npz holding the inputs (loaded whole by the driver);
- ``shards``: the inputs as a directory of .npz shards of --shard-size samples and a reference
  that links them (what ``optkit export --reference-inputs link`` writes): the driver reads them
  shard by shard (one process), or not at all (Ray: each worker reads its own rows).

Each configuration runs in its own subprocess so its driver's peak RSS (VmHWM) is its own;
configurations are interleaved (--rounds 2: local, ray, ray, local; 1: local, ray) so a noisy
machine hits both alike. Reported: wall time of verify_artifacts (Ray start-up measured
separately), the ratio ray/local, driver peak RSS and its growth per 1,000 samples (least
squares over --samples), and whether all reports are identical (timings, and the reference
file's path and sha256, excluded).
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


def make_reference(work: Path, samples: int, data: str = "npz", shard_size: int = 256) -> Path:
    import numpy as np

    from optkit.verification.reference import Reference, load_reference, reference_path_for, save_reference

    model = work / "voice-resnet.onnx"
    if not model.exists():
        subprocess.run([sys.executable, "-m", "optkit", "export", "voice-resnet", "-o", str(model),
                        "--reference-data", str(ROOT / "calibration_data" / "val.npz")], check=True)
    big = work / (f"ref{samples}.npz" if data == "npz" else f"ref{samples}.link.reference.npz")
    if big.exists():
        return big
    ref = load_reference(reference_path_for(model))
    reps = -(-samples // len(ref))
    tile = lambda a: np.concatenate([a] * reps)[:samples]  # noqa: E731  (small: outputs, labels)
    outputs = {k: tile(v) for k, v in ref.outputs.items()}
    labels = None if ref.labels is None else tile(ref.labels)
    if data == "npz":
        save_reference(big, Reference({k: tile(v) for k, v in ref.inputs.items()}, outputs, labels, ref.meta))
        return big
    from optkit.data.source import open_samples, write_shard

    (name, x), = ref.inputs.items()
    folder = work / f"shards{samples}"
    folder.mkdir(exist_ok=True)
    for i, a in enumerate(range(0, samples, shard_size)):  # shard by shard: never N inputs in memory
        rows = np.arange(a, min(samples, a + shard_size)) % len(ref)
        write_shard(folder / f"part-{i:05d}.npz", x[rows], None if ref.labels is None else ref.labels[rows])
    lazy = open_samples(folder, x.shape[1:]).array()
    save_reference(big, Reference({name: lazy}, outputs, labels, ref.meta))
    return big


def one(mode: str, work: Path, samples: int, workers: int, shards: int, report: Path, data: str = "npz") -> dict:
    from optkit.pipeline.distributed import RayExecutor, ray_session
    from optkit.verification.reference import load_reference
    from optkit.verification.verify import verify_artifacts

    ref = load_reference(make_reference(work, samples, data))
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
    return {"mode": mode, "data": data, "samples": samples, "verify_s": round(seconds, 2),
            "ray_startup_s": round(startup, 2), "driver_peak_rss_mib": round(peak_rss_mib(), 1)}


def comparable(path: Path) -> dict:
    r = json.loads(path.read_text())
    r.pop("created"), r.pop("execution")
    r["reference"].pop("path"), r["reference"].pop("sha256")
    for a in r["artifacts"]:
        a.pop("seconds"), a["runner"].pop("threads", None)
    return r


def slope_per_1000(points: list[tuple[int, float]]) -> float | None:
    """Least-squares growth of peak RSS in MiB per 1,000 samples."""
    if len({n for n, _ in points}) < 2:
        return None
    import numpy as np

    n, rss = np.array(points, dtype=float).T
    return round(float(np.polyfit(n / 1000, rss, 1)[0]), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, nargs="+", default=[10000])
    ap.add_argument("--data", choices=["npz", "shards"], nargs="+", default=["npz"],
                    help="reference forms to run (see the module doc)")
    ap.add_argument("--rounds", type=int, choices=[1, 2], default=2,
                    help="2: local, ray, ray, local per configuration; 1: local, ray")
    ap.add_argument("--shard-size", type=int, default=256)
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
        print(json.dumps(one(args.one, args.work, args.samples[0], args.workers, shards, args.report,
                             args.data[0])))
        return

    from optkit.runtime.sysinfo import cpu_info, usable_cpus

    cpu = cpu_info()
    print(f"CPU: {cpu.model}, {usable_cpus()} usable cores, int8: {cpu.int8_acceleration()}", flush=True)
    runs = []
    order = ["local", "ray", "ray", "local"] if args.rounds == 2 else ["local", "ray"]
    for samples in args.samples:
        by_samples = []
        for data in args.data:
            make_reference(args.work, samples, data, args.shard_size)
            for i, mode in enumerate(order):
                report = args.work / f"report-{samples}-{data}-{i}-{mode}.json"
                res = subprocess.run([sys.executable, __file__, "--one", mode, "--samples", str(samples),
                                      "--data", data, "--workers", str(args.workers), "--shards", str(shards),
                                      "--work", str(args.work), "--report", str(report)],
                                     capture_output=True, text=True, check=True)
                row = json.loads(res.stdout.strip().splitlines()[-1])
                row["report"] = (str(report.resolve().relative_to(ROOT)) if report.resolve().is_relative_to(ROOT)
                                 else report.name)
                runs.append(row)
                by_samples.append(row)
                print(json.dumps(row), flush=True)
        same = len({json.dumps(comparable(args.work / Path(r["report"]).name), sort_keys=True)
                    for r in by_samples}) == 1
        for r in by_samples:
            r["reports_identical_at_this_size"] = same
    summary = []
    for data in args.data:
        for mode in ("local", "ray"):
            rows = [r for r in runs if r["data"] == data and r["mode"] == mode]
            summary.append({
                "data": data, "mode": mode,
                "verify_min_s": {n: min(r["verify_s"] for r in rows if r["samples"] == n) for n in args.samples},
                "driver_peak_rss_mib": {n: max(r["driver_peak_rss_mib"] for r in rows if r["samples"] == n)
                                        for n in args.samples},
                "rss_growth_mib_per_1000_samples": slope_per_1000([(r["samples"], r["driver_peak_rss_mib"])
                                                                   for r in rows]),
            })
    ratios = {f"{data}@{n}": round(min(r["verify_s"] for r in runs if r["data"] == data and r["samples"] == n
                                        and r["mode"] == "ray") /
                                    min(r["verify_s"] for r in runs if r["data"] == data and r["samples"] == n
                                        and r["mode"] == "local"), 3)
              for data in args.data for n in args.samples}
    result = {
        "samples": args.samples, "data": args.data, "workers": args.workers, "shards": shards,
        "shard_size": args.shard_size,
        "cpu": {**cpu.to_json(), "int8": cpu.int8_acceleration(), "usable_cpus": usable_cpus()},
        "runs": runs, "summary": summary, "ratio_ray_over_local": ratios,
        "reports_identical": all(r["reports_identical_at_this_size"] for r in runs),
    }
    if len(args.samples) == 1 and args.data == ["npz"]:  # the keys of the earlier results
        result.update(samples=args.samples[0], local_min_s=summary[0]["verify_min_s"][args.samples[0]],
                      ray_min_s=summary[1]["verify_min_s"][args.samples[0]],
                      ratio_ray_over_local=ratios[f"npz@{args.samples[0]}"])
    for row in summary:
        print(json.dumps(row), flush=True)
    print(json.dumps({k: result[k] for k in ("ratio_ray_over_local", "reports_identical")}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
