"""What optkit can do on this machine: versions, providers, CPU features, GPU/TensorRT."""
from __future__ import annotations

import platform
from typing import Any

DISTRIBUTIONS = ("optkit", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "onnxscript",
                 "onnxconverter-common", "polygraphy", "torch", "openvino", "tensorrt", "librosa", "click")


def versions() -> dict[str, str | None]:
    from optkit.runtime.sysinfo import library_versions

    return library_versions(DISTRIBUTIONS)


def collect() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "versions": versions()}
    try:
        import onnxruntime as ort

        info["ort_providers"] = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001 - absent or broken install: report, do not crash
        info["ort_providers"] = []
    try:
        from optkit.runtime.sysinfo import cpu_info

        info["cpu"] = cpu_info().to_json()
    except Exception as exc:  # noqa: BLE001
        info["cpu"] = {"error": str(exc)}
    caps: dict[str, dict[str, Any]] = {}
    caps["onnxruntime-cpu"] = {
        "usable": "CPUExecutionProvider" in info["ort_providers"],
        "reason": "ONNX Runtime CPU provider" if info["ort_providers"] else "onnxruntime is not installed",
        "install": "pip install optkit",
    }
    v = info["versions"]
    from optkit.runtime.registry import RUNNERS

    caps["openvino"] = {
        "usable": v.get("openvino") is not None,
        "reason": f"OpenVINO {v['openvino']}" if v.get("openvino") else "openvino is not installed",
        "install": RUNNERS["openvino"].install,
    }
    caps["pytorch (export)"] = {
        "usable": v.get("torch") is not None,
        "reason": f"torch {v['torch']}" if v.get("torch") else "torch is not installed (needed by export only)",
        "install": "pip install -c constraints.txt 'optkit[torch]'",
    }
    try:
        from optkit.runtime.gpu import gpu_status

        for name, st in gpu_status().items():
            if name == "cpu" or not isinstance(st, dict) or "usable" not in st:
                continue
            caps[name] = st
    except ImportError:
        caps["gpu"] = {"usable": False, "reason": "GPU support module not available"}
    info["capabilities"] = caps
    info["runners"] = {r.name: {"runs": list(r.kinds), "what": r.describe, "extra": r.extra, "install": r.install}
                       for r in RUNNERS.values()}
    return info
