"""optkit: PyTorch -> ONNX -> simplified, folded, int8/fp16, TensorRT artifacts, verified.

Importing optkit is cheap: torch, onnxruntime, openvino and tensorrt are imported lazily by the
functions that need them.
"""
__version__ = "0.1.0"
