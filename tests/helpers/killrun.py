"""kill -9 an `optkit run` at a chosen point, then check what a normal run leaves behind.

Used by tests/test_kill.py (a few points) and benchmarks/kill_runs.py (10 random points).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(__file__).resolve().parent / "tiny_models.py"
RUN_FILES = {"manifest.json", "report.json", "report.html", ".optkit.lock", ".optkit-cache"}
# the step lines `optkit run` prints as it starts each step, in order
MARKERS = ("[export] running", "[simplify] running", "[int8] running", "[fp16] running", "[verify:cpu]")

RECIPE = """\
name: killme
model: {model}
steps:
  - pass: export
    params: {{reference_samples: 16, input_shape: [1, 6]}}
  - pass: simplify
    params: {{check_runs: 1}}
  - name: int8
    pass: quantize-int8
    params: {{calibration: calib}}
  - name: fp16
    pass: quantize-fp16
    input: simplify
verify:
  gates: {{int8: {{min_agreement: 0.0, mean_abs: 1.0, max_accuracy_drop: null}}}}
"""


def make_recipe(d: Path) -> Path:
    calib = d / "calib"
    calib.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        np.save(calib / f"s{i:02d}.npy", rng.standard_normal(6).astype(np.float32))
    p = d / "killme.yaml"
    p.write_text(RECIPE.format(model=f"{MODELS}:affine"))
    return p


def _env(tmpdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def run_cmd(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "optkit", "run", str(recipe), "-o", str(out)]


def kill_at(recipe: Path, out: Path, tmpdir: Path, marker: str, delay: float, timeout: float = 120) -> str:
    """Start a run, SIGKILL it ``delay`` seconds after ``marker`` appears on its output (or when it
    ends first). Returns what happened: "killed after <marker>+<delay>s" or "finished"."""
    proc = subprocess.Popen(run_cmd(recipe, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=_env(tmpdir), cwd=str(recipe.parent), text=True)
    t_end = time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if marker in line:
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
                    return f"killed {delay:.2f}s after '{marker}'"
                break
            if time.monotonic() > t_end:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    return "finished before the kill"


def kill_after(recipe: Path, out: Path, tmpdir: Path, seconds: float) -> str:
    """Start a run and SIGKILL it ``seconds`` after it started; returns the last step line it
    printed (where it was killed) or "finished"."""
    log = tmpdir / f"run-{time.monotonic_ns()}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(run_cmd(recipe, out), stdout=f, stderr=subprocess.STDOUT, env=_env(tmpdir),
                                cwd=str(recipe.parent))
        try:
            proc.wait(seconds)
            where = "finished before the kill"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            steps = [ln.strip() for ln in log.read_text().splitlines() if "running" in ln or "[verify:" in ln]
            where = f"killed at {seconds:.2f}s, " + (f"during: {steps[-1][:60]}" if steps else "before the first step")
    log.unlink()
    return where


def normal_run(recipe: Path, out: Path, tmpdir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(run_cmd(recipe, out), capture_output=True, text=True, env=_env(tmpdir),
                          cwd=str(recipe.parent), timeout=300)


def problems(out: Path, tmpdir: Path) -> list[str]:
    """What is wrong with a finished output directory ([] = nothing): the manifest must describe
    every file there with a matching sha256, and no temporary or partial file may remain."""
    from optkit.common.fileio import sha256_file

    found: list[str] = []
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    described = set(RUN_FILES)
    for step, entry in manifest.items():
        # side files are {"path", "sha256"} (older manifests: plain names)
        sides = [e if isinstance(e, dict) else {"path": e} for e in entry.get("side_files", [])]
        art = entry.get("artifact")
        if art is None:
            found.append(f"step {step} has no artifact ({entry.get('status')})")
            continue
        f = out / art["path"]
        described.add(art["path"])
        described.update(e["path"] for e in sides)
        if not f.exists():
            found.append(f"{art['path']} is missing")
        elif sha256_file(f) != art["sha256"]:
            found.append(f"{art['path']} does not match its sha256 in the manifest")
        for side in sides:
            f = out / side["path"]
            if not f.exists():
                found.append(f"side file {side['path']} of {step} is missing")
            elif "sha256" in side and sha256_file(f) != side["sha256"]:
                found.append(f"side file {side['path']} does not match its sha256 in the manifest")
    for p in out.iterdir():
        if p.name not in described:
            found.append(f"{p.name} is not described by the manifest")
    for p in tmpdir.iterdir():
        if p.name.startswith("optkit-"):
            found.append(f"{p} was left in the temp folder")
    return found
