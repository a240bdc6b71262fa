"""Engine sidecar metadata (write/read/compare) and the TensorRT runner's loading errors, on CPU.

The comparison logic is pure and tested with fabricated sidecars and fabricated "current
environment" dicts; the runner's error paths use a fake ``tensorrt`` module whose
``deserialize_cuda_engine`` returns None, as the real one does on a version/GPU mismatch."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import fake_tensorrt
from conftest import invoke, listdir_names
from optkit.runtime import engine_meta as em
from optkit.common.errors import InputError, MissingDependency, RuntimeUnavailable
from optkit.common.fileio import sha256_file
from optkit.runtime.registry import make_runner
from optkit.runtime.tensorrt import TensorRTRunner, check_shape_in_profile

H100 = {"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def sidecar(**over):
    meta = em.make_sidecar(
        tensorrt_version="10.9.0.34", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
        precision="fp16", profiles=[{"input": "x", "min": [1, 4], "opt": [1, 4], "max": [8, 4]}],
        workspace_bytes=1 << 30, builder_flags=["TF32"], network_flags=["STRONGLY_TYPED"], opt_level=3,
        version_compatible=False, hardware_compatibility="none", source_onnx="model.onnx",
        source_onnx_sha256="a" * 64, built_onnx_sha256="b" * 64, engine_sha256="c" * 64,
        optkit_version="0.1.0", created="2026-01-01T00:00:00+00:00",
    )
    meta.update(over)
    return meta


# ---------------------------------------------------------------------------------------------
# sidecar write / read

def test_sidecar_roundtrip_atomic(tmp_path):
    engine = tmp_path / "m.engine"
    assert em.sidecar_path(engine).name == "m.engine.json"
    assert em.read_sidecar(engine) is None
    em.write_sidecar(engine, sidecar())
    assert listdir_names(tmp_path) == {"m.engine.json"}
    back = em.read_sidecar(engine)
    assert back == json.loads(json.dumps(sidecar()))
    for key in ("tensorrt_version", "gpu", "precision", "profiles", "workspace_bytes", "builder_flags",
                "version_compatible", "hardware_compatibility", "source_onnx_sha256", "engine_sha256",
                "optkit_version", "created"):
        assert key in back


@pytest.mark.parametrize("content, message", [("{not json", "not readable JSON"), ("[1, 2]", "not a JSON object")])
def test_read_sidecar_rejects_garbage(tmp_path, content, message):
    (tmp_path / "m.engine.json").write_text(content)
    with pytest.raises(InputError, match=message):
        em.read_sidecar(tmp_path / "m.engine")


# ---------------------------------------------------------------------------------------------
# compare

def test_same_environment_is_compatible():
    c = em.check_compatible(sidecar(), H100)
    assert c.ok and c.warnings == []


def test_tensorrt_version_mismatch():
    c = em.check_compatible(sidecar(tensorrt_version="10.8.0.43"), H100)
    assert not c.ok
    assert "built with TensorRT 10.8.0.43, this is TensorRT 10.9.0.34" in c.errors[0]
    msg = em.incompatibility_message("m.engine", c, sidecar(tensorrt_version="10.8.0.43"))
    assert "\n" not in msg and "rebuild" in msg and "optkit build-engine model.onnx -o m.engine" in msg


@pytest.mark.parametrize("built, current, vc, loads", [
    ("10.9.0.34", "10.9.0.34", False, True),
    ("10.9.0.34", "10.9.0.35", False, False),
    ("10.9.0.34", "10.12.0.36", False, False),
    ("10.9.0.34", "10.12.0.36", True, True),    # version-compatible: newer runtime, same major
    ("10.12.0.36", "10.9.0.34", True, False),   # never on an older runtime
    ("10.16.1.11", "11.1.0.106", True, True),   # 10.x VC engines run on 11.x
    ("11.1.0.106", "12.0.0.1", True, False),
    ("11.0.0.1", "11.4.0.106", True, True),
    ("garbage", "10.9.0.34", True, False),
])
def test_version_rules(built, current, vc, loads):
    assert em.version_loads(built, current, vc) is loads
    c = em.check_compatible(sidecar(tensorrt_version=built, version_compatible=vc),
                            {**H100, "tensorrt_version": current})
    assert c.ok is loads


def test_compute_capability_mismatch():
    current = {**H100, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"}
    c = em.check_compatible(sidecar(), current)
    assert not c.ok
    assert "compute capability 9.0 (NVIDIA H100 80GB HBM3), this GPU is 8.9 (NVIDIA L4)" in c.errors[0]


def test_same_compute_capability_other_name_warns():
    c = em.check_compatible(sidecar(), {**H100, "gpu_name": "NVIDIA H100 PCIe"})
    assert c.ok and "built on NVIDIA H100 80GB HBM3, this is NVIDIA H100 PCIe" in c.warnings[0]


@pytest.mark.parametrize("current_cc, ok", [("8.0", True), ("8.6", True), ("9.0", True), ("7.5", False)])
def test_ampere_plus(current_cc, ok):
    c = em.check_compatible(sidecar(hardware_compatibility="ampere_plus"), {**H100, "compute_capability": current_cc})
    assert c.ok is ok


@pytest.mark.parametrize("field", ["tensorrt_version", "format", "meta_version"])
def test_missing_required_field(field):
    meta = sidecar()
    del meta[field]
    c = em.check_compatible(meta, H100)
    assert not c.ok and f"lacks {field}" in c.errors[0]


def test_foreign_format_and_newer_meta_version():
    assert "format" in em.check_compatible(sidecar(format="something-else"), H100).errors[0]
    assert "newer than this optkit" in em.check_compatible(sidecar(meta_version=99), H100).errors[0]


def test_unknown_compute_capability_is_a_warning():
    c = em.check_compatible(sidecar(gpu={"name": None, "compute_capability": None}), H100)
    assert c.ok and "compute capability of the sidecar is unknown" in c.warnings[0]
    c = em.check_compatible(sidecar(), {**H100, "compute_capability": None})
    assert c.ok and "this machine" in c.warnings[0]


def test_missing_sidecar_is_a_warning():
    c = em.check_compatible(None, H100)
    assert c.ok and "no sidecar" in c.warnings[0]


# ---------------------------------------------------------------------------------------------
# runner loading paths

@pytest.fixture
def engine_file(tmp_path):
    p = tmp_path / "m.engine"
    p.write_bytes(b"NOT-A-REAL-PLAN")
    return p


def test_make_runner_picks_tensorrt_for_engine_suffixes(tmp_path):
    for suffix in (".engine", ".plan", ".trt"):
        p = tmp_path / f"m{suffix}"
        p.write_bytes(b"x")
        assert isinstance(make_runner(p), TensorRTRunner)


def test_activate_without_tensorrt(engine_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency, match=r"TensorRT .*not installed.*optkit\[tensorrt\]"):
        make_runner(engine_file).activate()


def test_deserialize_none_gives_clear_error(engine_file, monkeypatch):
    trt, rec = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt)
    runner = make_runner(engine_file)
    with pytest.raises(RuntimeUnavailable) as info:
        runner.activate()
    msg = str(info.value)
    assert "could not load engine m.engine" in msg and "expecting library version 10.8.0.43" in msg
    assert "rebuild" in msg and "\n" not in msg
    assert rec.deserialized == b"NOT-A-REAL-PLAN"  # no sidecar: a warning, and TensorRT was asked
    assert any("no sidecar" in w for w in runner.warnings)


def test_sidecar_mismatch_stops_before_deserialize(engine_file, monkeypatch):
    trt, rec = fake_tensorrt.make_fake_tensorrt(version="10.9.0.34")
    fake_tensorrt.install(monkeypatch, trt)
    em.write_sidecar(engine_file, sidecar(tensorrt_version="10.8.0.43"))
    with pytest.raises(RuntimeUnavailable, match=r"built with TensorRT 10.8.0.43, this is TensorRT 10.9.0.34.*rebuild"):
        make_runner(engine_file).activate()
    assert rec.deserialized is None


def test_sidecar_gpu_mismatch(engine_file, monkeypatch):
    trt, rec = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt,
                          {**fake_tensorrt.FAKE_DEVICE, "name": "NVIDIA A100", "compute_capability": "8.0"})
    em.write_sidecar(engine_file, sidecar())
    with pytest.raises(RuntimeUnavailable, match=r"compute capability 9.0 .* this GPU is 8.0 \(NVIDIA A100\)"):
        make_runner(engine_file).activate()
    assert rec.deserialized is None


def test_version_compatible_engine_allows_host_code(engine_file, monkeypatch):
    trt, rec = fake_tensorrt.make_fake_tensorrt(version="10.12.0.36")
    fake_tensorrt.install(monkeypatch, trt)
    em.write_sidecar(engine_file, sidecar(version_compatible=True, engine_sha256=sha256_file(engine_file)))
    with pytest.raises(RuntimeUnavailable, match="could not load"):
        make_runner(engine_file).activate()
    assert rec.deserialized is not None and rec.engine_host_code_allowed is True


def test_engine_changed_after_build_is_refused(engine_file, monkeypatch):
    """The sidecar records the engine's sha256; a file that no longer matches it never loads."""
    trt, rec = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt)
    em.write_sidecar(engine_file, sidecar(engine_sha256=sha256_file(engine_file)))
    engine_file.write_bytes(b"NOT-A-REAL-PLAN, edited")
    with pytest.raises(InputError, match="changed after the build"):
        make_runner(engine_file).activate()
    assert rec.deserialized is None


