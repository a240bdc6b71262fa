"""What can run here: CUDA device, ONNX Runtime GPU providers, the TensorRT Python API.

``gpu_status()`` is what ``optkit doctor`` prints; the build-engine pass and the TensorRT runner
use the same probes, so "doctor says usable" and "build-engine runs" cannot disagree.

Nothing here imports torch, onnxruntime or tensorrt at module import time: the GPU check
environment may lack any of them, and ``import optkit.runtime.gpu`` must still work there.
"""
from __future__ import annotations

import collections
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
from typing import Any

from optkit.common.errors import MissingDependency, RuntimeUnavailable
from optkit.common.lazy import install_hint

ORT_GPU_HINT = (
    "install onnxruntime-gpu in a separate environment (it replaces onnxruntime; never install "
    "both): pip install 'optkit[gpu]'"
)
TENSORRT_HINT = install_hint("tensorrt")
CUDA_HINT = (
    "run on a machine with an NVIDIA GPU and driver; check nvidia-smi and CUDA_VISIBLE_DEVICES"
)
MIN_TENSORRT_MAJOR = 10

# Distributions that carry the TensorRT libraries, in the order pip users meet them.
_TENSORRT_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-libs", "tensorrt-cu12-libs",
                   "tensorrt-libs", "tensorrt_libs")


def cuda_device(index: int = 0) -> dict[str, Any]:
    """Describe CUDA device ``index`` as this process sees it.

    Returns ``{"available": True, "name", "compute_capability": "9.0", "total_memory_bytes",
    "count", "source"}`` or ``{"available": False, "reason": ...}``. Probes, in order: PyTorch
    (honours CUDA_VISIBLE_DEVICES), cuda-python (the tensorrt extra installs it), nvidia-smi.
    A CUDA build of PyTorch that sees no device is trusted: nvidia-smi ignores
    CUDA_VISIBLE_DEVICES and would report a GPU this process cannot use.
    """
    reasons: list[str] = []
    info = _probe_torch(index, reasons)
    if info is None and not any(r.startswith("torch:") and "CUDA build" in r for r in reasons):
        info = _probe_cuda_python(index, reasons) or _probe_nvidia_smi(index, reasons)
    if info is not None:
        return {"available": True, **info}
    return {"available": False, "reason": "; ".join(reasons) or "no CUDA probe available"}


def _probe_torch(index: int, reasons: list[str]) -> dict[str, Any] | None:
    if importlib.util.find_spec("torch") is None:
        reasons.append("torch: not installed")
        return None
    try:
        torch = importlib.import_module("torch")
        if torch.version.cuda is None:
            reasons.append(f"torch: {torch.__version__} is a CPU-only build")
            return None
        if not torch.cuda.is_available():
            reasons.append(f"torch: CUDA build {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
            return None
        count = torch.cuda.device_count()
        if index >= count:
            reasons.append(f"torch: device {index} requested but only {count} visible")
            return None
        major, minor = torch.cuda.get_device_capability(index)
        props = torch.cuda.get_device_properties(index)
        return {
            "name": torch.cuda.get_device_name(index),
            "compute_capability": f"{major}.{minor}",
            "total_memory_bytes": int(props.total_memory),
            "count": count,
            "source": "torch",
        }
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install is "not usable", with the reason
        reasons.append(f"torch: {type(exc).__name__}: {exc}")
        return None


def _cudart() -> Any | None:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python >= 12.6 / older layout
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001
            continue
    return None


def _ok(err: Any) -> bool:
    return int(getattr(err, "value", err)) == 0


def _probe_cuda_python(index: int, reasons: list[str]) -> dict[str, Any] | None:
    cudart = _cudart()
    if cudart is None:
        reasons.append("cuda-python: not installed")
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if not _ok(err) or count <= index:
            reasons.append(f"cuda-python: cudaGetDeviceCount -> {err}, {count if _ok(err) else 0} devices")
            return None
        err, props = cudart.cudaGetDeviceProperties(index)
        if not _ok(err):
            reasons.append(f"cuda-python: cudaGetDeviceProperties -> {err}")
            return None
        name = props.name
        name = name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
        return {
            "name": name,
            "compute_capability": f"{props.major}.{props.minor}",
            "total_memory_bytes": int(props.totalGlobalMem),
            "count": int(count),
            "source": "cuda-python",
        }
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"cuda-python: {type(exc).__name__}: {exc}")
        return None


def _probe_nvidia_smi(index: int, reasons: list[str]) -> dict[str, Any] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        reasons.append("nvidia-smi: not found")
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
        rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
        if len(rows) <= index:
            reasons.append(f"nvidia-smi: {len(rows)} GPUs listed")
            return None
        name, cc, mem_mib = rows[index][:3]
        return {
            "name": name,
            "compute_capability": cc,
            "total_memory_bytes": int(float(mem_mib)) * (1 << 20),
            "count": len(rows),
            "source": "nvidia-smi",
        }
    except Exception as exc:  # noqa: BLE001
        reasons.append(f"nvidia-smi: {type(exc).__name__}: {exc}")
        return None


def tensorrt_version() -> str | None:
    """The installed TensorRT version, read from distribution metadata (nothing is imported)."""
    for dist in _TENSORRT_DISTS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def tensorrt_major_for_ort() -> int | None:
    """The TensorRT major version ONNX Runtime's TensorRT EP would load, if it can be told.

    From the pip metadata, else from the system's libnvinfer soname (``libnvinfer.so.10``).
    None when unknown.
    """
    version = tensorrt_version()
    if version:
        try:
            return int(version.split(".")[0])
        except ValueError:
            return None
    lib = ctypes.util.find_library("nvinfer")
    if lib and ".so." in lib:
        try:
            return int(lib.rsplit(".so.", 1)[1].split(".")[0])
        except ValueError:
            return None
    return None


