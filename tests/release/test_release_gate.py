"""Issue 11: a PASS cannot be faked by a bad reference, and bad inputs/paths give one clear line.

Every case asserts the exit code, the message, and that nothing partial was written.
"""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import invoke, listdir_names
from optkit.verification.reference import Reference, load_reference, reference_path_for, save_reference


def _ref(tiny_onnx: Path) -> Reference:
    return load_reference(reference_path_for(tiny_onnx))


def _no_traceback(res) -> None:
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output


def _verify(cli_runner, model, ref, *extra):
    return invoke(cli_runner, ["verify", model, "--reference", ref, *extra])


# -- false PASS ---------------------------------------------------------------------------------

def test_nan_in_reference_outputs_is_refused_not_passed(cli_runner, tiny_onnx, tmp_path):
    ref = _ref(tiny_onnx)
    out = ref.outputs["output_wvp"].copy()
    out[: len(out) // 2] = np.nan  # half NaN: used to PASS with cosine 0 and agreement 70 %
    bad = save_reference(tmp_path / "nan.npz", Reference(ref.inputs, {"output_wvp": out}))
    before = listdir_names(tmp_path)
    res = _verify(cli_runner, tiny_onnx, bad, "--report-dir", tmp_path / "rep")
    assert res.exit_code == 1, res.output
    assert "nan.npz" in res.output and "output 'output_wvp' contains 8 NaN/Inf" in res.output
    assert "PASS" not in res.output
    _no_traceback(res)
    assert listdir_names(tmp_path) == before  # no report directory was created


def test_inf_in_reference_outputs_is_refused(cli_runner, tiny_onnx, tmp_path):
    ref = _ref(tiny_onnx)
    out = ref.outputs["output_wvp"].copy()
    out[0] = np.inf
    bad = save_reference(tmp_path / "inf.npz", Reference(ref.inputs, {"output_wvp": out}))
    res = _verify(cli_runner, tiny_onnx, bad)
    assert res.exit_code == 1 and "contains 1 NaN/Inf" in res.output, res.output


def test_nan_in_reference_inputs_is_an_input_error_not_a_gate_failure(cli_runner, tiny_onnx, tmp_path):
    ref = _ref(tiny_onnx)
    x = ref.inputs["input_mfcc"].copy()
    x[3, 0, 5, 7] = np.nan
    bad = save_reference(tmp_path / "nanin.npz", Reference({"input_mfcc": x}, ref.outputs))
    res = _verify(cli_runner, tiny_onnx, bad)
    assert res.exit_code == 1, res.output  # not 3: the artifact is not to blame
    assert "nanin.npz: input 'input_mfcc' contains 1 NaN/Inf" in res.output


def test_compare_outputs_never_skips_nan():
    from optkit.verification.task_metrics import compare_outputs
    from optkit.verification.verify import Gate

    ref = np.array([0.1, 0.9, 0.2, 0.8])
    got = np.array([0.1, np.nan, 0.2, 0.8])
    m = compare_outputs(ref, got, 0.5)
    assert np.isnan(m["max_abs"]) and np.isnan(m["mean_abs"])
    assert Gate(max_abs=1.0).check(m, None)  # fails, whatever the limit
    with pytest.raises(ValueError, match="reference contains 1 NaN/Inf"):
        compare_outputs(got, ref, 0.5)


def test_unsorted_graph_does_not_pass_verify(cli_runner, tiny_onnx, tmp_path):
    m = onnx.load(tiny_onnx)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))  # ORT sorts it and runs it fine; onnx.checker rejects it
    bad = tmp_path / "unsorted.onnx"
    onnx.save(m, bad)
    res = _verify(cli_runner, bad, reference_path_for(tiny_onnx))
    assert res.exit_code == 1, res.output
    assert "unsorted.onnx: not a valid ONNX model" in res.output and "topologically sorted" in res.output
    assert "PASS" not in res.output


# -- references validated on load ---------------------------------------------------------------

