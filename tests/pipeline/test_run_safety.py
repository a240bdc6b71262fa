"""Issue 11: `optkit run` locks its output directory, cleans a killed run's leftovers and repairs
a corrupted reference."""
from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import invoke
from optkit.common.fileio import sha256_file
from optkit.common.workspace import OWNER_LOCK, clean_stale_work_dirs, output_lock, work_dir

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
RECIPE = """\
name: {name}
model: {model}
steps:
  - pass: export
    params: {{reference_samples: 4, input_shape: [1, 6]}}
  - pass: simplify
    params: {{check_runs: 1}}
"""


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The temp folder optkit uses for work directories, private to the test."""
    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _recipe(tmp_path: Path, name: str = "tiny") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(RECIPE.format(name=name, model=f"{MODELS}:affine"))
    return p


def assert_manifest_matches(out: Path) -> None:
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    for step, entry in manifest.items():
        if "artifact" not in entry:
            continue
        art = entry["artifact"]
        f = out / art["path"]
        assert f.exists() and sha256_file(f) == art["sha256"], step
    leftovers = [p.name for p in out.iterdir() if ".partial" in p.name]
    assert leftovers == []


def test_second_run_into_a_locked_directory_exits_1(cli_runner, tmp_path, private_tmp):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):  # another run holds it
        res = invoke(cli_runner, ["run", _recipe(tmp_path), "-o", out, "--no-wait"])
    assert res.exit_code == 1, res.output
    assert f"output directory {out} is in use by another optkit run (pid" in res.output
    assert "--wait" in res.output
    assert sorted(p.name for p in out.iterdir()) == [".optkit.lock"]  # nothing else was written


def test_wait_queues_behind_the_running_one(cli_runner, tmp_path, private_tmp):
    out = tmp_path / "out"
    out.mkdir()
    held = threading.Event()
    release = threading.Event()

    def holder():
        with output_lock(out):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    timer = threading.Timer(1.0, release.set)
    timer.start()
    t0 = time.monotonic()
    res = invoke(cli_runner, ["run", _recipe(tmp_path), "-o", out, "--wait", "--no-verify"])
    t.join()
    assert res.exit_code == 0, res.output
    assert time.monotonic() - t0 >= 0.9  # it did wait for the holder
    assert_manifest_matches(out)


def test_killed_run_leftovers_are_removed_on_start(cli_runner, tmp_path, private_tmp):
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    partial = out / ".export.onnx.abc123.partial.onnx"
    partial.write_bytes(b"x" * 1000)
    orphan = private_tmp / "optkit-int8-dead1"
    orphan.mkdir()
    (orphan / OWNER_LOCK).write_text("")
    (orphan / "preprocessed.onnx").write_bytes(b"x" * 1000)
    live = private_tmp / "optkit-int8-live1"
    live.mkdir()
    live_lock = FileLock(str(live / OWNER_LOCK))
    live_lock.acquire()  # a process still working there
    other = private_tmp / "someone-elses-dir"
    other.mkdir()
    try:
        res = invoke(cli_runner, ["run", _recipe(tmp_path), "-o", out, "--no-verify"])
    finally:
        live_lock.release()
    assert res.exit_code == 0, res.output
    assert "removed .export.onnx.abc123.partial.onnx" in res.output
    assert f"removed {orphan}" in res.output
    assert not partial.exists() and not orphan.exists()
    assert live.exists() and other.exists()
    assert_manifest_matches(out)


def test_work_dir_is_removed_and_not_an_orphan_while_used(private_tmp):
    with work_dir("optkit-int8-") as d:
        assert (d / OWNER_LOCK).exists()
        assert clean_stale_work_dirs() == [] and d.exists()
    assert not d.exists()


def test_corrupted_reference_is_rebuilt(cli_runner, tmp_path, private_tmp):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path)
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    ref = out / "export.reference.npz"
    data = ref.read_bytes()
    ref.write_bytes(data[: len(data) // 2])  # truncated
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[export] running" in res.output
    from optkit.verification.reference import load_reference

    assert len(load_reference(ref)) == 4
    assert_manifest_matches(out)


def test_another_recipe_into_the_same_directory_is_refused(cli_runner, tmp_path, private_tmp):
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", _recipe(tmp_path, "first"), "-o", out, "--no-verify"])
    assert res.exit_code == 0, res.output
    before = {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()}
    res = invoke(cli_runner, ["run", _recipe(tmp_path, "second"), "-o", out, "--no-verify"])
    assert res.exit_code == 1, res.output
    assert "holds the artifacts of recipe 'first', not 'second'" in res.output
    assert {p.name: sha256_file(p) for p in out.iterdir() if p.is_file()} == before
