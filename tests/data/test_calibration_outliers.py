"""Issue 11: calibration data with absurd or far-out values is refused or clipped, with a warning."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke, listdir_names
from optkit.data.samples import SampleSet, screen_outliers
from optkit.data.source import load_samples
from optkit.common.errors import InputError


def _calib(tmp_path: Path, n: int = 8, poison=None) -> Path:
    d = tmp_path / "calib"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        x = rng.standard_normal(TINY_SHAPE).astype(np.float32)
        if poison is not None:
            poison(i, x)
        np.save(d / f"s{i:03d}.npy", x)
    return d


def _one_big(i, x):
    if i == 3:
        x[0, 5, 7] = 1e30


def test_bundled_calibration_data_has_no_outliers():
    root = Path(__file__).resolve().parents[2] / "calibration_data"
    for p in (root / "calib", root / "val.npz"):
        s, d = screen_outliers(load_samples(p, limit=64))
        assert d.action == "none" and d.values == 0, (p, d)
        assert s.x is not None


def test_screen_clips_one_far_value_and_names_the_sample():
    x = np.random.default_rng(0).standard_normal((4, 1000)).astype(np.float32)
    x[2, 3] = 1e30
    s, d = screen_outliers(SampleSet(x.copy(), None, "data", ("a", "b", "c", "d")))
    assert d.action == "clipped" and d.values == 1 and d.samples == ["c"]
    assert s.x[2, 3] == pytest.approx(d.bounds[1], rel=1e-6) and d.bounds[1] < 100
    assert np.array_equal(np.delete(s.x.ravel(), 2003), np.delete(x.ravel(), 2003))  # nothing else moved
    assert "WARNING" in d.message("data") and "c" in d.message("data")


def test_screen_refuses_absurd_bulk_and_unknown_policy():
    with pytest.raises(InputError, match="absurd"):
        screen_outliers(SampleSet(np.full((3, 4), 1e30, np.float32), None, "big"), "keep")
    with pytest.raises(InputError, match="unknown outlier policy"):
        screen_outliers(SampleSet(np.zeros((3, 4), np.float32)), "ignore")
    # a constant set is not "outliers everywhere"
    s, d = screen_outliers(SampleSet(np.ones((3, 4), np.float32)))
    assert d.action == "none"


def _quantize(cli_runner, tiny_onnx, calib, out, *extra):
    return invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib, *extra])


def test_one_1e30_value_is_clipped_with_a_warning(cli_runner, tiny_onnx, tmp_path):
    calib = _calib(tmp_path, poison=_one_big)
    out = tmp_path / "q.int8.onnx"
    res = _quantize(cli_runner, tiny_onnx, calib, out)
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output and "1 outlier value(s)" in res.output and "s003.npy" in res.output
    # clipped data calibrates like clean data: the int8 check stays close to fp32
    line = next(ln for ln in res.output.splitlines() if "int8 vs fp32" in ln)
    rel = float(line.rsplit("relative error", 1)[1].split()[0])
    assert rel < 0.2, line
    assert out.with_name("q.int8.calib.npz").exists() and out.with_name("q.int8.search.json").exists()


def test_outliers_refuse_policy(cli_runner, tiny_onnx, tmp_path):
    calib = _calib(tmp_path, poison=_one_big)
    before = listdir_names(tmp_path)
    res = _quantize(cli_runner, tiny_onnx, calib, tmp_path / "q.onnx", "--outliers", "refuse")
    assert res.exit_code == 1, res.output
    assert "far outside the rest of the set" in res.output and "s003.npy" in res.output
    assert "Traceback" not in res.output
    assert listdir_names(tmp_path) == before


def test_all_values_absurd_is_refused(cli_runner, tiny_onnx, tmp_path):
    calib = _calib(tmp_path, poison=lambda i, x: x.__imul__(1e30))
    before = listdir_names(tmp_path)
    res = _quantize(cli_runner, tiny_onnx, calib, tmp_path / "q.onnx")
    assert res.exit_code == 1, res.output
    assert "calibration values are absurd" in res.output and "calib" in res.output
    assert listdir_names(tmp_path) == before


def test_non_finite_calibration_value_is_refused(cli_runner, tiny_onnx, tmp_path):
    calib = _calib(tmp_path, poison=lambda i, x: x.__setitem__((0, 0, 0), np.inf) if i == 1 else None)
    res = _quantize(cli_runner, tiny_onnx, calib, tmp_path / "q.onnx")
    assert res.exit_code == 1 and "s001.npy: contains 1 NaN/Inf" in res.output, res.output
    assert not (tmp_path / "q.onnx").exists()


def test_a_few_absurd_values_do_not_widen_the_band_and_too_many_are_refused():
    x = np.random.default_rng(0).standard_normal((10, 100)).astype(np.float32)
    x[4, :5] = 1e30  # 0.5 % of the values: more than the 0.1 % tail the band is cut at
    s, d = screen_outliers(SampleSet(x.copy(), None, "data"))
    assert d.action == "clipped" and d.values == 5 and d.bounds[1] < 100 and d.samples == ["#4"]
    x[5, :20] = 1e30  # now 2.5 %: clipping would change the data, not repair it
    with pytest.raises(InputError, match=r"25 of 1000 calibration values \(2.5%\).*too many to clip"):
        screen_outliers(SampleSet(x, None, "data"))


def test_recipe_records_the_decision_in_manifest_and_report(cli_runner, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        x = rng.standard_normal(6).astype(np.float32)
        if i == 5:
            x[2] = 1e30
        np.save(calib / f"s{i:02d}.npy", x)
    models = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: o\nmodel: {models}:affine\nsteps:\n  - pass: export\n"
        "    params: {reference_samples: 16, input_shape: [1, 6]}\n"
        "  - name: int8\n    pass: quantize-int8\n    params: {calibration: calib}\n"
        "verify:\n  gates: {int8: {min_agreement: 0.0, mean_abs: 1.0, max_accuracy_drop: null}}\n")
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "WARNING" in res.output and "s05.npy" in res.output
    assert "NOTE int8.int8.onnx: calibration outliers clipped (1 value(s)" in res.output
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]["int8"]
    assert manifest["info"]["calibration_outliers"]["action"] == "clipped"
    report = json.loads((out / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert int8["data_decisions"]["calibration_outliers"]["samples"] == ["s05.npy"]
    assert "calibration outliers: clipped" in (out / "report.html").read_text()
