"""build-engine on CPU: bad inputs, the no-TensorRT paths (fail / skip), and optkit's TensorRT
wiring against a fake ``tensorrt`` module (flags, profiles, timing cache, sidecar, parser and
build error reporting). Real TensorRT builds are in test_gpu_device.py."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fake_tensorrt
from conftest import invoke, listdir_names
from optkit.model.artifact import Artifact
from optkit.common.errors import InputError, MissingDependency, PassFailed, RecipeError, RuntimeUnavailable
from optkit.passes import get_pass
from optkit.passes import build_engine as be


@pytest.fixture
def no_tensorrt(monkeypatch):
    """``import tensorrt`` fails, whatever is installed (None in sys.modules -> ImportError)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _one_line_error(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def _static_model(path: Path, shape=(1, 4)) -> Path:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _qdq_model(path: Path, zp_dtype=TensorProto.UINT8, zp_value=0) -> Path:
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s")
    np_zp = np.array(zp_value, dtype=np.uint8 if zp_dtype == TensorProto.UINT8 else np.int8)
    zp = numpy_helper.from_array(np_zp, "zp")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="q0"),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dq0")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [scale, zp])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


# ---------------------------------------------------------------------------------------------
# without TensorRT

def test_cli_without_tensorrt_fails_with_install_hint_and_writes_nothing(cli_runner, tiny_onnx, no_tensorrt):
    before = listdir_names(tiny_onnx.parent)
    out = tiny_onnx.parent / "tiny.engine"
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", out])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert "TensorRT" in line and "pip install 'optkit[tensorrt]'" in line
    assert listdir_names(tiny_onnx.parent) == before  # no engine, no sidecar, no temp file


def test_skip_path_returns_skipped_with_reason(tiny_onnx, no_tensorrt, tmp_path):
    step = get_pass("build-engine")
    cfg = step.make_config({"if_unavailable": "skip"})
    out = tmp_path / "m.engine"
    result = step(Artifact.from_file(tiny_onnx), cfg, out)
    assert result.artifact is None
    assert result.skipped and "TensorRT" in result.skipped and "optkit[tensorrt]" in result.skipped
    assert not out.exists() and not Path(str(out) + ".json").exists()


def test_fail_path_raises_missing_dependency(tiny_onnx, no_tensorrt, tmp_path):
    step = get_pass("build-engine")
    with pytest.raises(MissingDependency, match="TensorRT"):
        step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")


def test_skip_does_not_hide_bad_input(tmp_path, no_tensorrt):
    """'skip' is for a missing TensorRT/GPU only: a bad model is still an error."""
    step = get_pass("build-engine")
    bad = _static_model(tmp_path / "s.onnx")
    with pytest.raises(InputError, match="static batch"):
        step(Artifact.from_file(bad), step.make_config({"if_unavailable": "skip", "batch": "1:1:8"}),
                 tmp_path / "m.engine")


def test_gpu_without_tensorrt_says_tensorrt_is_missing(cli_runner, tiny_onnx, no_tensorrt, monkeypatch):
    from optkit.runtime import gpu

    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: dict(fake_tensorrt.FAKE_DEVICE))
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine"])
    line = _one_line_error(res)
    assert res.exit_code == 1 and "TensorRT" in line and "GPU" not in line.split(";")[0]


def test_tensorrt_without_gpu_says_gpu_is_missing(tiny_onnx, tmp_path, monkeypatch):
    trt, _ = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt, {"available": False, "reason": "torch: CPU-only build"})
    step = get_pass("build-engine")
    with pytest.raises(RuntimeUnavailable, match="no CUDA GPU is usable.*CPU-only build"):
        step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")
    res = step(Artifact.from_file(tiny_onnx), step.make_config({"if_unavailable": "skip"}), tmp_path / "m.engine")
    assert res.artifact is None and "no CUDA GPU" in res.skipped


def test_tensorrt_too_old(tiny_onnx, tmp_path, monkeypatch):
    trt, _ = fake_tensorrt.make_fake_tensorrt(version="8.6.1")
    fake_tensorrt.install(monkeypatch, trt)
    step = get_pass("build-engine")
    with pytest.raises(MissingDependency, match="TensorRT 8.6.1 is too old"):
        step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")


