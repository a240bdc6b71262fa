"""optkit verify on a mixed-length reference: each length run on its own frames (no padding), every
gate overall and per length bucket, too-small buckets not judged, lengths in the flipped-sample
table, and a plot of error vs length in report.html."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import invoke
from optkit.verification.lengths import length_buckets

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"
LENGTHS = [40] * 30 + [60] * 30 + [90] * 5


def _export(cli_runner, tmp_path: Path, name: str = "cnn", length_range: str = "20:100", lengths=LENGTHS) -> Path:
    rng = np.random.default_rng(0)
    samples = [rng.standard_normal((1, 8, n)).astype(np.float32) for n in lengths]
    x = np.concatenate(samples, axis=-1)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    y = (np.arange(len(lengths)) % 2).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, offsets=offsets, y=y)
    out = tmp_path / f"{name}.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-data", tmp_path / "data.npz",
                              "--dynamic-axis", "x:3", "--length-range", length_range,
                              "--check-lengths", length_range.replace(":", ",")])
    assert res.exit_code == 0, res.output
    return out


def _off_above_50(src: Path, dst: Path) -> None:
    """The model with relu(T - 50) * 1e-3 added to its output: exact at 40 frames, 0.01 off at 60."""
    m = onnx.load(src)
    g = m.graph
    y = g.output[0].name
    g.node[-1].output[0] = "y_exact"
    g.initializer.extend([helper.make_tensor("i3", TensorProto.INT64, [1], [3]),
                          helper.make_tensor("c50", TensorProto.FLOAT, [], [50.0]),
                          helper.make_tensor("k", TensorProto.FLOAT, [], [1e-3])])
    g.node.extend([helper.make_node("Shape", ["x"], ["shp"]),
                   helper.make_node("Gather", ["shp", "i3"], ["t"]),
                   helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
                   helper.make_node("Sub", ["tf", "c50"], ["d"]),
                   helper.make_node("Relu", ["d"], ["r"]),
                   helper.make_node("Mul", ["r", "k"], ["off"]),
                   helper.make_node("Add", ["y_exact", "off"], [y])])
    onnx.save(m, dst)


def test_a_mixed_length_reference_is_verified_per_length_bucket(cli_runner, tmp_path):
    model = _export(cli_runner, tmp_path)
    rep = tmp_path / "rep"
    res = invoke(cli_runner, ["verify", model, "--reference", tmp_path / "cnn.reference.npz", "--report-dir", rep])
    assert res.exit_code == 0, res.output
    assert "per length bucket (reference lengths 40..90, 3 distinct" in res.output
    assert "too few samples (5 < 30): not judged" in res.output
    data = json.loads((rep / "report.json").read_text())
    assert data["reference"]["lengths"] == {"min": 40, "max": 90, "distinct": 3}
    assert data["reference"]["sample_lengths"] == LENGTHS
    [art] = data["artifacts"]
    buckets = art["per_length"]["buckets"]
    assert [(b["label"], b["samples"], b["status"]) for b in buckets] == [
        ("40", 30, "passed"), ("60", 30, "passed"), ("90", 5, "too few samples")]
    assert all(b["outputs"]["y"]["max_abs"] <= 1e-5 for b in buckets)  # each length on its own frames
    assert buckets[0]["accuracy_drop"] == 0.0
    html = (rep / "report.html").read_text()
    assert 'data-plot="error-vs-length"' in html and "Per length bucket" in html


def test_a_bucket_that_fails_its_gate_fails_the_artifact_a_small_one_does_not(cli_runner, tmp_path):
    model = _export(cli_runner, tmp_path)
    bad = tmp_path / "off.onnx"
    _off_above_50(model, bad)
    rep = tmp_path / "rep"
    res = invoke(cli_runner, ["verify", bad, "--reference", tmp_path / "cnn.reference.npz", "--report-dir", rep,
                              "--threshold", "0.5"])
    assert res.exit_code == 3, res.output
    assert "length 60 (30 samples): max |diff| 0.01 > 0.0001" in res.output
    assert "length 40 (" not in res.output and "length 90 (" not in res.output
    buckets = json.loads((rep / "report.json").read_text())["artifacts"][0]["per_length"]["buckets"]
    assert [b["status"] for b in buckets] == ["passed", "failed", "too few samples"]
    assert buckets[2]["failures"]  # 0.04 off at 90 frames: shown, but 5 samples are not judged
    assert buckets[0]["outputs"]["y"]["max_abs"] < 1e-5


def test_flipped_samples_show_their_length(cli_runner, tmp_path):
    model = _export(cli_runner, tmp_path)
    ref = np.load(tmp_path / "cnn.reference.npz")["output.y"].ravel()
    # a threshold between two reference scores of 60-frame samples: the 0.01 offset flips some of them
    t = float(np.sort(ref[30:60])[15]) + 1e-4
    bad = tmp_path / "off.onnx"
    _off_above_50(model, bad)
    rep = tmp_path / "rep"
    res = invoke(cli_runner, ["verify", bad, "--reference", tmp_path / "cnn.reference.npz", "--report-dir", rep,
                              "--threshold", str(t), "--gate", "fp32.max_abs=off"])
    flips = json.loads((rep / "report.json").read_text())["artifacts"][0]["flipped_samples"]
    assert flips, res.output
    assert all(f["length"] == LENGTHS[f["index"]] and f["length"] >= 60 for f in flips)
    assert "<th>length</th>" in (rep / "report.html").read_text()


def test_a_reference_length_outside_the_models_range_is_one_line(cli_runner, tmp_path):
    _export(cli_runner, tmp_path)
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    model = _export(cli_runner, narrow, "narrow", "20:70", lengths=[40, 60])
    res = invoke(cli_runner, ["verify", model, "--reference", tmp_path / "cnn.reference.npz"])
    assert res.exit_code == 1, res.output
    [err] = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert "length(s) 90 outside the model's declared range 20..70 of input x" in err, res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("lengths", [
    [100] * 3 + [241] * 40,
    list(np.random.default_rng(1).integers(100, 1001, size=500)),
    [100] * 400 + list(range(101, 200)),
])
def test_length_buckets_are_chosen_from_the_data(lengths):
    arr = np.array(lengths)
    buckets = length_buckets(arr)
    assert 1 <= len(buckets) <= 6
    assert buckets[0][0] == arr.min() and buckets[-1][1] == arr.max()
    counts = [int(((arr >= lo) & (arr <= hi)).sum()) for lo, hi in buckets]
    assert sum(counts) == len(arr) and min(counts) > 0
    assert all(hi < nxt for (_, hi), (nxt, _) in zip(buckets, buckets[1:]))  # no length in two buckets
    if len(np.unique(arr)) > 6:  # ranges of about equal counts
        assert max(counts) <= 2 * len(arr) / len(buckets) or counts[0] == (arr == arr.min()).sum()


def test_range_buckets_keep_enough_samples_to_be_judged_when_the_set_allows():
    arr = np.random.default_rng(2).integers(20, 301, size=64)  # 64 samples of ~60 distinct lengths
    buckets = length_buckets(arr)
    assert len(buckets) == 2
    assert all(((arr >= lo) & (arr <= hi)).sum() >= 30 for lo, hi in buckets)
