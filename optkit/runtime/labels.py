"""Runtimes in words: the one place that turns a runner's description (``Runner.describe()``) into
the names people read in tables, reports and notes ("ONNX Runtime CPU", "OpenVINO CPU", "TensorRT")
and back into the ``--provider`` value it ran with.
"""
from __future__ import annotations

from typing import Any


def provider_of(runner: dict[str, Any]) -> str:
    """The --provider value a result ran with, from its runner description."""
    name = str(runner.get("runner", ""))
    if name.startswith("onnxruntime[") and name.endswith("]"):
        return name[len("onnxruntime["):-1]
    return name


def runtime_label(runner: dict[str, Any]) -> str:
    """Short name of a runtime for tables: 'ONNX Runtime CPU', 'OpenVINO CPU', 'TensorRT'."""
    p = provider_of(runner)
    return {"cpu": "ONNX Runtime CPU", "cuda": "ONNX Runtime CUDA", "tensorrt": "ONNX Runtime TensorRT",
            "openvino": f"OpenVINO {runner.get('device', 'CPU')}"}.get(
        p, "TensorRT" if p == "tensorrt" or runner.get("runner") == "tensorrt" else p)


def runtime_text(runner: dict[str, Any]) -> str:
    """What ran, in a sentence: runtime, version, device/provider actually in use, threads."""
    name = str(runner.get("runner", "?"))
    threads = runner.get("threads")
    thr = f"{threads} threads" if threads else "the runtime's default thread count"
    if name.startswith("onnxruntime"):
        used = runner.get("providers_in_use") or []
        eps = ", then ".join(_ep_words(e) for e in used) or "no provider reported"
        return f"ONNX Runtime {runner.get('onnxruntime', '?')}, {eps}, {thr}"
    if name == "openvino":
        eff = runner.get("in_effect") or {}
        dev = runner.get("device_name") or runner.get("device", "?")
        parts = [f"OpenVINO {runner.get('openvino', '?')} on {runner.get('device', '?')} ({dev})"]
        if eff:
            parts.append(f"inference precision {eff.get('precision_hint', '?')}")
            parts.append(f"{eff.get('performance_hint', '?')} hint")
            if eff.get("num_streams") is not None:
                parts.append(f"{eff['num_streams']} stream(s)")
            if eff.get("inference_num_threads"):
                thr = f"{eff['inference_num_threads']} threads"
        return ", ".join(parts + [thr])
    if name == "tensorrt":
        bits = [f"TensorRT {runner.get('version', runner.get('tensorrt', '?'))}"]
        if runner.get("device"):
            bits.append(f"on {runner['device']}")
        return " ".join(bits)
    return name


def _ep_words(ep: str) -> str:
    return {"CPUExecutionProvider": "CPU execution provider", "CUDAExecutionProvider": "CUDA execution provider",
            "TensorrtExecutionProvider": "TensorRT execution provider"}.get(ep, ep)


def runner_summary(desc: dict[str, Any]) -> str:
    """One short phrase saying what ran, from a runner's describe()."""
    name = str(desc.get("runner", "?"))
    parts = [name]
    if "onnxruntime" in desc:
        parts.append(str(desc["onnxruntime"]))
        used = desc.get("providers_in_use") or []
        if used:
            parts.append(str(used[0]))
        if "allow_spinning" in desc:
            parts.append("spinning " + ("on" if desc["allow_spinning"] else "off"))
    elif name == "openvino":
        parts.append(str(desc.get("openvino", "")))
        eff = desc.get("in_effect", {})
        parts.append(str(desc.get("device", "")))
        if eff:
            parts.append(f"precision {eff.get('precision_hint', '?')}")
            parts.append(f"hint {eff.get('performance_hint', '?')}")
            if "num_streams" in eff:
                parts.append(f"streams {eff['num_streams']}")
    else:
        for key in ("version", "device", "precision"):
            if key in desc:
                parts.append(str(desc[key]))
    threads = desc.get("threads")
    if threads:
        parts.append(f"{threads} threads")
    return " ".join(p for p in parts if p)
