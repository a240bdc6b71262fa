"""ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers.

ONNX Runtime silently falls back to the CPU provider when a requested one is not available; this
runner compares the providers the session actually uses with the ones requested and raises
RuntimeUnavailable instead of reporting CPU numbers as GPU numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.errors import InputError, RuntimeUnavailable
from optkit.lazy import lazy_import
from optkit.onnx_utils import TensorSpec
from optkit.runners.base import Runner

ORT_PROVIDER = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def available_providers() -> list[str]:
    ort = lazy_import("onnxruntime")
    return list(ort.get_available_providers())


def provider_chain(provider: str, options: dict[str, Any]) -> list[Any]:
    """The providers list passed to InferenceSession for an optkit provider name."""
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        cuda_opts = dict(options.get("cuda_options") or {})
        return [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    if provider == "tensorrt":
        trt_opts = dict(options.get("tensorrt_options") or {})
        # CUDA registered too so nodes TensorRT cannot take still run on the GPU.
        return [("TensorrtExecutionProvider", trt_opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"unknown ONNX Runtime provider {provider!r}; use cpu, cuda or tensorrt")


def require_provider(provider: str) -> None:
    wanted = ORT_PROVIDER[provider]
    have = available_providers()
    if wanted not in have:
        hint = (
            "install onnxruntime-gpu in a separate environment (it replaces onnxruntime; never "
            "install both): pip install 'optkit[gpu]'"
        )
        raise RuntimeUnavailable(
            f"ONNX Runtime provider {wanted} is not available here (available: {', '.join(have)}); {hint}"
        )


class OnnxRuntimeRunner(Runner):
    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None,
                 allow_spinning: bool = False, **options: Any):
        super().__init__(path, threads=threads, **options)
        if provider not in ORT_PROVIDER:
            raise InputError(f"unknown ONNX Runtime provider {provider!r}; use cpu, cuda or tensorrt")
        self.provider = provider
        self.name = f"onnxruntime[{provider}]"
        # ORT's intra-op threads spin after each run by default and steal the cores from
        # whatever runs next (another session in an interleaved benchmark): off by default.
        self.allow_spinning = allow_spinning
        self.session: Any = None

    def activate(self) -> None:
        ort = lazy_import("onnxruntime")
        if self.provider != "cpu":
            require_provider(self.provider)
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        so.log_severity_level = 3
        opt_level = self.options.get("graph_optimization_level")
        if opt_level == "disable":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=so, providers=provider_chain(self.provider, self.options)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime cannot load {self.path.name}: {msg}") from exc
        used = self.session.get_providers()
        wanted = ORT_PROVIDER[self.provider]
        if used[0] != wanted:
            raise RuntimeUnavailable(
                f"ONNX Runtime fell back to {used[0]} instead of {wanted} for {self.path.name}; "
                "refusing to report its numbers as GPU numbers"
            )
        self.active = True

    def deactivate(self) -> None:
        self.session = None
        self.active = False

    @property
    def inputs(self) -> list[TensorSpec]:
        return [
            TensorSpec(i.name, tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                       _ORT_TYPES.get(i.type, "float32"))
            for i in self.session.get_inputs()
        ]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, feed)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime failed to run {self.path.name}: {msg}") from exc
        return dict(zip(self.output_names, outs))

    def describe(self) -> dict[str, Any]:
        ort = lazy_import("onnxruntime")
        return {
            "runner": self.name,
            "onnxruntime": ort.__version__,
            "providers_in_use": list(self.session.get_providers()) if self.session else [],
            "threads": self.threads,
            "allow_spinning": self.allow_spinning,
        }
