"""Parallel rendering of a validation set into shards: make_data.py --val-shards with 1 and 2
workers (local processes, and optionally Ray), interleaved, and whether every run wrote the same
bytes.

    python benchmarks/make_data_parallel.py --n-val 256 --shard-size 32 --out benchmarks/results/make_data_parallel/make_data_parallel.json

Each run is ``calibration_data/make_data.py --val-shards DIR --n-val N --shard-size S`` in its own
process (order: 1, 2, 2, 1 workers, then Ray with 2 CPUs when --ray); reported: wall time per run,
the CPU seconds its processes used (user + system of the script, its worker processes and their
espeak-ng/sox children; not Ray's workers, which are not its children), the best time per
setting, the speed-up of 2 workers over 1, and whether every run wrote the same bytes. CPU / wall
near 2 means two cores were really there; on a shared machine they may not be.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(out: Path, n_val: int, shard_size: int, extra: list[str]) -> tuple[float, float, dict[str, str]]:
    import resource

    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "calibration_data" / "make_data.py"), "--val-shards", str(out),
                    "--n-val", str(n_val), "--shard-size", str(shard_size), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu, {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-val", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--ray", action="store_true", help="also render with --ray (a local Ray instance)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "cache" / "make-data")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from optkit.runtime.sysinfo import cpu_info, usable_cpus

    cpu = cpu_info()
    print(f"CPU: {cpu.model}, {usable_cpus()} usable cores", flush=True)
    settings = [("workers=1", ["--workers", "1"]), ("workers=2", ["--workers", "2"]),
                ("workers=2", ["--workers", "2"]), ("workers=1", ["--workers", "1"])]
    if args.ray:
        settings.append(("ray", ["--ray"]))
    runs, digests = [], set()
    for i, (name, extra) in enumerate(settings):
        seconds, cpu_s, files = run(args.work / f"run{i}", args.n_val, args.shard_size, extra)
        digests.add(json.dumps(files, sort_keys=True))
        runs.append({"setting": name, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_s, 1),
                     "cpu_over_wall": round(cpu_s / seconds, 2), "shards": len(files)})
        print(json.dumps(runs[-1]), flush=True)
    best = {name: min(r["seconds"] for r in runs if r["setting"] == name) for name, _ in settings}
    result = {
        "n_val": args.n_val, "shard_size": args.shard_size, "usable_cpus": usable_cpus(), "cpu": cpu.model,
        "load_average": os.getloadavg(), "runs": runs, "best_s": best,
        "speedup_2_over_1": round(best["workers=1"] / best["workers=2"], 2),
        "seconds_per_clip_1_worker": round(best["workers=1"] / args.n_val, 3),
        "identical_bytes_in_every_run": len(digests) == 1,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
