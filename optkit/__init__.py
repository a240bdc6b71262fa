"""optkit: PyTorch -> ONNX -> simplified, folded, int8/fp16, TensorRT artifacts, verified.

Importing optkit is cheap: torch, onnxruntime, openvino and tensorrt are imported lazily by the
functions that need them. The library's errors are importable from here (``optkit.OptkitError``)
whatever package they live in (optkit.common.errors since the 0.2 layout).
"""
__version__ = "0.1.0"

from optkit.common.errors import (  # noqa: E402,F401 - the library's error API, stable across layouts
    InputError,
    OptkitError,
    PassFailed,
    VerificationFailed,
)