def test_check_sidecar_false_skips_comparison(engine_file, monkeypatch):
    trt, rec = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt)
    em.write_sidecar(engine_file, sidecar(tensorrt_version="1.0.0"))
    with pytest.raises(RuntimeUnavailable, match="could not load"):
        TensorRTRunner(engine_file, check_sidecar=False).activate()
    assert rec.deserialized is not None


def test_corrupt_sidecar_is_input_error(engine_file, monkeypatch):
    trt, _ = fake_tensorrt.make_fake_tensorrt()
    fake_tensorrt.install(monkeypatch, trt)
    em.sidecar_path(engine_file).write_text("{")
    with pytest.raises(InputError, match="not readable JSON"):
        make_runner(engine_file).activate()


def test_shape_in_profile():
    prof = ((1, 1, 40, 241), (1, 1, 40, 241), (8, 1, 40, 241))
    check_shape_in_profile("x", (8, 1, 40, 241), prof)
    with pytest.raises(InputError, match=r"batch 16 is outside the engine's profile 1..8"):
        check_shape_in_profile("x", (16, 1, 40, 241), prof)
    with pytest.raises(InputError, match="outside the engine's profile"):
        check_shape_in_profile("x", (2, 1, 40, 200), prof)
    with pytest.raises(InputError, match="rank 3"):
        check_shape_in_profile("x", (1, 40, 241), prof)