def _bad_crc_copy(src: Path, dst: Path) -> Path:
    """Flip a byte inside the first member's data (the zip stays well-formed; the CRC does not match)."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def _uncompressed_bad_crc(tmp_path: Path, ref: Reference) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **{"input.input_mfcc": ref.inputs["input_mfcc"], "output.output_wvp": ref.outputs["output_wvp"]})
    p = tmp_path / "stored.npz"
    p.write_bytes(buf.getvalue())
    return _bad_crc_copy(p, tmp_path / "stored-badcrc.npz")


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated or corrupted"),
    ("bad-crc", "truncated or corrupted"),
    ("bad-crc-stored", "truncated or corrupted"),
    ("npy", "is a single .npy array, not a reference .npz"),
    ("not-zip", "not a zip archive"),
    ("labels-length", "labels have shape (3,), expected (16,)"),
    ("labels-float", "labels have dtype float64"),
    ("counts", "different sample counts"),
    ("empty", "has no samples"),
    ("strings", "has dtype <U"),
    ("no-outputs", "is not an optkit reference file"),
])
def test_bad_reference_is_one_clear_line(cli_runner, tiny_onnx, tmp_path, case, message):
    good = reference_path_for(tiny_onnx)
    ref = _ref(tiny_onnx)
    x, y = ref.inputs["input_mfcc"], ref.outputs["output_wvp"]
    work = tmp_path / "refs"
    work.mkdir()
    p = work / f"{case}.npz"
    if case == "truncated":
        data = good.read_bytes()
        p.write_bytes(data[: len(data) * 2 // 3])
    elif case == "bad-crc":
        _bad_crc_copy(good, p)
    elif case == "bad-crc-stored":
        p = _uncompressed_bad_crc(work, ref)
    elif case == "npy":
        p = work / "x.npy"
        np.save(p, x)
    elif case == "not-zip":
        p.write_bytes(b"hello, not a zip")
    elif case == "labels-length":
        save_reference(p, Reference(ref.inputs, ref.outputs, labels=np.array([0, 1, 0])))
    elif case == "labels-float":
        save_reference(p, Reference(ref.inputs, ref.outputs, labels=np.linspace(0, 1, len(x))))
    elif case == "counts":
        save_reference(p, Reference({"input_mfcc": x}, {"output_wvp": y[:5]}))
    elif case == "empty":
        save_reference(p, Reference({"input_mfcc": x[:0]}, {"output_wvp": y[:0]}))
    elif case == "strings":
        np.savez(p, **{"input.input_mfcc": x, "output.output_wvp": np.array(["a"] * len(x))})
    elif case == "no-outputs":
        np.savez(p, **{"input.input_mfcc": x})
    before = listdir_names(tmp_path)
    res = _verify(cli_runner, tiny_onnx, p, "--report-dir", tmp_path / "rep")
    assert res.exit_code == 1, res.output
    assert p.name in res.output and message in res.output, res.output
    _no_traceback(res)
    assert len(res.output.strip().splitlines()) == 1
    assert listdir_names(tmp_path) == before


def test_reference_too_large_uncompressed_is_refused_before_reading(tmp_path):
    from optkit.common.errors import InputError

    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, **{"input.x": np.zeros((64, 1024, 1024), np.uint8), "output.y": np.zeros((64, 1))})
    assert p.stat().st_size < 1 << 20  # 64 MiB of zeros compress to almost nothing
    with pytest.raises(InputError, match=r"bomb.npz: its arrays would take 0.1 GiB uncompressed \(limit 0.0 GiB\)"):
        load_reference(p, max_bytes=1 << 20)


# -- output paths -------------------------------------------------------------------------------

def test_output_under_proc_is_one_line(cli_runner, tiny_onnx):
    res = invoke(cli_runner, ["simplify", tiny_onnx, "-o", "/proc/optkit-test.onnx"])
    assert res.exit_code == 1, res.output
    assert "cannot create files in output directory /proc" in res.output
    _no_traceback(res)


def test_300_character_file_name(cli_runner, tiny_onnx, tmp_path):
    before = listdir_names(tmp_path)
    res = invoke(cli_runner, ["simplify", tiny_onnx, "-o", tmp_path / ("m" * 300 + ".onnx")])
    assert res.exit_code == 1, res.output
    assert "is 305 bytes long; this file system allows 255" in res.output
    _no_traceback(res)
    assert listdir_names(tmp_path) == before


def test_long_but_valid_name_is_written(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / ("m" * 240 + ".onnx")  # the temp file next to it must not exceed the limit
    res = invoke(cli_runner, ["simplify", tiny_onnx, "-o", out])
    assert res.exit_code == 0, res.output
    assert out.exists() and not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_output_that_is_a_fifo_is_not_replaced(cli_runner, tiny_onnx, tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)  # stands in for /dev/null & co., which root could otherwise replace
    res = invoke(cli_runner, ["simplify", tiny_onnx, "-o", fifo])
    assert res.exit_code == 1 and "is not a regular file" in res.output, res.output
    import stat

    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_unwritable_report_dir(cli_runner, tiny_onnx, tmp_path):
    res = _verify(cli_runner, tiny_onnx, reference_path_for(tiny_onnx), "--report-dir", "/proc/optkit-report")
    assert res.exit_code == 1, res.output
    assert "cannot use report directory /proc/optkit-report" in res.output
    _no_traceback(res)


def test_report_dir_that_is_a_file(cli_runner, tiny_onnx, tmp_path):
    f = tmp_path / "rep"
    f.write_text("x")
    res = _verify(cli_runner, tiny_onnx, reference_path_for(tiny_onnx), "--report-dir", f)
    assert res.exit_code == 2 and "is a file" in res.output, res.output  # click's usage check
    from optkit.common.errors import InputError
    from optkit.common.fileio import check_output_dir

    with pytest.raises(InputError, match="report directory .* is a file"):
        check_output_dir(f, "report directory")


def test_read_only_report_dir(cli_runner, tiny_onnx, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    # root ignores directory permissions: simulate a read-only directory
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    res = _verify(cli_runner, tiny_onnx, reference_path_for(tiny_onnx), "--report-dir", ro / "sub")
    assert res.exit_code == 1 and "not writable" in res.output, res.output
    assert list(ro.iterdir()) == []


# -- --weights ----------------------------------------------------------------------------------

MODEL_PY = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
    def forward(self, x):
        return torch.sigmoid(self.conv(x).mean(dim=(1, 2, 3)))

def make():
    return Net().eval()
"""


