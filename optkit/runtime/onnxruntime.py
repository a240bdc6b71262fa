"""ONNX Runtime runner for the CPU, CUDA and TensorRT execution providers.

ONNX Runtime silently falls back to the CPU provider when a requested one is not available; this
runner compares the providers the session actually uses with the ones requested and raises
RuntimeUnavailable instead of reporting CPU numbers as GPU numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError, RuntimeUnavailable
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import TensorSpec
from optkit.runtime.base import Runner

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


def _ort_message(exc: BaseException) -> str:
    """ORT errors are multi-line with the cause first; keep one readable line."""
    text = " ".join(str(exc).split())
    for prefix in ("[ONNXRuntimeError] :", ):
        if prefix in text:
            text = text.split(prefix, 1)[1]
    text = text.lstrip(" 0123456789").lstrip(":").strip()
    return (text[:400] + "...") if len(text) > 400 else (text or type(exc).__name__)


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
        cuda_opts = dict(options.get("cuda_options") or {})
        # CUDA registered too so nodes TensorRT cannot take still run on the GPU.
        return [("TensorrtExecutionProvider", trt_opts), ("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
    raise InputError(f"unknown ONNX Runtime provider {provider!r}; use cpu, cuda or tensorrt")


def ort_provider_options(
    provider: str,
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    batch_range: tuple[int, int, int] | None = None,
    input_name: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    device_id: int = 0,
    workspace_bytes: int = 1 << 30,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    tensorrt_major: int | None = None,
    tf32: bool = False,
) -> dict[str, Any]:
    """Runner options for the CUDA / TensorRT execution providers (pass as ``**options`` to
    ``make_runner``/``OnnxRuntimeRunner``): ``{"cuda_options": {...}, "tensorrt_options": {...}}``.

    - ``precision``: the model's precision. On TensorRT < 11, fp16/int8 set ``trt_fp16_enable`` /
      ``trt_int8_enable`` (TensorRT needs the builder flag to pick fp16/int8 kernels in a
      non-strongly-typed network; for a QDQ model no calibration table is given). TensorRT 11
      removed those builder flags, so there the precision comes only from the model's dtypes
      (give ORT the fp16 / QDQ model) and the flags are left out. ``tensorrt_major`` defaults
      to the TensorRT found installed (:func:`optkit.runtime.gpu.tensorrt_major_for_ort`); unknown is
      treated as < 11.
    - ``cache_dir``: enables the TensorRT EP engine and timing caches there (delete it when the
      model, ORT, TensorRT or GPU changes).
    - ``batch_range`` + ``input_name`` + ``input_shape`` (the per-sample shape, without batch):
      explicit ``trt_profile_min/opt/max_shapes`` for the dynamic batch axis.
    - ``tf32``: the CUDA EP uses TF32 for fp32 convolutions and GEMMs by default. Measured on an
      H100 (benchmarks/gpu_ort_cuda.sh): voice-resnet-seed fp32 then differed from the CPU by
      2.7e-3, failing the fp32 gate (1e-4). Off unless asked for.
    """
    if provider not in ("cuda", "tensorrt"):
        raise InputError(f"provider options exist for cuda and tensorrt, not {provider!r}")
    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"precision {precision!r} is not one of fp32, fp16, int8")
    cuda = {"device_id": int(device_id), "cudnn_conv_algo_search": cudnn_conv_algo_search,
            "use_tf32": 1 if tf32 else 0}
    if provider == "cuda":
        return {"cuda_options": cuda}
    trt: dict[str, Any] = {"device_id": int(device_id), "trt_max_workspace_size": int(workspace_bytes)}
    if tensorrt_major is None:
        from optkit.runtime.gpu import tensorrt_major_for_ort

        tensorrt_major = tensorrt_major_for_ort()
    if tensorrt_major is None or tensorrt_major < 11:
        if precision == "fp16":
            trt["trt_fp16_enable"] = True
        elif precision == "int8":
            trt["trt_int8_enable"] = True
    if cache_dir is not None:
        cache = str(Path(cache_dir))
        trt.update({
            "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
        })
    if batch_range is not None:
        if not input_name or not input_shape:
            raise InputError("a TensorRT EP batch profile needs the input name and its per-sample shape")
        lo, opt, hi = batch_range
        if not 1 <= lo <= opt <= hi:
            raise InputError(f"batch range {lo}:{opt}:{hi}: need 1 <= MIN <= OPT <= MAX")
        dims = "x".join(str(int(d)) for d in input_shape)
        for key, b in (("min", lo), ("opt", opt), ("max", hi)):
            trt[f"trt_profile_{key}_shapes"] = f"{input_name}:{b}x{dims}"
    return {"cuda_options": cuda, "tensorrt_options": trt}


def default_provider_options(path: str | Path, provider: str) -> dict[str, Any]:
    """Provider options when the caller gave none: the model's precision decides the TensorRT EP
    precision flags; no profiles (the EP builds for the shapes it meets) and no engine cache."""
    from optkit.model.onnx_utils import load_onnx, model_precision

    precision = model_precision(load_onnx(path, load_weights=False))
    return ort_provider_options(provider, precision=precision)


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
                 allow_spinning: bool = False, label: str | None = None, streams: int = 1, **options: Any):
        super().__init__(path, threads=threads, **options)
        if int(streams) < 1:
            raise InputError(f"streams must be a positive integer, got {streams}")
        # callers that run this many infer() calls at once (optkit serve --streams): the session is
        # shared (InferenceSession.run is thread-safe) and ``threads`` are split between the calls
        self.streams = int(streams)
        # the name used in messages (a pass checking a temporary file passes the final name)
        self.label = label or self.path.name
        if provider not in ORT_PROVIDER:
            raise InputError(f"unknown ONNX Runtime provider {provider!r}; use cpu, cuda or tensorrt")
        self.provider = provider
        self.name = f"onnxruntime[{provider}]"
        # ORT's intra-op threads spin after each run by default and steal the cores from
        # whatever runs next (another session in an interleaved benchmark): off by default.
        self.allow_spinning = allow_spinning
        self.session: Any = None
        # GPU providers: the first run is profiled to see where ORT placed each node (placement.py)
        self.placement: dict[str, Any] | None = None
        self._profile_dir: tuple[Path, Any] | None = None

    def activate(self) -> None:
        ort = lazy_import("onnxruntime")
        if self.provider != "cpu":
            require_provider(self.provider)
        so = ort.SessionOptions()
        intra = self.intra_op_threads
        if intra:
            so.intra_op_num_threads = intra
            so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        so.log_severity_level = 3
        opt_level = self.options.get("graph_optimization_level")
        if opt_level == "disable":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options = dict(self.options)
        if self.provider != "cpu" and not (options.get("cuda_options") or options.get("tensorrt_options")):
            options.update(default_provider_options(self.path, self.provider))
            self.options = options
        if self.provider != "cpu":
            from optkit.common.workspace import open_work_dir

            self._profile_dir = open_work_dir("optkit-profile-")
            # removed with the runner even when it is dropped without deactivate() or a run
            import weakref

            from optkit.common.workspace import close_work_dir

            weakref.finalize(self, close_work_dir, *self._profile_dir)
            so.enable_profiling = True
            so.profile_file_prefix = str(self._profile_dir[0] / "ort")
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=so, providers=provider_chain(self.provider, options)
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            self._drop_profile_dir()
            raise InputError(f"ONNX Runtime cannot load {self.label}: {_ort_message(exc)}") from exc
        used = self.session.get_providers()
        wanted = ORT_PROVIDER[self.provider]
        if used[0] != wanted:
            why = {
                "tensorrt": " (are the TensorRT libraries, libnvinfer, installed and matching this onnxruntime-gpu?)",
                "cuda": " (are the CUDA and cuDNN libraries matching this onnxruntime-gpu installed?)",
            }.get(self.provider, "")
            self._drop_profile_dir()
            raise RuntimeUnavailable(
                f"ONNX Runtime fell back to {used[0]} instead of {wanted} for {self.label}{why}; "
                "refusing to report its numbers as GPU numbers"
            )
        self.active = True

    @property
    def intra_op_threads(self) -> int | None:
        """Intra-op threads of the session: ``threads`` split between ``streams`` concurrent calls
        (None: ORT's default, one per core, when neither is given)."""
        if self.streams == 1:
            return int(self.threads) if self.threads else None
        import os

        total = int(self.threads) if self.threads else (os.cpu_count() or 1)
        return max(1, total // self.streams)

    def deactivate(self) -> None:
        self.session = None
        self.active = False
        self._drop_profile_dir()

    def _drop_profile_dir(self) -> None:
        if self._profile_dir is not None:
            from optkit.common.workspace import close_work_dir

            close_work_dir(*self._profile_dir)
            self._profile_dir = None

    def _check_placement(self) -> None:
        """After the first (profiled) run on a GPU provider: where did each node run?"""
        from optkit.runtime.placement import DEFAULT_HEAVY_OPS, check_placement, parse_profile

        try:
            profile = self.session.end_profiling()
            nodes = parse_profile(profile)
        finally:
            self._drop_profile_dir()
        self.placement = check_placement(
            nodes, ORT_PROVIDER[self.provider], label=self.label,
            heavy_ops=tuple(self.options.get("heavy_ops") or DEFAULT_HEAVY_OPS),
            max_cpu_share=float(self.options.get("max_cpu_share", 0.0)),
        )

    @property
    def inputs(self) -> list[TensorSpec]:
        from optkit.model.dynamic import input_ranges

        ranges = input_ranges(self.session.get_modelmeta().custom_metadata_map)
        return [
            TensorSpec(i.name, tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                       _ORT_TYPES.get(i.type, "float32"), ranges.get(i.name, ()))
            for i in self.session.get_inputs()
        ]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, feed)
        except Exception as exc:
            raise InputError(f"ONNX Runtime failed to run {self.label}: {_ort_message(exc)}") from exc
        if self._profile_dir is not None:
            self._check_placement()
        return dict(zip(self.output_names, outs))

    def describe(self) -> dict[str, Any]:
        ort = lazy_import("onnxruntime")
        return {
            "runner": self.name,
            "onnxruntime": ort.__version__,
            "providers_in_use": list(self.session.get_providers()) if self.session else [],
            "provider_options": {k: self.options[k] for k in ("cuda_options", "tensorrt_options")
                                 if self.options.get(k) and self.provider != "cpu"},
            "threads": self.threads,
            **({"streams": self.streams, "intra_op_threads": self.intra_op_threads} if self.streams > 1 else {}),
            "allow_spinning": self.allow_spinning,
            **({"node_placement": self.placement} if self.placement else {}),
        }
