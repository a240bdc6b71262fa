"""quantize --int8 with mixed-length calibration data (a model with a dynamic time axis): statistics
over every sample at its own length (no padding), validation held out across the lengths and judged
length by length, and one-line refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import invoke, listdir_names
from optkit.quantization import calib_stats
from optkit.quantization.mixed_calibration import MixedSamples, split_holdout

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"


def _ragged(path: Path, lengths, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = [rng.standard_normal((1, 8, int(n))).astype(np.float32) for n in lengths]
    np.savez(path, x=np.concatenate(samples, -1), offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    return samples


@pytest.fixture
def dynamic_cnn(cli_runner, tmp_path) -> tuple[Path, list[int]]:
    lengths = list(np.random.default_rng(0).integers(20, 301, size=40))
    _ragged(tmp_path / "cal.npz", lengths)
    out = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-data", tmp_path / "cal.npz",
                              "--dynamic-axis", "x:3", "--length-range", "20:300", "--check-lengths", "20,300"])
    assert res.exit_code == 0, res.output
    return out, lengths


def test_int8_calibrates_and_validates_over_every_length(cli_runner, tmp_path, dynamic_cnn, monkeypatch):
    model, lengths = dynamic_cnn
    seen: list[tuple[int, ...]] = []
    update = calib_stats.StatsCollector.update

    def spy(self, samples, *a, **k):
        seen.extend(tuple(s.shape) for s in samples)
        return update(self, samples, *a, **k)

    monkeypatch.setattr(calib_stats.StatsCollector, "update", spy)
    out = tmp_path / "m.int8.onnx"
    res = invoke(cli_runner, ["quantize", model, "--int8", "--calibration", tmp_path / "cal.npz", "-o", out])
    assert res.exit_code == 0, res.output
    assert "10 held-out calibration samples" in res.output and "on 30 samples" in res.output
    assert f"calibration data: 40 samples of lengths {min(lengths)}..{max(lengths)}" in res.output
    assert "not padded" in res.output
    # every calibration sample at its own length, none padded: the lengths of the 30 kept samples
    calib, _, _ = split_holdout(MixedSamples([np.zeros((1, 8, n)) for n in lengths], None, "s", -1), 0.25)
    assert sorted(s[-1] for s in seen) == sorted(s.shape[-1] for s in calib)
    stats = calib_stats.CalibStats.load(tmp_path / "m.int8.calib.npz")
    assert stats.samples == 30 and all(np.isfinite(v).all() for v in stats.ranges("entropy").values())
    # the int8 model runs at every length and passes verify per length
    rep = tmp_path / "rep"
    res = invoke(cli_runner, ["verify", out, "--reference", tmp_path / "m.reference.npz", "--report-dir", rep])
    assert res.exit_code == 0, res.output
    assert json.loads((rep / "report.json").read_text())["reference"]["lengths"]["distinct"] > 30


def test_the_holdout_spans_the_lengths():
    lengths = sorted(range(20, 60))  # a set sorted by length: the last quarter would be the longest only
    calib, val, _ = split_holdout(MixedSamples([np.zeros((1, n)) for n in lengths], None, "s", -1), 0.25)
    val_lengths = [v.shape[-1] for v in val]
    assert len(val) == 10 and len(calib) == 30
    assert min(val_lengths) == 20 and max(val_lengths) == 59


def test_a_calibration_sample_outside_the_range_is_one_line(cli_runner, tmp_path, dynamic_cnn):
    model, _ = dynamic_cnn
    _ragged(tmp_path / "long.npz", [50, 400, 60])
    out = tmp_path / "o"
    out.mkdir()
    res = invoke(cli_runner, ["quantize", model, "--int8", "--calibration", tmp_path / "long.npz",
                              "-o", out / "m.int8.onnx"])
    assert res.exit_code == 1
    [err] = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert "length(s) 400 outside the model's declared range 20..300" in err, res.output
    assert listdir_names(out) == set()


def test_a_fixed_length_model_keeps_the_fixed_shape_path(cli_runner, tmp_path, calib_dir, tiny_onnx):
    assert not any(p.key == "optkit.dynamic_axes" for p in onnx.load(tiny_onnx).metadata_props)
    res = invoke(cli_runner, ["quantize", tiny_onnx, "--int8", "--calibration", calib_dir, "-o", tmp_path / "t.int8.onnx"])
    assert res.exit_code == 0, res.output
    assert "not padded" not in res.output