def import_tensorrt() -> Any:
    """Import the TensorRT Python API (>= 10) or raise MissingDependency with an install hint."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise MissingDependency(
            f"TensorRT (the tensorrt Python package) is not installed here ({exc}); {TENSORRT_HINT}"
        ) from exc
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        raise MissingDependency(
            f"TensorRT {version} is too old: optkit needs TensorRT >= {MIN_TENSORRT_MAJOR}; {TENSORRT_HINT}"
        )
    return trt


def require_tensorrt_gpu() -> tuple[Any, dict[str, Any]]:
    """TensorRT module + CUDA device info, or MissingDependency (no TensorRT) /
    RuntimeUnavailable (TensorRT but no GPU). TensorRT is checked first, so a GPU machine
    without TensorRT is told that TensorRT, not the GPU, is missing."""
    trt = import_tensorrt()
    device = cuda_device()
    if not device["available"]:
        raise RuntimeUnavailable(
            f"TensorRT {trt.__version__} is installed but no CUDA GPU is usable ({device['reason']}); {CUDA_HINT}"
        )
    return trt, device


def unavailable_reason_tensorrt() -> tuple[type[Exception], str] | None:
    """(error class, one-line reason) when TensorRT engines cannot be built/run here, else None."""
    try:
        require_tensorrt_gpu()
    except (MissingDependency, RuntimeUnavailable) as exc:
        return type(exc), str(exc)
    return None


def _entry(usable: bool, reason: str, hint: str = "") -> dict[str, Any]:
    return {"usable": usable, "reason": reason, "install_hint": "" if usable else hint}


def gpu_status() -> dict[str, Any]:
    """For each of "cpu", "cuda", "tensorrt" (ONNX Runtime providers) and "tensorrt-engine"
    (the TensorRT Python API): ``{"usable": bool, "reason": str, "install_hint": str}``; plus
    "device" (see :func:`cuda_device`) and "versions"."""
    device = cuda_device()
    gpu_reason = "" if device["available"] else f"no CUDA GPU usable ({device['reason']})"
    dev_text = (f"{device['name']} (compute {device['compute_capability']}, via {device['source']})"
                if device["available"] else "")

    versions: dict[str, str | None] = {"onnxruntime": None, "tensorrt": tensorrt_version(), "torch": None}
    status: dict[str, Any] = {}
    providers: list[str] = []
    try:
        ort = importlib.import_module("onnxruntime")
        versions["onnxruntime"] = ort.__version__
        providers = list(ort.get_available_providers())
        ort_dist = _ort_distribution()
        status["cpu"] = _entry("CPUExecutionProvider" in providers,
                               f"onnxruntime {ort.__version__} ({ort_dist}) CPUExecutionProvider")
    except Exception as exc:  # noqa: BLE001
        ort_dist = None
        status["cpu"] = _entry(False, f"onnxruntime cannot be imported ({exc})", install_hint("onnxruntime"))
    if importlib.util.find_spec("torch") is not None:
        try:
            versions["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            pass

    def ort_gpu(provider: str) -> dict[str, Any]:
        if not providers and ort_dist is None:
            return _entry(False, "onnxruntime cannot be imported", ORT_GPU_HINT)
        if provider not in providers:
            return _entry(False, f"{ort_dist} has no {provider} (its providers: {', '.join(providers)})",
                          ORT_GPU_HINT)
        if not device["available"]:
            return _entry(False, f"{provider} is listed but {gpu_reason}", CUDA_HINT)
        return _entry(True, f"{provider} on {dev_text}")

    status["cuda"] = ort_gpu("CUDAExecutionProvider")
    trt_ep = ort_gpu("TensorrtExecutionProvider")
    if trt_ep["usable"] and tensorrt_major_for_ort() is None:
        trt_ep = _entry(False, "TensorrtExecutionProvider is listed but no TensorRT libraries (libnvinfer) "
                               "were found", TENSORRT_HINT)
    status["tensorrt"] = trt_ep

    try:
        trt = import_tensorrt()
    except MissingDependency as exc:
        status["tensorrt-engine"] = _entry(False, str(exc).split("; ")[0], TENSORRT_HINT)
    else:
        if device["available"]:
            status["tensorrt-engine"] = _entry(True, f"TensorRT {trt.__version__} on {dev_text}")
        else:
            status["tensorrt-engine"] = _entry(False, f"TensorRT {trt.__version__} is installed but {gpu_reason}",
                                               CUDA_HINT)
    status["device"] = device
    status["versions"] = versions
    return status


def _ort_distribution() -> str:
    """Which wheel provides the onnxruntime package (onnxruntime-gpu and onnxruntime share it)."""
    found = []
    for dist in ("onnxruntime-gpu", "onnxruntime", "onnxruntime-openvino", "onnxruntime-directml"):
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    if len(found) > 1:
        return " + ".join(found) + " (both installed: the last one installed wins; keep only one)"
    return found[0] if found else "unknown distribution"


def tensorrt_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps errors and warnings, so failures can be reported in one line."""

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=20)
            self.warnings: collections.deque[str] = collections.deque(maxlen=50)

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(" ".join(str(msg).split()))
            elif level == int(trt.ILogger.Severity.WARNING):
                self.warnings.append(" ".join(str(msg).split()))

    return CapturingLogger()