# ---------------------------------------------------------------------------------------------
# bad inputs (checked before TensorRT is looked for, so these run anywhere)

@pytest.mark.parametrize("args, code, message", [
    (["--batch", "1-8"], 2, "MIN:OPT:MAX"),
    (["--batch", "a:b:c"], 2, "integers"),
    (["--batch", "1:2"], 2, "MIN:OPT:MAX"),
    (["--batch", "4:2:8"], 2, "MIN <= OPT <= MAX"),
    (["--batch", "1:8:4"], 2, "MIN <= OPT <= MAX"),
    (["--batch", "0:1:8"], 2, "MIN must be >= 1"),
    (["--workspace", "lots"], 2, "not a size"),
    (["--opt-level", "7"], 2, "0<=x<=5"),
    (["--precision", "int4"], 2, "int4"),
])
def test_bad_options_are_usage_errors(cli_runner, tiny_onnx, no_tensorrt, args, code, message):
    before = listdir_names(tiny_onnx.parent)
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine", *args])
    assert res.exit_code == code, res.output
    assert message in res.stderr
    assert listdir_names(tiny_onnx.parent) == before


def test_missing_model(cli_runner, tmp_path, no_tensorrt):
    res = invoke(cli_runner, ["build-engine", tmp_path / "nope.onnx", "-o", tmp_path / "m.engine"])
    assert res.exit_code == 1
    assert "does not exist" in _one_line_error(res)
    assert listdir_names(tmp_path) == set()


def test_corrupt_model(cli_runner, tmp_path, no_tensorrt):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07this is not protobuf\xff\xff")
    res = invoke(cli_runner, ["build-engine", bad, "-o", tmp_path / "m.engine"])
    assert res.exit_code == 1
    assert "not a readable ONNX model" in _one_line_error(res)
    assert listdir_names(tmp_path) == {"bad.onnx"}


def test_output_dir_missing(cli_runner, tiny_onnx, no_tensorrt):
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "no" / "m.engine"])
    assert res.exit_code == 1
    assert "does not exist" in _one_line_error(res)
    assert not (tiny_onnx.parent / "no").exists()


def test_output_dir_unwritable(cli_runner, tiny_onnx, tmp_path, no_tensorrt, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    # CI runs as root, which chmod cannot lock out: simulate a read-only directory instead.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", ro / "m.engine"])
    assert res.exit_code == 1
    assert "not writable" in _one_line_error(res)
    assert listdir_names(ro) == set()


def test_static_batch_model_rejects_batch_range(cli_runner, tmp_path, no_tensorrt):
    model = _static_model(tmp_path / "s.onnx")
    res = invoke(cli_runner, ["build-engine", model, "-o", tmp_path / "m.engine", "--batch", "1:1:8"])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert "static batch of 1" in line and "dynamic batch axis" in line


def test_dynamic_non_batch_axis_rejected(cli_runner, tmp_path, no_tensorrt):
    model = _static_model(tmp_path / "d.onnx", shape=("batch", "width"))
    res = invoke(cli_runner, ["build-engine", model, "-o", tmp_path / "m.engine"])
    assert res.exit_code == 1
    assert "dynamic dimension 1" in _one_line_error(res)


def test_int8_from_fp32_needs_calibration(cli_runner, tiny_onnx, no_tensorrt):
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine", "--precision", "int8"])
    assert res.exit_code == 1
    assert "needs calibration data" in _one_line_error(res)
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine", "--precision", "int8",
                              "--calibration", tiny_onnx.parent / "nocalib"])
    assert res.exit_code == 1
    assert "does not exist" in _one_line_error(res)


def test_uint8_qdq_model_rejected_with_reason(cli_runner, tmp_path, no_tensorrt):
    model = _qdq_model(tmp_path / "q.onnx", TensorProto.UINT8, 128)
    res = invoke(cli_runner, ["build-engine", model, "-o", tmp_path / "m.engine"])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert "uses uint8" in line and "signed symmetric int8" in line


