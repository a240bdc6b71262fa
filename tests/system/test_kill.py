"""Issue 11: `optkit run` killed with SIGKILL mid-step; a normal run then completes, its manifest
matches every file, and no temporary or partial file remains anywhere (10 random points:
benchmarks/kill_runs.py)."""
from __future__ import annotations

import tempfile

import pytest

from conftest import invoke
from killrun import kill_at, make_recipe, problems


@pytest.mark.timeout(180)
def test_kill_9_then_a_normal_run_is_clean(tmp_path, cli_runner, monkeypatch):
    recipe = make_recipe(tmp_path)
    out = tmp_path / "out"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))  # the in-process runs use it too

    def normal_run():
        res = invoke(cli_runner, ["run", recipe, "-o", out])
        assert res.exit_code == 0, res.output
        assert problems(out, tmpdir) == []

    # 1. killed during the export (torch importing or exporting)
    assert kill_at(recipe, out, tmpdir, "[export] running", 0.5).startswith("killed")
    normal_run()
    # 2. killed during int8 (export and simplify cached, so the kill lands in quantisation)
    recipe.write_text(recipe.read_text().replace("calibration: calib}", "calibration: calib, method: percentile}"))
    assert kill_at(recipe, out, tmpdir, "[int8] running", 0.2).startswith("killed")
    normal_run()
