"""Issue 11: fp16 conversion of models that already contain Cast nodes, and the fallback converter."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke

CAST_MODEL = """
import torch

class WithCasts(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x):
        mask = (x > 0).float()                   # Cast(bool -> float)
        y = self.conv(x * mask)
        n = torch.tensor(y.shape[-1]).float()    # Cast(int64 -> float)
        y = y.mean(dim=(2, 3)) * (n / n)
        return torch.sigmoid(self.fc(y))

def make():
    return WithCasts().eval()
"""


@pytest.fixture
def cast_model(tmp_path, cli_runner) -> Path:
    src = tmp_path / "casts.py"
    src.write_text(CAST_MODEL)
    out = tmp_path / "casts.onnx"
    res = invoke(cli_runner, ["export", f"{src}:make", "-o", out, "--input-shape", "1,1,8,8"])
    assert res.exit_code == 0, res.output
    import onnx

    casts = [n for n in onnx.load(out).graph.node if n.op_type == "Cast"]
    assert len(casts) >= 2  # the model really has Cast(to=float) nodes
    return out


def test_model_with_casts_converts_and_verifies(cli_runner, cast_model, tmp_path):
    out = tmp_path / "casts.fp16.onnx"
    res = invoke(cli_runner, ["quantize", cast_model, "-o", out, "--fp16"])
    assert res.exit_code == 0, res.output
    assert "retyped" in res.output and "Cast" in res.output
    import onnx

    onnx.checker.check_model(onnx.load(out), full_check=True)
    res = invoke(cli_runner, ["verify", out, "--reference", tmp_path / "casts.reference.npz"])
    assert res.exit_code == 0, res.output


def test_the_unfixed_converter_output_is_what_fails(cast_model):
    """The failure this pass fixes is real: onnxconverter-common alone gives a model the checker rejects."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = float16.convert_float_to_float16(onnx.load(cast_model), keep_io_types=True)
    with pytest.raises(Exception, match=r"Inferred elem type differs from existing elem type: \(1\) vs \(10\)"):
        onnx.checker.check_model(m, full_check=True)


def test_falls_back_to_onnxruntime_float16_tool(cli_runner, cast_model, tmp_path, monkeypatch):
    import onnxconverter_common.float16 as occ

    def broken(*a, **k):
        raise ValueError("simulated converter failure")

    monkeypatch.setattr(occ, "convert_float_to_float16", broken)
    out = tmp_path / "casts.fp16.onnx"
    res = invoke(cli_runner, ["quantize", cast_model, "-o", out, "--fp16"])
    assert res.exit_code == 0, res.output
    assert "converted with ONNX Runtime's float16 tool" in res.output
    import onnx

    onnx.checker.check_model(onnx.load(out), full_check=True)  # topologically sorted
    res = invoke(cli_runner, ["verify", out, "--reference", tmp_path / "casts.reference.npz"])
    assert res.exit_code == 0, res.output


def test_both_converters_failing_is_one_line_and_no_file(cli_runner, cast_model, tmp_path, monkeypatch):
    import onnxconverter_common.float16 as occ
    import onnxruntime.transformers.float16 as ortf

    def broken(*a, **k):
        raise ValueError("simulated")

    monkeypatch.setattr(occ, "convert_float_to_float16", broken)
    monkeypatch.setattr(ortf, "convert_float_to_float16", broken)
    before = sorted(p.name for p in tmp_path.iterdir())
    res = invoke(cli_runner, ["quantize", cast_model, "-o", tmp_path / "x.onnx", "--fp16"])
    assert res.exit_code == 1, res.output
    assert "could not convert casts.onnx to fp16: onnxconverter-common: ValueError: simulated; " \
           "onnxruntime.transformers.float16: ValueError: simulated" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before