def test_int8_model_cannot_become_fp16(cli_runner, tmp_path, no_tensorrt):
    model = _qdq_model(tmp_path / "q.onnx", TensorProto.INT8, 0)
    res = invoke(cli_runner, ["build-engine", model, "-o", tmp_path / "m.engine", "--precision", "fp16"])
    assert res.exit_code == 1
    assert "already int8" in _one_line_error(res)


# ---------------------------------------------------------------------------------------------
# pure helpers

@pytest.mark.parametrize("text, expected", [("1:4:8", (1, 4, 8)), ("4", (4, 4, 4)), (" 2:2:2 ", (2, 2, 2)),
                                            (3, (3, 3, 3))])
def test_parse_batch(text, expected):
    assert be.parse_batch(text) == expected


@pytest.mark.parametrize("text, expected", [("1G", 1 << 30), ("512M", 512 << 20), ("2GiB", 2 << 30),
                                            ("1048576", 1 << 20), ("64k", 64 << 10), (4096, 4096)])
def test_parse_size(text, expected):
    assert be.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "1X", "-1G", "0"])
def test_parse_size_rejects(text):
    with pytest.raises(InputError):
        be.parse_size(text)


def test_input_profiles_default_and_explicit():
    from optkit.model.onnx_utils import TensorSpec

    specs = [TensorSpec("input_mfcc", ("batch", 1, 40, 241), "float32")]
    assert be.input_profiles(specs, None) == [
        {"input": "input_mfcc", "min": [1, 1, 40, 241], "opt": [1, 1, 40, 241], "max": [8, 1, 40, 241]}]
    assert be.input_profiles(specs, "2:4:16")[0]["max"] == [16, 1, 40, 241]
    static = [TensorSpec("x", (4, 3), "float32")]
    assert be.input_profiles(static, None)[0] == {"input": "x", "min": [4, 3], "opt": [4, 3], "max": [4, 3]}
    assert be.input_profiles(static, "4")[0]["opt"] == [4, 3]
    with pytest.raises(InputError, match="static batch of 4"):
        be.input_profiles(static, "1:4:8")


def test_qdq_problems():
    def model(zp_dtype, value, path_name):
        import tempfile

        d = Path(tempfile.mkdtemp())
        return onnx.load(_qdq_model(d / path_name, zp_dtype, value))

    assert be.tensorrt_qdq_problems(model(TensorProto.INT8, 0, "a.onnx")) == []
    assert any("non-zero zero point" in p for p in be.tensorrt_qdq_problems(model(TensorProto.INT8, 3, "b.onnx")))
    assert any("uint8" in p for p in be.tensorrt_qdq_problems(model(TensorProto.UINT8, 0, "c.onnx")))


def test_format_parser_error_one_line():
    err = fake_tensorrt.FakeParserError(_code=type("C", (), {"name": "UNSUPPORTED_NODE"})(),
                                        _desc="No importer registered for op: Foo.\n Attempting plugin",
                                        _node=12, _name="/block/Foo_3", _op="Foo")
    text = be.format_parser_error(err)
    assert text == ("node 12 '/block/Foo_3' (Foo): No importer registered for op: Foo. Attempting plugin "
                    "[UNSUPPORTED_NODE]")
    assert "\n" not in text
    model_level = be.format_parser_error(fake_tensorrt.FakeParserError(_code=None, _desc="bad file", _node=-1))
    assert model_level == "model: bad file"


def test_config_from_recipe_dict():
    step = get_pass("build-engine")
    cfg = step.make_config({"precision": "fp16", "batch": "1:4:8", "if_unavailable": "skip", "workspace": "2G"})
    assert (cfg.precision, cfg.batch, cfg.if_unavailable, cfg.workspace) == ("fp16", "1:4:8", "skip", "2G")
    with pytest.raises(RecipeError, match="if_unavailable"):
        step.make_config({"if_unavailable": "ignore"})
    with pytest.raises(RecipeError, match="unknown parameter"):
        step.make_config({"fp16": True})


def test_converter_configs_exist_as_used():
    """build-engine builds these configs for the fp16 / int8 conversion: keep them valid."""
    fp16 = get_pass("quantize-fp16").make_config({"keep_io_types": True})
    assert fp16.keep_io_types is True
    int8 = get_pass("quantize-int8").make_config({"target": "tensorrt", "calibration": "calib"})
    assert int8.target == "tensorrt"


