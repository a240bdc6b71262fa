"""OpenVINORunner on the tiny model: fp32 and QDQ int8, precision hints read back, dynamic batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optkit.common.errors import InputError
from optkit.verification.reference import load_reference, reference_path_for

pytest.importorskip("openvino", reason="openvino is not installed")

from optkit.runtime.registry import make_runner  # noqa: E402
from optkit.runtime.openvino import OpenVINORunner  # noqa: E402


def _ref(tiny_onnx: Path):
    ref = load_reference(reference_path_for(tiny_onnx))
    return ref.inputs["input_mfcc"], ref.outputs["output_wvp"]


def test_fp32_matches_reference_and_reports_f32(tiny_onnx):
    x, y = _ref(tiny_onnx)
    runner = make_runner(tiny_onnx, provider="openvino", threads=2)
    assert isinstance(runner, OpenVINORunner)
    with runner:
        got = runner.infer({"input_mfcc": x})["output_wvp"]
        desc = runner.describe()
    assert got.shape == y.shape
    np.testing.assert_allclose(got, y, atol=1e-5, rtol=1e-4)
    assert desc["requested"]["precision_hint"] == "f32"
    assert desc["in_effect"]["precision_hint"] == "f32"
    assert desc["in_effect"]["performance_hint"] == "LATENCY"
    assert desc["in_effect"]["inference_num_threads"] == 2
    assert desc["device"] == "CPU" and desc["device_name"]
    assert desc["openvino"][0].isdigit()


def test_matches_onnxruntime_at_batch_1_and_4(tiny_onnx):
    x, _ = _ref(tiny_onnx)
    with make_runner(tiny_onnx, provider="cpu", threads=2) as ort, OpenVINORunner(tiny_onnx, threads=2) as ov:
        assert ov.inputs[0].name == "input_mfcc" and ov.inputs[0].shape[0] is None
        assert ov.output_names == ["output_wvp"]
        for batch in (1, 4, 1):  # back to batch 1: the cached compiled model is reused
            feed = {"input_mfcc": x[:batch]}
            got = ov.infer(feed)["output_wvp"]
            assert got.shape == (batch, 1)
            np.testing.assert_allclose(got, ort.infer(feed)["output_wvp"], atol=1e-5, rtol=1e-4)
        assert len(ov._compiled) == 2


def test_precision_and_hint_options_are_applied(tiny_onnx):
    with OpenVINORunner(tiny_onnx, threads=1, precision="default", performance_hint="THROUGHPUT") as ov:
        eff = ov.describe()["in_effect"]
    assert eff["performance_hint"] == "THROUGHPUT"
    assert eff["precision_hint"] in ("f32", "bf16", "f16")  # the plugin's own choice, read back
    with OpenVINORunner(tiny_onnx, precision="f32", performance_hint="none") as ov:
        cfg = ov.compile_config()
        assert "PERFORMANCE_HINT" not in cfg and "INFERENCE_NUM_THREADS" not in cfg
        assert ov.describe()["in_effect"]["precision_hint"] == "f32"


def test_qdq_int8_model_runs_close_to_reference(tiny_onnx, calib_dir, tmp_path):
    from onnxruntime import quantization as q

    from optkit.data.source import load_samples

    xs = load_samples(calib_dir, sample_shape=(1, 40, 241)).x

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.it = iter(xs[i:i + 1] for i in range(len(xs)))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input_mfcc": x}

    int8 = tmp_path / "tiny.int8.onnx"
    q.quantize_static(str(tiny_onnx), str(int8), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, per_channel=True)
    x, y = _ref(tiny_onnx)
    with OpenVINORunner(int8, threads=2) as ov:
        got = ov.infer({"input_mfcc": x[:4]})["output_wvp"]
        assert ov.describe()["in_effect"]["precision_hint"] == "f32"
    assert np.isfinite(got).all()
    err = np.abs(got - y[:4]).max()
    assert err < 0.05, err  # int8 of a sigmoid output in [0, 1]
    assert err > 0  # it really ran quantized


@pytest.mark.parametrize("content", [b"", b"not a model at all"])
def test_unreadable_model_is_an_input_error(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="bad.onnx"):
        with OpenVINORunner(bad):
            pass


def test_missing_model_and_bad_options(tmp_path, tiny_onnx):
    with pytest.raises(InputError, match="does not exist"):
        with OpenVINORunner(tmp_path / "nope.onnx"):
            pass
    with pytest.raises(InputError, match="precision hint"):
        OpenVINORunner(tiny_onnx, precision="int4")
    with pytest.raises(InputError, match="performance hint"):
        OpenVINORunner(tiny_onnx, performance_hint="FASTEST")


def test_wrong_input_shape_dtype_and_name(tiny_onnx):
    with OpenVINORunner(tiny_onnx) as ov:
        with pytest.raises(InputError, match="shape"):
            ov.infer({"input_mfcc": np.zeros((1, 1, 40, 100), np.float32)})
        with pytest.raises(InputError, match="dtype"):
            ov.infer({"input_mfcc": np.zeros((1, 1, 40, 241), np.float64)})
        with pytest.raises(InputError, match="missing input input_mfcc"):
            ov.infer({"x": np.zeros((1, 1, 40, 241), np.float32)})


def test_missing_openvino_is_a_missing_dependency(monkeypatch, tiny_onnx):
    import sys

    from optkit.common.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(MissingDependency, match="openvino"):
        with OpenVINORunner(tiny_onnx):
            pass
