from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import invoke, listdir_names
from optkit.verification.reference import load_reference

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"


def test_export_file_callable_writes_model_and_reference(cli_runner, tmp_path):
    out = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", out, "--reference-samples", "8"])
    assert res.exit_code == 0, res.output
    assert "ONNX Runtime matches PyTorch on 8 reference inputs" in res.output
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["input_mfcc"]
    assert [o.name for o in model.graph.output] == ["output_wvp"]
    # dynamic batch axis
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ref = load_reference(tmp_path / "m.reference.npz")
    assert ref.inputs["input_mfcc"].shape == (8, 1, 40, 241)
    assert ref.outputs["output_wvp"].shape == (8, 1)
    # outputs are the PyTorch ones for those inputs
    import sys
    import torch

    sys.path.insert(0, str(MODELS.parent))
    from tiny_models import tiny_voice

    with torch.no_grad():
        expected = tiny_voice()(torch.from_numpy(ref.inputs["input_mfcc"])).numpy()
    np.testing.assert_allclose(ref.outputs["output_wvp"], expected, atol=1e-6)
    assert listdir_names(tmp_path) == {"m.onnx", "m.reference.npz"}


def test_export_opset15_static_batch(cli_runner, tmp_path):
    out = tmp_path / "m15.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", out, "--opset", "15", "--static-batch",
                              "--reference-samples", "2"])
    assert res.exit_code == 0, res.output
    model = onnx.load(out)
    assert model.opset_import[0].version == 15
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_export_any_single_input_model(cli_runner, tmp_path):
    out = tmp_path / "a.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:affine", "-o", out, "--input-shape", "1,6",
                              "--input-name", "x", "--output-name", "y", "--reference-samples", "4"])
    assert res.exit_code == 0, res.output
    ref = load_reference(tmp_path / "a.reference.npz")
    assert set(ref.inputs) == {"x"} and ref.outputs["y"].shape == (4, 3)


def test_export_reference_data_with_labels(cli_runner, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", x=rng.standard_normal((5, 1, 40, 241)).astype(np.float32),
             y=np.array([0, 1, 0, 1, 1]))
    out = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", out, "--reference-data", tmp_path / "val.npz"])
    assert res.exit_code == 0, res.output
    ref = load_reference(tmp_path / "m.reference.npz")
    assert ref.labels.tolist() == [0, 1, 0, 1, 1]
    assert len(ref) == 5


@pytest.mark.parametrize("spec, message", [
    ("tiny_voice_training_mode", "training mode"),
    ("not_a_module", "not a torch.nn.Module"),
    ("broken", "factory exploded"),
    ("missing_attr", "has no attribute 'missing_attr'"),
])
def test_export_bad_models(cli_runner, tmp_path, spec, message):
    out = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:{spec}", "-o", out])
    assert res.exit_code == 1
    assert message in res.output
    assert "Traceback" not in res.output
    assert list(tmp_path.iterdir()) == []


def test_export_half_model_says_what_to_do(cli_runner, tmp_path):
    """A .half() PyTorch model failed with torch's "Input type (float) and bias type (c10::Half)"; the
    error now names the dtype and the way: export the float32 model, then optkit quantize --fp16."""
    res = invoke(cli_runner, ["export", f"{MODELS}:affine_half", "-o", tmp_path / "a.onnx", "--input-shape", "1,6"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "float16 parameters" in res.output and "optkit quantize --fp16" in res.output
    assert list(tmp_path.iterdir()) == []


def test_export_unknown_zoo_name_and_missing_file(cli_runner, tmp_path):
    res = invoke(cli_runner, ["export", "no-such-model", "-o", tmp_path / "m.onnx"])
    assert res.exit_code == 1 and "zoo name" in res.output
    res = invoke(cli_runner, ["export", "nowhere/x.py:build", "-o", tmp_path / "m.onnx"])
    assert res.exit_code == 1 and "does not exist" in res.output
    assert list(tmp_path.iterdir()) == []


def test_export_wrong_input_shape_for_model(cli_runner, tmp_path):
    res = invoke(cli_runner, ["export", f"{MODELS}:affine", "-o", tmp_path / "a.onnx", "--input-shape", "1,7"])
    assert res.exit_code == 1
    assert "does not run on inputs of shape" in res.output
    assert list(tmp_path.iterdir()) == []


def test_export_bad_reference_data(cli_runner, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    np.save(d / "a.npy", np.full((1, 40, 241), np.nan, dtype=np.float32))
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", tmp_path / "m.onnx", "--reference-data", d])
    assert res.exit_code == 1 and "NaN/Inf" in res.output
    np.save(d / "a.npy", np.zeros((1, 40, 240), dtype=np.float32))
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", tmp_path / "m.onnx", "--reference-data", d])
    assert res.exit_code == 1 and "does not match the model input" in res.output
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.reference.npz").exists()


def test_export_output_dir_missing_or_readonly(cli_runner, tmp_path, monkeypatch):
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", tmp_path / "nope" / "m.onnx"])
    assert res.exit_code == 1 and "does not exist" in res.output
    ro = tmp_path / "ro"
    ro.mkdir()
    # CI runs as root, which chmod cannot lock out: simulate a read-only directory instead.
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", ro / "m.onnx"])
    assert res.exit_code == 1 and "not writable" in res.output
    assert list(ro.iterdir()) == []


def test_export_bad_opset_is_usage_error(cli_runner, tmp_path):
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", tmp_path / "m.onnx", "--opset", "9"])
    assert res.exit_code == 2


def test_zoo_voice_resnet_exports(cli_runner, tmp_path):
    res = invoke(cli_runner, ["export", "voice-resnet", "-o", tmp_path / "v.onnx", "--reference-samples", "4"])
    assert res.exit_code == 0, res.output
    ref = load_reference(tmp_path / "v.reference.npz")
    p = ref.outputs["output_wvp"]
    assert p.shape == (4, 1) and np.all((p >= 0) & (p <= 1))