# ---------------------------------------------------------------------------------------------
# optkit's TensorRT wiring, against the fake module

@pytest.fixture
def fake_build(monkeypatch):
    """Install a fake TensorRT; replace the engine self-check (it needs a GPU) by a recorder."""
    checked: list[bytes] = []

    def install(**kwargs):
        trt, rec = fake_tensorrt.make_fake_tensorrt(**kwargs)
        fake_tensorrt.install(monkeypatch, trt)
        return trt, rec

    monkeypatch.setattr(be, "self_check", lambda path, profiles, vc=False: checked.append(Path(path).read_bytes()))
    install.checked = checked
    return install


def test_fake_build_wires_flags_profiles_cache_and_sidecar(cli_runner, tiny_onnx, fake_build):
    trt, rec = fake_build()
    cache = tiny_onnx.parent / "trt.cache"
    cache.write_bytes(b"OLD")
    out = tiny_onnx.parent / "tiny.engine"
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", out, "--batch", "2:4:16", "--workspace", "512M",
                              "--opt-level", "5", "--timing-cache", cache])
    assert res.exit_code == 0, res.output
    assert "built tiny.engine: fp32 engine for NVIDIA H100" in res.output
    assert out.read_bytes() == b"FAKE-PLAN" and fake_build.checked == [b"FAKE-PLAN"]
    assert rec.network_flags == 1 << 5  # STRONGLY_TYPED bit only
    assert rec.pool_limits == {"WORKSPACE": 512 << 20} and rec.opt_level == 5
    assert rec.profiles == [{"profile": 0, "input": "input_mfcc", "min": [2, 1, 40, 241], "opt": [4, 1, 40, 241],
                             "max": [16, 1, 40, 241]}]
    assert "FP16" not in rec.builder_flags and "INT8" not in rec.builder_flags
    assert rec.timing_cache_in == b"OLD" and cache.read_bytes() == b"CACHE:OLD"
    meta = json.loads((tiny_onnx.parent / "tiny.engine.json").read_text())
    assert meta["tensorrt_version"] == "10.9.0.34" and meta["precision"] == "fp32"
    assert meta["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert meta["profiles"] == rec.profiles and meta["workspace_bytes"] == 512 << 20
    # TensorRT turns TF32 on by default; optkit clears it so an fp32 engine meets the fp32 gate
    assert "-TF32" in rec.builder_flags
    assert meta["network_flags"] == ["STRONGLY_TYPED"] and meta["builder_flags"] == []
    from optkit.common.fileio import sha256_file

    assert meta["source_onnx_sha256"] == sha256_file(tiny_onnx) == meta["built_onnx_sha256"]
    assert meta["engine_sha256"] == sha256_file(out)
    assert not [n for n in os.listdir(tiny_onnx.parent) if ".partial" in n]


def test_fake_build_tensorrt11_same_strongly_typed_path(tiny_onnx, fake_build, tmp_path):
    trt, rec = fake_build(version="11.1.0.106")
    assert not hasattr(trt.BuilderFlag, "FP16")
    step = get_pass("build-engine")
    res = step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")
    assert res.artifact.kind == "engine" and res.artifact.tool_versions["tensorrt"] == "11.1.0.106"
    assert rec.network_flags == 1 << 5
    assert rec.profiles[0]["min"][0] == 1 and rec.profiles[0]["max"][0] == 8  # default 1:1:8


def test_fake_build_tf32_on_request(tiny_onnx, fake_build, tmp_path):
    trt, rec = fake_build()
    step = get_pass("build-engine")
    step(Artifact.from_file(tiny_onnx), step.make_config({"tf32": True}), tmp_path / "m.engine")
    assert "-TF32" not in rec.builder_flags
    assert json.loads((tmp_path / "m.engine.json").read_text())["builder_flags"] == ["TF32"]


def test_fake_build_compatibility_flags(tiny_onnx, fake_build, tmp_path):
    trt, rec = fake_build()
    step = get_pass("build-engine")
    cfg = step.make_config({"version_compatible": True, "hardware_compatibility": "ampere_plus"})
    step(Artifact.from_file(tiny_onnx), cfg, tmp_path / "m.engine")
    assert "VERSION_COMPATIBLE" in rec.builder_flags and rec.hw_level == "AMPERE_PLUS"
    assert rec.parser_flags == ["NATIVE_INSTANCENORM"]
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["version_compatible"] is True and meta["hardware_compatibility"] == "ampere_plus"


def test_fake_parser_error_reported_with_node(cli_runner, tiny_onnx, fake_build):
    code = type("Code", (), {"name": "UNSUPPORTED_NODE"})()
    errors = [fake_tensorrt.FakeParserError(code, "No importer registered for op: Gelu", 7, "/act/Gelu", "Gelu"),
              fake_tensorrt.FakeParserError(code, "second", 9, "x", "Gelu")]
    fake_build(parser_errors=errors)
    before = listdir_names(tiny_onnx.parent)
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine"])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert ("TensorRT could not parse tiny.onnx: node 7 '/act/Gelu' (Gelu): No importer registered for op: Gelu "
            "[UNSUPPORTED_NODE] (+1 more parser errors)") in line
    assert listdir_names(tiny_onnx.parent) == before


