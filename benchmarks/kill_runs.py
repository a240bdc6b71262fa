"""kill -9 `optkit run` at N random points, then a normal run: does it complete, does the manifest
match every file, is any temporary or partial file left? (Issue 11.)

A first, timed run measures how long a whole run takes (T). Each trial then uses a fresh output
directory and a private temp folder (TMPDIR), sends SIGKILL at a uniformly random time in
(0.5 s, T) after the start, records where the run was and what it left behind, runs the recipe
normally, and checks the result with tests/killrun.py's `problems()`.

    python benchmarks/kill_runs.py --points 10 --seed 11 --out benchmarks/results/kill_runs/kill_runs_time.json
python benchmarks/kill_runs.py --points 10 --seed 11 --mode markers   # kill shortly after a random step starts
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
sys.path.insert(0, str(ROOT))

from killrun import MARKERS, kill_after, kill_at, make_recipe, normal_run, problems  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--mode", choices=["time", "markers"], default="time",
                    help="time: kill at a random time of a whole run; markers: a random delay (0-1 s) after a "
                         "randomly chosen step starts (export, simplify, int8, fp16, verify)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    from optkit.runtime.sysinfo import collect

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-runs-"))
    trials = []
    try:
        recipe = make_recipe(work)
        (work / "tmp-timing").mkdir()
        t0 = time.monotonic()
        timing = normal_run(recipe, work / "out-timing", work / "tmp-timing")
        full = time.monotonic() - t0
        assert timing.returncode == 0, timing.stdout + timing.stderr
        print(f"a whole run takes {full:.1f} s; killing at random times in (0.5, {full:.1f}) s", flush=True)
        for i in range(args.points):
            out, tmpdir = work / f"out{i}", work / f"tmp{i}"
            tmpdir.mkdir()
            t0 = time.monotonic()
            if args.mode == "time":
                what = kill_after(recipe, out, tmpdir, float(rng.uniform(0.5, full)))
            else:
                what = kill_at(recipe, out, tmpdir, str(MARKERS[int(rng.integers(0, len(MARKERS)))]),
                               float(rng.uniform(0.0, 1.0)))
            left = sorted([p.name for p in out.iterdir() if p.name.startswith(".") and ".partial" in p.name]
                          + [p.name for p in tmpdir.iterdir() if p.name.startswith("optkit-")]) if out.exists() else []
            res = normal_run(recipe, out, tmpdir)
            found = problems(out, tmpdir) if res.returncode == 0 else [f"normal run exit {res.returncode}: "
                                                                         + (res.stderr.strip().splitlines() or [""])[-1]]
            removed = [ln.strip() for ln in res.stdout.splitlines() if ln.startswith("removed ")]
            trial = {"point": i + 1, "kill": what, "left_by_kill": left, "cleanup_said": removed,
                     "normal_run_exit": res.returncode, "problems": found,
                     "seconds": round(time.monotonic() - t0, 1)}
            trials.append(trial)
            print(f"{i + 1:2d}. {what:75s} left {len(left)} temp/partial -> normal run exit {res.returncode}, "
                  f"problems: {found or 'none'}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = sum(1 for t in trials if t["normal_run_exit"] != 0 or t["problems"])
    summary = {"mode": args.mode, "points": len(trials), "clean": len(trials) - bad, "bad": bad, "seed": args.seed,
               "whole_run_seconds": round(full, 1),
               "trials": trials, "machine": collect()}
    print(f"kill -9 points: {len(trials)} tried, {len(trials) - bad} clean, {bad} bad")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