# ---------------------------------------------------------------------------------------------
# verify / bench of an engine without TensorRT: one line, exit 1

@pytest.mark.parametrize("command", ["verify", "bench"])
def test_cli_engine_without_tensorrt(cli_runner, tiny_onnx, monkeypatch, command):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tiny_onnx.parent / "tiny.engine"
    engine.write_bytes(b"plan")
    args = [command, engine]
    if command == "verify":
        args += ["--reference", tiny_onnx.parent / "tiny.reference.npz"]
    before = listdir_names(tiny_onnx.parent)
    res = invoke(cli_runner, args)
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "TensorRT" in errors[0] and "optkit[tensorrt]" in errors[0], res.stderr
    assert res.stderr.rstrip().endswith(errors[0]) and "Traceback" not in res.output
    assert listdir_names(tiny_onnx.parent) == before


def test_describe_reports_sidecar_fields(engine_file):
    runner = TensorRTRunner(engine_file)
    runner.meta = sidecar()
    d = runner.describe()
    assert d["runner"] == "tensorrt" and d["precision"] == "fp16"
    assert d["built_with_tensorrt"] == "10.9.0.34" and d["built_on_gpu"] == "NVIDIA H100 80GB HBM3"
    assert np.array(d["profiles"][0]["max"]).tolist() == [8, 4]


# ---------------------------------------------------------------------------------------------
# several optimization profiles: the runner picks the first that holds the input's length

def _profiled_runner(tmp_path):
    import fake_tensorrt

    trt, rec = fake_tensorrt.make_fake_tensorrt()
    profiles = [{"x": ((1, 1, 40, 100), (1, 1, 40, 241), (4, 1, 40, 400))},
                {"x": ((1, 1, 40, 300), (1, 1, 40, 700), (4, 1, 40, 1000))}]
    engine = fake_tensorrt.FakeEngine(trt, {"x": ("INPUT", (-1, 1, 40, -1)), "y": ("OUTPUT", (-1, 1))}, profiles)
    runner = TensorRTRunner(tmp_path / "m.engine")
    runner._trt, runner.engine = trt, engine
    runner._runner = fake_tensorrt.FakeTrtRunner(engine, rec)
    return runner, rec


def test_runner_picks_profile_per_length(tmp_path):
    from optkit.runtime.tensorrt import choose_profile

    runner, rec = _profiled_runner(tmp_path)
    assert runner.profiles(["x"])[1]["x"][2] == (4, 1, 40, 1000)
    for length, expected in [(241, 0), (350, 0), (500, 1), (1000, 1), (100, 0)]:
        y = runner.infer({"x": np.zeros((2, 1, 40, length), np.float32)})["y"]
        assert float(y[0, 0]) == expected, length  # the fake's output is the active profile
    assert rec.profile_switches == [1, 0]  # switched only when the length needed another profile
    assert [s["x"][3] for s in rec.inferred_shapes] == [241, 350, 500, 1000, 100]
    assert choose_profile({"x": (1, 1, 40, 350)}, runner.profiles(["x"])) == 0


def test_length_outside_every_profile_is_one_line(tmp_path):
    runner, rec = _profiled_runner(tmp_path)
    with pytest.raises(InputError) as err:
        runner.infer({"x": np.zeros((1, 1, 40, 1200), np.float32)})
    message = str(err.value)
    assert "\n" not in message and "outside every optimization profile" in message
    assert "0: x 1x1x40x100..4x1x40x400; 1: x 1x1x40x300..4x1x40x1000" in message
    assert rec.inferred_shapes == [] and rec.profile_switches == []
