"""The contract Pass.__call__ owns for every pass: never the input as output, never a good
output lost to a failing run, pre-steps declared and cached like any other step."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import invoke, listdir_names
from optkit.common.errors import InputError, PassFailed
from optkit.common.fileio import sha256_file

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"


@pytest.mark.parametrize("mode", ["--fp16", "--int8"])
@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_quantize_refuses_its_input_as_output(cli_runner, tiny_onnx, calib_dir, mode, link):
    before = sha256_file(tiny_onnx)
    if link == "same":
        out = tiny_onnx
    elif link == "symlink":
        out = tiny_onnx.parent / "alias.onnx"
        out.symlink_to(tiny_onnx)
    else:
        out = tiny_onnx.parent / "alias.onnx"
        os.link(tiny_onnx, out)
    names = listdir_names(tiny_onnx.parent)
    extra = ["--calibration", calib_dir] if mode == "--int8" else []
    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, mode, *extra])
    assert res.exit_code == 1, res.output
    assert "is the input" in res.output and "Traceback" not in res.output
    assert sha256_file(tiny_onnx) == before
    assert listdir_names(tiny_onnx.parent) == names  # no temp file, no calibration cache


def test_library_refuses_input_as_output(tiny_onnx):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass

    with pytest.raises(InputError, match="is the input"):
        get_pass("simplify")(Artifact.from_file(tiny_onnx), {}, tiny_onnx)


def test_failing_check_keeps_the_good_output(cli_runner, tiny_onnx, monkeypatch):
    from optkit.passes import quantize_fp16

    out = tiny_onnx.parent / "m.fp16.onnx"
    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--fp16"])
    assert res.exit_code == 0, res.output
    good = sha256_file(out)
    names = listdir_names(tiny_onnx.parent)

    def broken(*args, **kwargs):
        raise PassFailed("the fp16 model produces inf/NaN in output output_wvp (simulated)")

    monkeypatch.setattr(quantize_fp16.QuantizeFp16, "_check_outputs", staticmethod(broken))
    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--fp16", "--no-keep-io-types"])
    assert res.exit_code == 1 and "simulated" in res.output
    assert sha256_file(out) == good  # the earlier, good file is untouched
    assert listdir_names(tiny_onnx.parent) == names  # and no temp file is left


def test_failing_export_keeps_model_and_reference(tiny_onnx, monkeypatch):
    """A side file (the reference) is renamed only with the model, after the check passed."""
    from optkit.passes import get_pass
    from optkit.passes.export import Export
    from optkit.verification.reference import reference_path_for

    ref = reference_path_for(tiny_onnx)
    before = sha256_file(tiny_onnx), sha256_file(ref)

    def wrong(*args, **kwargs):
        raise PassFailed("exported model differs from PyTorch (simulated)")

    monkeypatch.setattr(Export, "_compare_with_ort", staticmethod(wrong))
    with pytest.raises(PassFailed, match="simulated"):
        get_pass("export")(None, {"model": f"{MODELS}:tiny_voice", "reference_samples": 4}, tiny_onnx)
    assert (sha256_file(tiny_onnx), sha256_file(ref)) == before
    assert listdir_names(tiny_onnx.parent) == {"tiny.onnx", "tiny.reference.npz"}


def test_pre_step_is_a_cached_step(cli_runner, tmp_path, monkeypatch):
    from optkit import passes

    monkeypatch.setitem(passes.REGISTRY, "copy-after-fp16", "contract_passes:CopyAfterFp16")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
model: {MODELS}:tiny_voice
steps:
  - pass: export
    params: {{reference_samples: 4}}
  - name: copy
    pass: copy-after-fp16
verify: {{enabled: false}}
""")
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[copy.quantize-fp16] running" in res.output
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    pre = manifest["copy.quantize-fp16"]["artifact"]
    assert pre["precision"] == "fp16" and pre["parent"] == manifest["export"]["artifact"]["sha256"]
    assert manifest["copy"]["artifact"]["parent"] == pre["sha256"]
    assert (out / pre["path"]).exists()
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[copy] cached" in res.output and "running" not in res.output


def test_old_style_run_call_goes_through_the_contract(tiny_onnx):
    """pass_.run(src, cfg, path), the interface before Pass.__call__, still checks the output."""
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass

    step = get_pass("simplify")
    with pytest.raises(InputError, match="is the input"):
        step.run(Artifact.from_file(tiny_onnx), step.make_config({}), tiny_onnx)
    out = tiny_onnx.parent / "s.onnx"
    result = step.run(Artifact.from_file(tiny_onnx), step.make_config({"check_runs": 1}), out)
    assert result.artifact.path == out and result.artifact.parent == sha256_file(tiny_onnx)
