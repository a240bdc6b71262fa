"""GPU tests: real TensorRT engines and ONNX Runtime GPU providers on the tiny model.

Every test is marked ``gpu`` and skips with the precise missing piece (no CUDA PyTorch, no GPU
visible, no tensorrt, no polygraphy, no onnxruntime-gpu). Run: ``pytest -m gpu -q -rs``.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest

from conftest import export_tiny, invoke, listdir_names

pytestmark = pytest.mark.gpu


def _torch_cuda_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}): torch.cuda.is_available() is False"
    return None


@pytest.fixture(scope="module")
def torch_cuda():
    reason = _torch_cuda_reason()
    if reason:
        pytest.skip(reason)
    import torch

    return torch


@pytest.fixture(scope="module")
def tensorrt_gpu():
    """TensorRT + Polygraphy + a CUDA device (found by any of optkit's probes)."""
    from optkit.runtime import gpu

    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed (needs NVIDIA's package index)")
    if importlib.util.find_spec("polygraphy") is None:
        pytest.skip("polygraphy is not installed (the TensorRT runner uses its TrtRunner)")
    dev = gpu.cuda_device()
    if not dev["available"]:
        pytest.skip(f"no CUDA device: {dev['reason']}")
    return gpu.import_tensorrt()


def _ort_provider_or_skip(ep: str) -> None:
    import onnxruntime as ort

    from optkit.runtime import gpu

    if ep not in ort.get_available_providers():
        pytest.skip(f"{ep} not available in onnxruntime {ort.__version__} (onnxruntime-gpu is not installed)")
    if ep == "TensorrtExecutionProvider":
        # onnxruntime-gpu always lists the TensorRT EP; it loads only where TensorRT's libraries are
        import ctypes.util

        if importlib.util.find_spec("tensorrt_libs") is None and ctypes.util.find_library("nvinfer") is None:
            pytest.skip("TensorrtExecutionProvider is listed but TensorRT's libraries (libnvinfer) are not installed")
    dev = gpu.cuda_device()
    if not dev["available"]:
        pytest.skip(f"no CUDA device: {dev['reason']}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gpu")
    export_tiny(d / "tiny.onnx")
    return d


def _cpu_outputs(model, x):
    from optkit.runtime.registry import make_runner

    with make_runner(model, provider="cpu") as r:
        return r.infer({"input_mfcc": x})["output_wvp"]


# ---------------------------------------------------------------------------------------------
# needs only a CUDA PyTorch

def test_gpu_status_reports_the_cuda_device(torch_cuda):
    from optkit.runtime.gpu import gpu_status

    st = gpu_status()
    dev = st["device"]
    major, minor = torch_cuda.cuda.get_device_capability(0)
    assert dev["available"] is True and dev["source"] == "torch"
    assert dev["name"] == torch_cuda.cuda.get_device_name(0)
    assert dev["compute_capability"] == f"{major}.{minor}"
    assert dev["count"] == torch_cuda.cuda.device_count()
    if importlib.util.find_spec("tensorrt") is None:
        assert st["tensorrt-engine"]["usable"] is False
        assert "not installed" in st["tensorrt-engine"]["reason"] and "GPU" not in st["tensorrt-engine"]["reason"]


def test_build_engine_without_tensorrt_names_tensorrt_not_the_gpu(torch_cuda, model_dir, cli_runner):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here: this checks the message when it is not")
    before = listdir_names(model_dir)
    res = invoke(cli_runner, ["build-engine", model_dir / "tiny.onnx", "-o", model_dir / "t.engine"])
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TensorRT" in lines[0] and "optkit[tensorrt]" in lines[0]
    assert "no CUDA GPU" not in lines[0]
    assert listdir_names(model_dir) == before


# ---------------------------------------------------------------------------------------------
# real TensorRT

@pytest.fixture(scope="module")
def fp32_engine(tensorrt_gpu, model_dir):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass

    step = get_pass("build-engine")
    cfg = step.make_config({"batch": "1:4:8", "timing_cache": str(model_dir / "trt.cache"), "opt_level": 3})
    res = step(Artifact.from_file(model_dir / "tiny.onnx"), cfg, model_dir / "tiny.engine")
    assert res.artifact is not None and res.skipped is None
    return res


def test_engine_runs_and_matches_ort_cpu(fp32_engine, model_dir):
    from optkit.common.errors import InputError
    from optkit.verification.reference import load_reference
    from optkit.runtime.registry import make_runner

    engine = model_dir / "tiny.engine"
    meta = json.loads((model_dir / "tiny.engine.json").read_text())
    assert meta["precision"] == "fp32" and meta["profiles"][0]["max"][0] == 8
    assert (model_dir / "trt.cache").stat().st_size > 0
    x = load_reference(model_dir / "tiny.reference.npz").inputs["input_mfcc"][:8]
    ref = _cpu_outputs(model_dir / "tiny.onnx", x)
    with make_runner(engine) as runner:
        assert [s.name for s in runner.inputs] == ["input_mfcc"] and runner.output_names == ["output_wvp"]
        d = runner.describe()
        assert d["precision"] == "fp32" and d["tensorrt"] == meta["tensorrt_version"] and d["warnings"] == []
        batch8 = runner.infer({"input_mfcc": x})["output_wvp"]
        singles = np.concatenate([runner.infer({"input_mfcc": x[i:i + 1]})["output_wvp"] for i in range(4)])
        with pytest.raises(InputError, match="outside the engine's profile"):
            runner.infer({"input_mfcc": np.zeros((16, *x.shape[1:]), np.float32)})
    assert batch8.shape == ref.shape
    # TF32 is on by default in TensorRT: fp32 engines are close, not bit-equal
    assert np.abs(batch8 - ref).max() < 5e-3
    assert np.abs(singles - ref[:4]).max() < 5e-3


def test_fp16_engine_matches_ort_cpu(tensorrt_gpu, model_dir, tmp_path):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass
    from optkit.verification.reference import load_reference
    from optkit.runtime.registry import make_runner

    step = get_pass("build-engine")
    out = tmp_path / "tiny.fp16.engine"
    res = step(Artifact.from_file(model_dir / "tiny.onnx"), step.make_config({"precision": "fp16"}), out)
    assert res.artifact.precision == "fp16"
    x = load_reference(model_dir / "tiny.reference.npz").inputs["input_mfcc"][:8]
    with make_runner(out) as runner:
        y = runner.infer({"input_mfcc": x})["output_wvp"]
        assert runner.describe()["precision"] == "fp16"
    assert np.abs(y - _cpu_outputs(model_dir / "tiny.onnx", x)).max() < 2e-2


def test_int8_engine_builds_and_runs(tensorrt_gpu, model_dir, tmp_path):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass
    from optkit.runtime.registry import make_runner

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(5)
    for i in range(16):
        np.save(calib / f"s{i}.npy", rng.standard_normal((1, 40, 241)).astype(np.float32))
    step = get_pass("build-engine")
    out = tmp_path / "tiny.int8.engine"
    cfg = step.make_config({"precision": "int8", "calibration": str(calib)})
    res = step(Artifact.from_file(model_dir / "tiny.onnx"), cfg, out)
    assert res.artifact.precision == "int8"
    x = rng.standard_normal((8, 1, 40, 241)).astype(np.float32)
    with make_runner(out) as runner:
        y = runner.infer({"input_mfcc": x})["output_wvp"]
    assert np.isfinite(y).all()
    assert np.abs(y - _cpu_outputs(model_dir / "tiny.onnx", x)).max() < 0.1


def test_real_load_failures_are_clear(fp32_engine, model_dir, tmp_path):
    from optkit.common.errors import RuntimeUnavailable
    from optkit.runtime.registry import make_runner

    # a sidecar from another TensorRT: refused before TensorRT is asked
    shutil.copy(model_dir / "tiny.engine", tmp_path / "old.engine")
    meta = json.loads((model_dir / "tiny.engine.json").read_text())
    meta["tensorrt_version"] = "8.6.1.6"
    (tmp_path / "old.engine.json").write_text(json.dumps(meta))
    with pytest.raises(RuntimeUnavailable, match="built with TensorRT 8.6.1.6.*rebuild"):
        make_runner(tmp_path / "old.engine").activate()
    # a damaged plan without sidecar: TensorRT's deserialize returns None -> clear error, no crash
    plan = bytearray((model_dir / "tiny.engine").read_bytes())
    plan[: len(plan) // 2] = bytes(len(plan) // 2)
    (tmp_path / "bad.engine").write_bytes(bytes(plan))
    with pytest.raises(RuntimeUnavailable, match="could not load engine bad.engine.*rebuild"):
        make_runner(tmp_path / "bad.engine").activate()


def test_cli_build_engine_real(tensorrt_gpu, model_dir, cli_runner, tmp_path):
    out = tmp_path / "cli.engine"
    res = invoke(cli_runner, ["build-engine", model_dir / "tiny.onnx", "-o", out, "--batch", "1:1:2",
                              "--opt-level", "1"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0 and (tmp_path / "cli.engine.json").exists()
    res = invoke(cli_runner, ["verify", out, "--reference", model_dir / "tiny.reference.npz", "--batch-size", "2"])
    assert res.exit_code in (0, 3), res.output  # 3 = a gate failed (fp32 gate vs TF32), not a crash


# ---------------------------------------------------------------------------------------------
# ONNX Runtime GPU providers

def test_ort_cuda_ep_matches_cpu(model_dir):
    _ort_provider_or_skip("CUDAExecutionProvider")
    from optkit.runtime.registry import make_runner
    from optkit.runtime.onnxruntime import ort_provider_options

    x = np.random.default_rng(0).standard_normal((4, 1, 40, 241)).astype(np.float32)
    with make_runner(model_dir / "tiny.onnx", provider="cuda", **ort_provider_options("cuda")) as r:
        y = r.infer({"input_mfcc": x})["output_wvp"]
        assert r.describe()["providers_in_use"][0] == "CUDAExecutionProvider"
        # the first run was profiled: every Conv/Gemm/MatMul ran on the CUDA EP (else it raised)
        placement = r.describe()["node_placement"]
        assert placement["heavy_cpu_share"] == 0.0
        assert placement["by_provider"]["CUDAExecutionProvider"]["heavy_nodes"] >= 4
    assert np.abs(y - _cpu_outputs(model_dir / "tiny.onnx", x)).max() < 5e-3


def test_ort_tensorrt_ep_matches_cpu(model_dir, tmp_path):
    _ort_provider_or_skip("TensorrtExecutionProvider")
    from optkit.runtime.registry import make_runner
    from optkit.runtime.onnxruntime import ort_provider_options

    opts = ort_provider_options("tensorrt", "fp32", cache_dir=tmp_path / "trt-ep", batch_range=(1, 4, 8),
                                input_name="input_mfcc", input_shape=(1, 40, 241))
    (tmp_path / "trt-ep").mkdir()
    x = np.random.default_rng(0).standard_normal((4, 1, 40, 241)).astype(np.float32)
    with make_runner(model_dir / "tiny.onnx", provider="tensorrt", **opts) as r:
        y = r.infer({"input_mfcc": x})["output_wvp"]
        assert r.describe()["providers_in_use"][0] == "TensorrtExecutionProvider"
    assert np.abs(y - _cpu_outputs(model_dir / "tiny.onnx", x)).max() < 5e-3
    assert any((tmp_path / "trt-ep").iterdir())  # the EP wrote its engine/timing cache


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-m", "gpu", "-q", "-rs"]))
