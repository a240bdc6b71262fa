"""Lazy imports of heavy dependencies, with an install hint when they are missing.

Modelled on Polygraphy's ``mod.lazy_import``: ``import optkit`` and ``optkit --help`` must not
import torch, onnxruntime, openvino or tensorrt, so every module imports them inside the function
that needs them through :func:`lazy_import`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from optkit.common.errors import MissingDependency

# The pip extra that brings each optional module (see pyproject.toml).
_EXTRA_FOR = {
    "torch": "torch",
    "openvino": "openvino",
    "librosa": "audio",
    "soundfile": "audio",
    "tensorrt": "tensorrt",
    "polygraphy": "core",
    "ray": "ray",
    "onnxruntime": "core",
    "onnx": "core",
    "onnxsim": "core",
    "onnxconverter_common": "core",
    "yaml": "core",
    "jsonschema": "core",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "prometheus_client": "serve",
    "multipart": "serve",
    "aiohttp": "serve",
}


def install_hint(module: str, extra: str | None = None) -> str:
    extra = extra or _EXTRA_FOR.get(module.split(".")[0], "core")
    if extra == "tensorrt":
        return (
            "install TensorRT in a separate GPU environment: pip install 'optkit[tensorrt]' "
            "(needs NVIDIA's package index and a CUDA GPU)"
        )
    if extra == "core":
        return "reinstall optkit: pip install optkit"
    return f"install it with: pip install 'optkit[{extra}]'"


def lazy_import(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` now, or raise MissingDependency with a one-line install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{module} is required for this step but could not be imported ({exc}); "
            + install_hint(module, extra)
        ) from exc


def is_available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure means "not usable here"
        return False
    return True
