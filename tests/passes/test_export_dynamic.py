"""Export with named dynamic axes besides the batch (variable-length speech): the graph, the
recorded length range, the check against PyTorch at several lengths, and the one-line refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import invoke, listdir_names
from optkit.model.dynamic import read_dynamic_axes
from variable_length_models import gap_cnn, gru_frames

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"


def _dims(model: onnx.ModelProto) -> list:
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _export(cli_runner, model: str, out: Path, shape: str, *args: str):
    return invoke(cli_runner, ["export", f"{MODELS}:{model}", "-o", out, "--input-shape", shape, "--input-name", "x",
                               "--output-name", "y", "--reference-samples", "4", *args])


def _run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_gap_cnn_time_and_batch_dynamic_checked_at_lengths(cli_runner, tmp_path):
    out = tmp_path / "cnn.onnx"
    res = _export(cli_runner, "gap_cnn", out, "1,1,8,50", "--dynamic-axis", "x:3", "--dynamic-axis", "x:0",
                  "--length-range", "20:300")
    assert res.exit_code == 0, res.output
    model = onnx.load(out)
    assert _dims(model) == ["batch", 1, 8, "length"]
    [axis] = read_dynamic_axes(model)
    assert (axis.tensor, axis.axis, axis.min, axis.max, axis.opt) == ("x", 3, 20, 300, 50)  # opt: the export length
    # checked at the extremes, the export length and three between
    assert "ONNX Runtime matches PyTorch at lengths 20 (" in res.output
    for n in (50, 90, 160, 230, 300):
        assert f" {n} (" in res.output
    # and it really runs at any length inside the range: 3 samples of 123 frames against PyTorch
    x = np.random.default_rng(5).standard_normal((3, 1, 8, 123)).astype(np.float32)
    np.testing.assert_allclose(_run_ort(out, x), _torch(gap_cnn(), x), atol=1e-5)
    assert listdir_names(tmp_path) == {"cnn.onnx", "cnn.reference.npz"}


def test_gru_over_frames_given_check_lengths_and_axis_label(cli_runner, tmp_path):
    out = tmp_path / "gru.onnx"
    res = _export(cli_runner, "gru_frames", out, "1,12,8", "--dynamic-axis", "x:1=frames", "--length-range", "5:40",
                  "--check-lengths", "5,17,40")
    assert res.exit_code == 0, res.output
    assert _dims(onnx.load(out)) == ["batch", "frames", 8]
    assert "at lengths 5 (" in res.output and " 17 (" in res.output and " 40 (" in res.output
    x = np.random.default_rng(2).standard_normal((2, 33, 8)).astype(np.float32)
    np.testing.assert_allclose(_run_ort(out, x), _torch(gru_frames(), x), atol=1e-5)


def test_a_model_wrong_at_other_lengths_fails_the_check(cli_runner, tmp_path):
    """The tracer freezes int(T) to the export length: ORT differs from PyTorch at the other lengths."""
    res = invoke(cli_runner, ["export", f"{MODELS}:traced_length", "-o", tmp_path / "t.onnx",
                              "--input-shape", "1,1,8,50", "--input-name", "x", "--output-name", "y",
                              "--reference-samples", "2", "--dynamic-axis", "x:3", "--length-range", "20:100"])
    assert res.exit_code == 1, res.output
    assert "length" in res.output and res.output.count("\n") == 1, res.output
    assert listdir_names(tmp_path) == set()


@pytest.mark.parametrize("args, words", [
    (["--dynamic-axis", "x:3"], "--length-range MIN:MAX"),
    (["--dynamic-axis", "x:7", "--length-range", "5:9"], "has 4 dimensions"),
    (["--dynamic-axis", "nope:3", "--length-range", "5:9"], "no tensor 'nope'"),
    (["--dynamic-axis", "x:3", "--length-range", "60:90"], "outside --length-range 60:90"),
    (["--length-range", "5:90"], "no dynamic axis besides the batch"),
    (["--dynamic-axis", "x:3", "--length-range", "5:90", "--check-lengths", "4,50"], "outside the length range"),
])
def test_bad_dynamic_axis_one_line_exit_1_nothing_written(cli_runner, tmp_path, args, words):
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", tmp_path / "m.onnx", "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-samples", "2", *args])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1 and words in res.output, res.output
    assert listdir_names(tmp_path) == set()


@pytest.mark.parametrize("args", [["--dynamic-axis", "x3"], ["--dynamic-axis", "x:3", "--length-range", "9:5"],
                                  ["--dynamic-axis", "x:3", "--dynamic-axis", "x:3", "--length-range", "5:9"]])
def test_unparsable_values_are_usage_errors(cli_runner, tmp_path, args):
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", tmp_path / "m.onnx", *args])
    assert res.exit_code == 2 and "Invalid value for '--" in res.output, res.output


def test_recipe_params_declare_the_same_options():
    from optkit.common.errors import RecipeError
    from optkit.passes import get_pass

    cfg = get_pass("export").make_config({"dynamic_axes": ["input_mfcc:3", "input_mfcc:0"], "length_range": "100:1000"},
                                         where="recipe step export")
    assert cfg.dynamic_axes == ("input_mfcc:3", "input_mfcc:0") and cfg.length_range == "100:1000"
    with pytest.raises((RecipeError, Exception), match="length range"):
        get_pass("export").make_config({"length_range": "1000"}, where="recipe step export")


def test_simplify_checks_a_dynamic_length_model_at_both_extremes(cli_runner, tmp_path):
    """The rewrite passes no longer refuse the time axis: their random checks run at the declared
    extremes (random_feed alternates min and max by seed)."""
    from optkit.model.feeds import random_feed
    from optkit.model.onnx_utils import io_specs

    out = tmp_path / "cnn.onnx"
    assert invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,8,50",
                               "--input-name", "x", "--output-name", "y", "--reference-samples", "2",
                               "--dynamic-axis", "x:3", "--length-range", "20:300"]).exit_code == 0
    specs, _ = io_specs(onnx.load(out))
    assert random_feed(specs, batch=2, seed=0)["x"].shape == (2, 1, 8, 20)
    assert random_feed(specs, batch=2, seed=1)["x"].shape == (2, 1, 8, 300)
    res = invoke(cli_runner, ["simplify", out, "-o", tmp_path / "cnn.sim.onnx"])
    assert res.exit_code == 0, res.output
    assert read_dynamic_axes(onnx.load(tmp_path / "cnn.sim.onnx"))[0].max == 300


def test_mixed_length_reference_data_is_embedded_and_checked_per_length(cli_runner, tmp_path):
    """A directory of .npy of different lengths: every sample runs at its own length (no padding),
    the reference file holds the mixed-length inputs and their outputs, in the data's order."""
    from optkit.common.errors import InputError
    from optkit.verification.reference import load_reference

    rng = np.random.default_rng(3)
    lengths = [40, 25, 40, 90, 25]
    data = tmp_path / "data"
    data.mkdir()
    for i, n in enumerate(lengths):
        np.save(data / f"u{i}.npy", rng.standard_normal((1, 8, n)).astype(np.float32))
    out = tmp_path / "cnn.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-data", data,
                              "--dynamic-axis", "x:3", "--length-range", "20:100", "--check-lengths", "20,100"])
    assert res.exit_code == 0, res.output
    assert "at lengths 20 (" in res.output and " 25 (" in res.output and " 90 (" in res.output
    with pytest.raises(InputError, match="mixed-length inputs \\(lengths 25..90\\)"):
        load_reference(tmp_path / "cnn.reference.npz")
    ref = load_reference(tmp_path / "cnn.reference.npz", mixed_length=True)
    xs = ref.inputs["x"]
    assert [s.shape[-1] for s in xs] == lengths
    for i, s in enumerate(xs):
        np.testing.assert_array_equal(s, np.load(data / f"u{i}.npy"))
        np.testing.assert_allclose(ref.outputs["y"][i], _torch(gap_cnn(), s[None])[0], atol=1e-6)


@pytest.mark.parametrize("make, words", [
    (lambda d: np.savez(d / "r.npz", x=np.zeros((1, 8, 60), np.float32), offsets=np.array([0, 30, 70])),
     "offsets must run from 0 to the length of 'x' along axis 2 (60)"),
    (lambda d: np.savez(d / "r.npz", x=np.zeros((1, 8, 60), np.float32), offsets=np.array([0, 10, 60])),
     "sample 0 has length 10, outside --length-range 20:100"),
])
def test_bad_mixed_length_data_one_line_exit_1(cli_runner, tmp_path, make, words):
    make(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", out / "m.onnx", "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-data", tmp_path / "r.npz",
                              "--dynamic-axis", "x:3", "--length-range", "20:100"])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and words in res.output, res.output
    assert listdir_names(out) == set()
