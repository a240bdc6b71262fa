"""Running artifacts: one Runner per runtime (``onnxruntime``, ``openvino``, ``tensorrt``; ``base`` is
the interface, ``registry`` picks one), TensorRT engine building and its sidecar
(``tensorrt_build``, ``engine_meta``), execution-provider placement, GPU and CPU facts
(``gpu``, ``sysinfo``, ``doctor``), latency measurement (``bench``, ``bench_render``) and
runtimes in words (``labels``). Runtime code never judges results: that is verification.

May import: optkit.common, optkit.data, optkit.zoo, optkit.model.
"""
