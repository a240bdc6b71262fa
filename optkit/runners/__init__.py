"""Runners: run an artifact on inputs. ``make_runner`` picks one by file type and provider.

To add a runner: subclass :class:`optkit.runners.base.Runner` in its own module and add a
branch in :func:`make_runner` (and the provider name to ``PROVIDERS``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.errors import InputError
from optkit.fileio import require_file

PROVIDERS = ("cpu", "openvino", "cuda", "tensorrt")


def make_runner(path: str | Path, provider: str = "cpu", threads: int | None = None, **options: Any):  # noqa: ANN201
    path = require_file(path, "artifact")
    suffix = path.suffix.lower()
    if suffix in (".engine", ".plan", ".trt"):
        from optkit.runners.tensorrt import TensorRTRunner

        return TensorRTRunner(path, threads=threads, **options)
    if suffix != ".onnx":
        raise InputError(f"{path}: unknown artifact type (expected .onnx or .engine)")
    if provider == "openvino":
        from optkit.runners.openvino import OpenVINORunner

        return OpenVINORunner(path, threads=threads, **options)
    if provider in ("cpu", "cuda", "tensorrt"):
        from optkit.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, provider=provider, threads=threads, **options)
    raise InputError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")
