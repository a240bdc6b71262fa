"""What a file is, by its name: an ONNX model or a TensorRT engine. Its own small module so that
the runner registry (imported by ``optkit --help`` through the command options) does not load the
artifact/manifest code."""
from __future__ import annotations

from pathlib import Path

from optkit.common.errors import InputError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
ONNX_SUFFIXES = (".onnx",)


def artifact_kind(path: str | Path) -> str:
    """What a file is, by its name: "onnx" or "engine" (a TensorRT engine)."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    raise InputError(f"{path}: unknown artifact type (expected .onnx or .engine)")


def is_engine(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ENGINE_SUFFIXES