def test_fake_build_failure_reports_logged_errors_and_leaves_nothing(cli_runner, tiny_onnx, fake_build):
    fake_build(build_errors=["Error Code 4: Network has dynamic or shape inputs, but no optimization profile",
                             "Error Code 4: Network validation failed."])
    cache = tiny_onnx.parent / "t.cache"
    cache.write_bytes(b"OLD")
    before = listdir_names(tiny_onnx.parent)
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", tiny_onnx.parent / "m.engine", "--timing-cache", cache])
    assert res.exit_code == 1
    line = _one_line_error(res)
    assert "could not build an engine from tiny.onnx" in line and "Network validation failed." in line
    assert "harmless warning" not in line
    assert listdir_names(tiny_onnx.parent) == before and cache.read_bytes() == b"OLD"


def test_fake_self_check_failure_leaves_no_engine(tiny_onnx, fake_build, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    fake_build()

    def broken(path, profiles, vc=False):
        raise PassFailed("the built engine produced NaN/Inf in output_wvp on a random input")

    monkeypatch.setattr(be, "self_check", broken)
    step = get_pass("build-engine")
    with pytest.raises(PassFailed, match="NaN"):
        step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")
    assert listdir_names(tmp_path) == set()


def test_fake_sidecar_failure_removes_engine(tiny_onnx, fake_build, tmp_path, monkeypatch):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    fake_build()
    import optkit.runtime.engine_meta as em

    def fail(path, meta, dest=None):
        raise InputError("could not write m.engine.json: disk full")

    monkeypatch.setattr(em, "write_sidecar", fail)
    step = get_pass("build-engine")
    with pytest.raises(InputError, match="disk full"):
        step(Artifact.from_file(tiny_onnx), step.make_config({}), tmp_path / "m.engine")
    assert listdir_names(tmp_path) == set()


def test_fake_mismatched_timing_cache_is_replaced(tiny_onnx, fake_build, tmp_path):
    fake_build(set_timing_cache_ok=False)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"FROM-ANOTHER-GPU")
    step = get_pass("build-engine")
    res = step(Artifact.from_file(tiny_onnx), step.make_config({"timing_cache": str(cache)}), tmp_path / "m.engine")
    assert any("does not match this GPU" in m for m in res.messages)
    assert cache.read_bytes() == b"CACHE:"  # a fresh cache replaced the foreign one