@pytest.mark.parametrize("case, message", [
    ("empty", "is empty"),
    ("onnx", "is an ONNX model"),
    ("garbage", "is not a readable PyTorch state_dict"),
    ("mismatch", "does not fit the model"),
    ("tensor", "holds a Tensor, not a state_dict"),
])
def test_bad_weights_are_one_clear_line(cli_runner, tiny_onnx, tmp_path, case, message):
    import torch

    src = tmp_path / "net.py"
    src.write_text(MODEL_PY)
    w = tmp_path / ("w.onnx" if case == "onnx" else "w.pt")
    if case == "empty":
        w.write_bytes(b"")
    elif case == "onnx":
        w.write_bytes(tiny_onnx.read_bytes())
    elif case == "garbage":
        w.write_bytes(b"\x00garbage" * 10)
    elif case == "mismatch":
        torch.save({"conv.weight": torch.zeros(5, 1, 3, 3), "conv.bias": torch.zeros(5)}, w)
    elif case == "tensor":
        torch.save(torch.zeros(3), w)
    out = tmp_path / "out"
    out.mkdir()
    res = invoke(cli_runner, ["export", f"{src}:make", "--weights", w, "-o", out / "m.onnx",
                              "--input-shape", "1,1,8,8"])
    assert res.exit_code == 1, res.output
    assert "weights file" in res.output and w.name in res.output and message in res.output, res.output
    _no_traceback(res)
    assert list(out.iterdir()) == []


def test_zoo_weights_mismatch_is_one_line(cli_runner, tmp_path):
    import torch

    w = tmp_path / "w.pt"
    torch.save({"model": {"nope": torch.zeros(1)}}, w)
    res = invoke(cli_runner, ["export", "voice-resnet", "--weights", w, "-o", tmp_path / "m.onnx"])
    assert res.exit_code == 1 and "does not fit the model" in res.output, res.output
    assert not (tmp_path / "m.onnx").exists()
