"""ONNX Runtime CUDA / TensorRT execution providers and optkit.runtime.gpu, on CPU.

Provider options are plain dicts; fallback detection is tested by replacing onnxruntime's
get_available_providers / InferenceSession with fakes (no GPU needed)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import fake_tensorrt
from conftest import invoke, listdir_names
from optkit.runtime import gpu
from optkit.common.errors import InputError, RuntimeUnavailable
from optkit.runtime.registry import make_runner
from optkit.runtime.onnxruntime import OnnxRuntimeRunner, ort_provider_options, provider_chain

ALL_GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


# ---------------------------------------------------------------------------------------------
# provider options

def test_cuda_options():
    assert ort_provider_options("cuda", device_id=1) == {
        "cuda_options": {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": 0}}


def test_tensorrt_options_full():
    opts = ort_provider_options("tensorrt", precision="fp16", cache_dir="cache", batch_range=(1, 4, 8),
                                input_name="input_mfcc", input_shape=(1, 40, 241), workspace_bytes=2 << 30,
                                tensorrt_major=10)
    trt = opts["tensorrt_options"]
    assert trt["trt_fp16_enable"] is True and "trt_int8_enable" not in trt
    assert trt["trt_max_workspace_size"] == 2 << 30 and trt["device_id"] == 0
    assert trt["trt_engine_cache_enable"] is True and trt["trt_engine_cache_path"] == "cache"
    assert trt["trt_timing_cache_enable"] is True and trt["trt_timing_cache_path"] == "cache"
    assert trt["trt_profile_min_shapes"] == "input_mfcc:1x1x40x241"
    assert trt["trt_profile_opt_shapes"] == "input_mfcc:4x1x40x241"
    assert trt["trt_profile_max_shapes"] == "input_mfcc:8x1x40x241"
    assert opts["cuda_options"]["device_id"] == 0  # CUDA EP is registered behind TensorRT


def test_tensorrt_precision_flags_follow_the_tensorrt_version():
    assert ort_provider_options("tensorrt", "int8", tensorrt_major=10)["tensorrt_options"]["trt_int8_enable"] is True
    for precision in ("fp16", "int8"):
        trt = ort_provider_options("tensorrt", precision, tensorrt_major=11)["tensorrt_options"]
        assert "trt_fp16_enable" not in trt and "trt_int8_enable" not in trt  # TRT 11: dtypes of the model
    trt = ort_provider_options("tensorrt", "fp32", tensorrt_major=10)["tensorrt_options"]
    assert "trt_fp16_enable" not in trt and "trt_int8_enable" not in trt


@pytest.mark.parametrize("kwargs, message", [
    ({"provider": "cpu"}, "cuda and tensorrt"),
    ({"provider": "tensorrt", "precision": "int4"}, "int4"),
    ({"provider": "tensorrt", "batch_range": (4, 2, 8), "input_name": "x", "input_shape": (3,)}, "MIN <= OPT"),
    ({"provider": "tensorrt", "batch_range": (1, 2, 8)}, "input name"),
])
def test_provider_options_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        ort_provider_options(**kwargs)


def test_provider_chain_registers_cuda_behind_tensorrt():
    opts = ort_provider_options("tensorrt", tensorrt_major=10)
    chain = provider_chain("tensorrt", opts)
    assert [c[0] if isinstance(c, tuple) else c for c in chain] == ALL_GPU
    assert chain[0][1] == opts["tensorrt_options"] and chain[1][1] == opts["cuda_options"]


# ---------------------------------------------------------------------------------------------
# without onnxruntime-gpu

@pytest.mark.parametrize("provider, ep", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_gpu_provider_without_onnxruntime_gpu(tiny_onnx, monkeypatch, provider, ep):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeUnavailable) as info:
        make_runner(tiny_onnx, provider=provider).activate()
    msg = str(info.value)
    assert ep in msg and "onnxruntime-gpu" in msg and "never install both" in msg and "\n" not in msg


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_cli_cuda_provider_without_onnxruntime_gpu(cli_runner, tiny_onnx, monkeypatch, command):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    args = [command, tiny_onnx, "--provider", "cuda"]
    if command == "verify":
        args += ["--reference", tiny_onnx.parent / "tiny.reference.npz"]
    before = listdir_names(tiny_onnx.parent)
    res = invoke(cli_runner, args)
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "CUDAExecutionProvider" in errors[0] and "onnxruntime-gpu" in errors[0]
    assert listdir_names(tiny_onnx.parent) == before


# ---------------------------------------------------------------------------------------------
# fallback detection with a fake InferenceSession

class FakeSession:
    """Records the providers optkit asked for; reports the ones 'in use' chosen by the test."""

    created: list = []
    in_use: list[str] = ["CPUExecutionProvider"]

    def __init__(self, path, sess_options=None, providers=None):
        FakeSession.created.append(providers)

    def get_providers(self):
        return list(FakeSession.in_use)


@pytest.fixture
def fake_ort(monkeypatch):
    import onnxruntime as ort

    FakeSession.created = []
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL_GPU))
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


@pytest.mark.parametrize("provider, in_use, fell_to", [
    ("cuda", ["CPUExecutionProvider"], "CPUExecutionProvider"),
    ("tensorrt", ["CPUExecutionProvider"], "CPUExecutionProvider"),
    ("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"], "CUDAExecutionProvider"),
])
def test_fallback_is_detected(tiny_onnx, fake_ort, provider, in_use, fell_to):
    fake_ort.in_use = in_use
    with pytest.raises(RuntimeUnavailable, match=f"fell back to {fell_to} instead of") as info:
        OnnxRuntimeRunner(tiny_onnx, provider=provider).activate()
    assert "refusing to report its numbers as GPU numbers" in str(info.value)


def test_no_fallback_activates_with_default_options(tiny_onnx, fake_ort):
    fake_ort.in_use = list(ALL_GPU)
    runner = OnnxRuntimeRunner(tiny_onnx, provider="tensorrt")
    runner.activate()
    chain = fake_ort.created[-1]
    assert chain[0][0] == "TensorrtExecutionProvider"
    assert chain[0][1]["trt_max_workspace_size"] == 1 << 30 and "trt_fp16_enable" not in chain[0][1]  # fp32 model
    assert runner.describe()["providers_in_use"][0] == "TensorrtExecutionProvider"
    assert "tensorrt_options" in runner.describe()["provider_options"]


def test_explicit_options_reach_the_session(tiny_onnx, fake_ort, tmp_path):
    fake_ort.in_use = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    opts = ort_provider_options("cuda", device_id=0, cudnn_conv_algo_search="HEURISTIC")
    make_runner(tiny_onnx, provider="cuda", **opts).activate()
    assert fake_ort.created[-1][0] == ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": 0})


@pytest.fixture
def fp16_model(tiny_onnx, tmp_path):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass

    fp16 = tmp_path / "m.fp16.onnx"
    step = get_pass("quantize-fp16")
    step(Artifact.from_file(tiny_onnx), step.make_config({}), fp16)  # runs the real ORT: before fake_ort
    return fp16


def test_fp16_model_gets_fp16_flag_on_tensorrt10(fp16_model, fake_ort, monkeypatch):
    monkeypatch.setattr(gpu, "tensorrt_major_for_ort", lambda: 10)
    fp16 = fp16_model
    fake_ort.in_use = list(ALL_GPU)
    OnnxRuntimeRunner(fp16, provider="tensorrt").activate()
    assert fake_ort.created[-1][0][1]["trt_fp16_enable"] is True


# ---------------------------------------------------------------------------------------------
# optkit.runtime.gpu

def _check_entries(status):
    for key in ("cpu", "cuda", "tensorrt", "tensorrt-engine"):
        entry = status[key]
        assert set(entry) == {"usable", "reason", "install_hint"}
        assert isinstance(entry["usable"], bool) and entry["reason"]
        assert bool(entry["install_hint"]) is (not entry["usable"])


def test_gpu_status_without_gpu_pieces(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: {"available": False, "reason": "nvidia-smi: not found"})
    st = gpu.gpu_status()
    _check_entries(st)
    assert st["cpu"]["usable"] is True
    assert st["cuda"]["usable"] is False and "onnxruntime-gpu" in st["cuda"]["install_hint"]
    assert st["tensorrt"]["usable"] is False
    assert st["tensorrt-engine"]["usable"] is False and "optkit[tensorrt]" in st["tensorrt-engine"]["install_hint"]


def test_gpu_status_with_fake_gpu_stack(monkeypatch):
    import onnxruntime as ort

    trt, _ = fake_tensorrt.make_fake_tensorrt(version="10.9.0.34")
    fake_tensorrt.install(monkeypatch, trt)
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL_GPU))
    monkeypatch.setattr(gpu, "tensorrt_major_for_ort", lambda: 10)
    st = gpu.gpu_status()
    _check_entries(st)
    assert all(st[k]["usable"] for k in ("cuda", "tensorrt", "tensorrt-engine"))
    assert "NVIDIA H100 80GB HBM3 (compute 9.0" in st["cuda"]["reason"]
    assert "TensorRT 10.9.0.34" in st["tensorrt-engine"]["reason"]


def test_gpu_status_provider_listed_but_no_gpu_or_libs(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(ALL_GPU))
    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: {"available": False, "reason": "torch: sees no GPU"})
    st = gpu.gpu_status()
    assert st["cuda"]["usable"] is False and "sees no GPU" in st["cuda"]["reason"]
    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: dict(fake_tensorrt.FAKE_DEVICE))
    monkeypatch.setattr(gpu, "tensorrt_major_for_ort", lambda: None)
    st = gpu.gpu_status()
    assert st["cuda"]["usable"] is True
    assert st["tensorrt"]["usable"] is False and "libnvinfer" in st["tensorrt"]["reason"]


def test_cuda_device_on_this_machine_gives_a_reason_or_a_device():
    dev = gpu.cuda_device()
    if dev["available"]:
        assert dev["name"] and "." in dev["compute_capability"]
    else:
        assert dev["reason"] and "torch" in dev["reason"]


def test_cuda_device_trusts_a_cuda_torch_that_sees_no_gpu(monkeypatch):
    """nvidia-smi ignores CUDA_VISIBLE_DEVICES: when a CUDA torch sees no GPU, do not ask it."""
    called = []

    def fake_torch_probe(index, reasons):
        reasons.append("torch: CUDA build 2.11 (CUDA 12.8) sees no GPU")

    monkeypatch.setattr(gpu, "_probe_torch", fake_torch_probe)
    monkeypatch.setattr(gpu, "_probe_nvidia_smi", lambda i, r: called.append(i) or {"name": "x"})
    monkeypatch.setattr(gpu, "_probe_cuda_python", lambda i, r: called.append(i) or None)
    dev = gpu.cuda_device()
    assert dev["available"] is False and called == []


def test_importing_gpu_modules_pulls_no_heavy_dependency():
    code = ("import sys, optkit.runtime.gpu, optkit.runtime.engine_meta, optkit.runtime.tensorrt, optkit.runtime.onnxruntime, "
            "optkit.passes.build_engine, optkit.cli.engine_cmd; "
            "heavy = {'torch', 'onnxruntime', 'tensorrt', 'polygraphy', 'onnx'} & set(sys.modules); "
            "print(sorted(heavy)); sys.exit(1 if heavy else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