def test_fake_fp16_request_builds_the_fp16_model(tiny_onnx, fake_build, tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    """fp32 model + precision fp16: optkit's quantize-fp16 runs first; TensorRT parses an fp16 model."""
    trt, rec = fake_build()
    step = get_pass("build-engine")
    res = step(Artifact.from_file(tiny_onnx), step.make_config({"precision": "fp16"}), tmp_path / "m.engine")
    assert rec.onnx_precision == "fp16" and res.artifact.precision == "fp16"
    assert "FP16" not in rec.builder_flags  # precision from the ONNX dtypes, not a builder flag
    meta = json.loads((tmp_path / "m.engine.json").read_text())
    assert meta["precision"] == "fp16" and meta["built_onnx_sha256"] != meta["source_onnx_sha256"]
    assert listdir_names(tmp_path) == {"m.engine", "m.engine.json"}  # the converted model was temporary


def test_fake_int8_request_builds_tensorrt_form_qdq(tiny_onnx, fake_build, tmp_path, monkeypatch):
    trt, rec = fake_build()
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        np.save(calib / f"s{i}.npy", rng.standard_normal((1, 40, 241)).astype(np.float32))
    seen = {}
    real_parse = trt.OnnxParser.parse_from_file

    def parse_and_check(self, path):
        seen["problems"] = be.tensorrt_qdq_problems(onnx.load(path))
        return real_parse(self, path)

    monkeypatch.setattr(trt.OnnxParser, "parse_from_file", parse_and_check)
    step = get_pass("build-engine")
    cfg = step.make_config({"precision": "int8", "calibration": str(calib)})
    res = step(Artifact.from_file(tiny_onnx), cfg, tmp_path / "m.engine")
    assert rec.onnx_precision == "int8" and res.artifact.precision == "int8"
    assert seen["problems"] == []  # signed, zero-point-0 Q/DQ: what TensorRT accepts
    assert "INT8" not in rec.builder_flags


def test_output_parent_is_a_file(cli_runner, tiny_onnx, no_tensorrt):
    blocker = tiny_onnx.parent / "afile"
    blocker.write_text("x")
    res = invoke(cli_runner, ["build-engine", tiny_onnx, "-o", blocker / "m.engine"])
    assert res.exit_code == 1
    assert "is not a directory" in _one_line_error(res)
    assert blocker.read_text() == "x"


def test_self_check_deserializes_the_new_engine(tiny_onnx, tmp_path, monkeypatch):
    """The real self-check (not replaced here): a plan TensorRT cannot load is never kept."""
    trt, rec = fake_tensorrt.make_fake_tensorrt(deserialize_ok=False)
    fake_tensorrt.install(monkeypatch, trt)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    step = get_pass("build-engine")
    with pytest.raises(PassFailed, match="failed its self-check: TensorRT 10.9.0.34 could not load engine"):
        step(Artifact.from_file(tiny_onnx), step.make_config({"version_compatible": True}), out_dir / "m.engine")
    assert rec.deserialized == b"FAKE-PLAN" and rec.engine_host_code_allowed is True
    assert listdir_names(out_dir) == set()


# ---------------------------------------------------------------------------------------------
# optimization profiles for a dynamic time axis (issue 23 step 6)

def _timed_model(path: Path, length_range=(100, 1000), opt=241) -> Path:
    """input_mfcc (batch, 1, 40, length) -> mean, with the declared length range in its metadata."""
    from optkit.model.dynamic import DynamicAxis, write_dynamic_axes

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_mfcc"], ["output_wvp"], axes=[1, 2, 3], keepdims=0)], "g",
        [helper.make_tensor_value_info("input_mfcc", TensorProto.FLOAT, ["batch", 1, 40, "length"])],
        [helper.make_tensor_value_info("output_wvp", TensorProto.FLOAT, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    write_dynamic_axes(model, [DynamicAxis("input_mfcc", 3, "length", *length_range, opt=opt)])
    onnx.save(model, path)
    return path


def test_default_profile_from_declared_range(tmp_path):
    from optkit.model.dynamic import read_dynamic_axes
    from optkit.model.onnx_utils import io_specs

    model = onnx.load(_timed_model(tmp_path / "t.onnx"))
    inputs, _ = io_specs(model)
    lengths = be.declared_lengths(read_dynamic_axes(model))
    assert lengths == {"input_mfcc": {3: (100, 241, 1000)}}
    assert be.optimization_profiles(inputs, "1:2:4", (), lengths) == [
        {"profile": 0, "input": "input_mfcc", "min": [1, 1, 40, 100], "opt": [2, 1, 40, 241], "max": [4, 1, 40, 1000]}]
    # without a declared range the time axis is refused, naming the way out
    with pytest.raises(InputError, match="dynamic dimension 3 .* without a declared length range"):
        be.optimization_profiles(inputs, None, (), {})


def test_explicit_profiles_one_each(tmp_path):
    from optkit.model.dynamic import read_dynamic_axes
    from optkit.model.onnx_utils import io_specs

    model = onnx.load(_timed_model(tmp_path / "t.onnx"))
    inputs, _ = io_specs(model)
    lengths = be.declared_lengths(read_dynamic_axes(model))
    got = be.optimization_profiles(inputs, None, ("input_mfcc:1x1x40x100,1x1x40x241,1x1x40x400",
                                                  "input_mfcc:1x1x40x401,4x1x40x600,8x1x40x1000"), lengths)
    assert [(p["profile"], p["min"][3], p["opt"][3], p["max"][3]) for p in got] == [(0, 100, 241, 400),
                                                                                   (1, 401, 600, 1000)]
    assert got[1]["max"][0] == 8
    for bad, message in [("input_mfcc:1x1x40x50,1x1x40x241,1x1x40x400", "leaves the model's declared length range"),
                         ("input_mfcc:1x2x40x100,1x2x40x241,1x2x40x400", "dimension 1 of input_mfcc is fixed at 1"),
                         ("nope:1x1x40x100,1x1x40x241,1x1x40x400", "no input 'nope'"),
                         ("input_mfcc:1x40x100,1x40x241,1x40x400", "rank 4"),
                         ("input_mfcc:1x1x40x300,1x1x40x241,1x1x40x400", "MIN <= OPT <= MAX"),
                         ("input_mfcc:1x1x40x100,1x1x40x241", "NAME:MIN,OPT,MAX"),
                         ("input_mfcc:1x1x40xa,1x1x40x241,1x1x40x400", "integers joined by x")]:
        with pytest.raises(InputError, match=message):
            be.optimization_profiles(inputs, None, (bad,), lengths)


def test_fake_build_several_profiles_recorded_in_sidecar(cli_runner, tmp_path, fake_build):
    trt, rec = fake_build()
    src = _timed_model(tmp_path / "t.onnx")
    out = tmp_path / "t.engine"
    res = invoke(cli_runner, ["build-engine", src, "-o", out, "--profile", "input_mfcc:1x1x40x100,1x1x40x241,1x1x40x400",
                              "--profile", "input_mfcc:1x1x40x401,1x1x40x700,8x1x40x1000"])
    assert res.exit_code == 0, res.output
    assert rec.profile_count == 2
    assert [(p["profile"], p["min"], p["opt"], p["max"]) for p in rec.profiles] == [
        (0, [1, 1, 40, 100], [1, 1, 40, 241], [1, 1, 40, 400]),
        (1, [1, 1, 40, 401], [1, 1, 40, 700], [8, 1, 40, 1000])]
    meta = json.loads((tmp_path / "t.engine.json").read_text())
    assert meta["profiles"] == rec.profiles
    assert "optimization profiles: 0: input_mfcc 1x1x40x100..1x1x40x400" in res.output


def test_fake_build_default_profile_spans_declared_range(cli_runner, tmp_path, fake_build):
    trt, rec = fake_build()
    src = _timed_model(tmp_path / "t.onnx", length_range=(120, 900), opt=300)
    res = invoke(cli_runner, ["build-engine", src, "-o", tmp_path / "t.engine", "--batch", "1:1:4"])
    assert res.exit_code == 0, res.output
    assert rec.profiles == [{"profile": 0, "input": "input_mfcc", "min": [1, 1, 40, 120], "opt": [1, 1, 40, 300],
                             "max": [4, 1, 40, 900]}]


def test_bad_profile_is_one_line_and_nothing_written(cli_runner, tmp_path, fake_build):
    fake_build()
    src = _timed_model(tmp_path / "t.onnx")
    before = set(os.listdir(tmp_path))
    res = invoke(cli_runner, ["build-engine", src, "-o", tmp_path / "t.engine",
                              "--profile", "input_mfcc:1x1x40x10,1x1x40x241,1x1x40x400"])
    assert res.exit_code == 1
    assert "leaves the model's declared length range 100..1000" in _one_line_error(res)
    assert set(os.listdir(tmp_path)) == before
