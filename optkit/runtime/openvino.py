"""OpenVINO runner (CPU): runs optkit's ONNX artifacts (fp32, fp16, QDQ int8) directly.

OpenVINO's CPU plugin makes choices silently that change both numbers and speed, so every one
that matters is set on purpose here and read back from the compiled model for ``describe()``:

- ``INFERENCE_PRECISION_HINT``: on CPUs with bf16 support (AVX512-BF16 / AMX) the plugin runs
  fp32 layers in bf16 unless told otherwise. That changes the outputs (bf16 keeps ~3 significant
  digits), so it is pinned to f32 by default. It is also pinned for QDQ int8 models: the layers
  OpenVINO keeps in floating point (residual adds, head) then run in f32, and on the seed-size
  voice model an f32 hint measured faster than the default bf16 (3.5x vs 3.1x over ORT fp32,
  batch 1, 2 threads; see benchmarks/README.md). ``precision="default"`` leaves the plugin's choice.
- ``PERFORMANCE_HINT``: LATENCY by default (one stream using all given threads: the serving case
  of one request at a time); THROUGHPUT or ``none`` (plugin default) on request.
- ``INFERENCE_NUM_THREADS``: from ``threads``, so OpenVINO uses the same cores as the other runtimes
  it is compared with.
- ``NUM_STREAMS``: with ``streams`` > 1 (``optkit serve --streams N``), the plugin's own streams: one
  compiled model runs N inferences at once on ``threads`` split between them, each calling thread
  with its own infer request (an infer request is not shared between threads). Two separately
  compiled single-thread models were measured slower: each pins its thread, both to the same core.

ONNX models with a dynamic batch axis are reshaped to the batch of each call and compiled once per
input shape (static shapes run faster than OpenVINO's dynamic-shape path); compiled models are
cached per shape.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import TensorSpec
from optkit.runtime.base import Runner

PRECISIONS = ("f32", "bf16", "f16", "default")
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT", "none")
DEFAULT_PRECISION = "f32"
DEFAULT_PERFORMANCE_HINT = "LATENCY"
# Compiled models kept per runner; a benchmark uses one or two batch sizes, verify a few.
MAX_CACHED_SHAPES = 8

_OV_TO_NUMPY = {
    "f32": "float32", "f16": "float16", "f64": "float64", "bf16": "float32",
    "i64": "int64", "i32": "int32", "i8": "int8", "u8": "uint8", "boolean": "bool",
}


def _first_line(exc: BaseException) -> str:
    """The informative line of an OpenVINO exception (they start with 'Exception from src/...')."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith(("Exception from", "[", "Check "))]
    return (lines[0] if lines else (text.splitlines()[0] if text else type(exc).__name__))[:300]


class OpenVINORunner(Runner):
    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = DEFAULT_PRECISION,
                 performance_hint: str | None = DEFAULT_PERFORMANCE_HINT, device: str = "CPU", streams: int = 1,
                 **options: Any):
        super().__init__(path, threads=threads, **options)
        if int(streams) < 1:
            raise InputError(f"streams must be a positive integer, got {streams}")
        self.streams = int(streams)
        precision = (precision or "default").lower()
        if precision not in PRECISIONS:
            raise InputError(f"unknown OpenVINO precision hint {precision!r}; use {', '.join(PRECISIONS)}")
        hint = "none" if performance_hint is None else str(performance_hint)
        hint = hint if hint == "none" else hint.upper()
        if hint.lower() == "none":
            hint = "none"
        if hint not in PERFORMANCE_HINTS:
            raise InputError(f"unknown OpenVINO performance hint {performance_hint!r}; use {', '.join(PERFORMANCE_HINTS)}")
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be a positive integer, got {threads}")
        self.precision = precision
        self.performance_hint = hint
        self.device = device
        self.core: Any = None
        self.model: Any = None  # the ov.Model as read (possibly with a dynamic batch axis)
        self._compiled: dict[tuple[tuple[int, ...], ...], Any] = {}
        # infer requests per (calling thread, input shapes): infer() may be called from several threads
        self._requests: dict[tuple[int, tuple[tuple[int, ...], ...]], Any] = {}
        self._lock = threading.Lock()
        self._last: Any = None  # the most recently used compiled model, for describe()
        self._inputs: list[TensorSpec] = []
        self._outputs: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> None:
        ov = lazy_import("openvino", extra="openvino")
        from optkit.common.fileio import require_file

        from optkit.model.onnx_utils import load_onnx

        if self.path.suffix.lower() != ".onnx":
            raise InputError(f"{self.path}: the OpenVINO runner reads .onnx models")
        # Parse with onnx first: given a file that is not ONNX, read_model would try its other
        # frontends (TensorFlow, ...) and print their parser noise before failing.
        proto = load_onnx(require_file(self.path, "ONNX model"), load_weights=False)
        self.core = ov.Core()
        if self.device not in self.core.available_devices:
            from optkit.common.errors import RuntimeUnavailable

            raise RuntimeUnavailable(
                f"OpenVINO device {self.device} is not available here "
                f"(available: {', '.join(self.core.available_devices) or 'none'})"
            )
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as exc:  # RuntimeError from the ONNX frontend: bad protobuf, unknown op
            raise InputError(f"OpenVINO cannot read {self.path.name}: {_first_line(exc)}") from exc
        # the declared length range of a dynamic time axis (export --length-range) is in the ONNX
        # metadata, which OpenVINO's ports do not carry
        from optkit.model.dynamic import input_ranges

        ranges = input_ranges({p.key: p.value for p in proto.metadata_props})
        self._inputs = [self._spec(port, ranges) for port in self.model.inputs]
        self._outputs = [port.get_any_name() for port in self.model.outputs]
        self._compiled.clear()
        # Compile once now (batch 1 where the batch is dynamic) so errors surface at load time and
        # describe() can report what the plugin chose.
        self._compiled_for({s.name: s.concrete_shape(1, self.path.name) for s in self._inputs})
        self.active = True

    def deactivate(self) -> None:
        self._compiled.clear()
        self._requests.clear()
        self._last = None
        self.model = None
        self.core = None
        self.active = False

    def _spec(self, port: Any, ranges: dict[str, tuple[tuple[int, int, int], ...]] | None = None) -> TensorSpec:
        dims: list[int | None] = []
        for d in port.get_partial_shape():
            dims.append(int(d.get_length()) if d.is_static else None)
        dtype = _OV_TO_NUMPY.get(port.get_element_type().get_type_name(), "float32")
        name = port.get_any_name()
        return TensorSpec(name, tuple(dims), dtype, (ranges or {}).get(name, ()))

    def compile_config(self) -> dict[str, Any]:
        """The properties passed to compile_model."""
        ov = lazy_import("openvino", extra="openvino")
        props = lazy_import("openvino.properties", extra="openvino")
        hints = lazy_import("openvino.properties.hint", extra="openvino")
        config: dict[str, Any] = {}
        if self.precision != "default":
            config[hints.inference_precision()] = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}[self.precision]
        if self.performance_hint != "none":
            # several streams are the throughput mode: the LATENCY hint would set one stream
            hint = "THROUGHPUT" if self.streams > 1 else self.performance_hint
            config[hints.performance_mode()] = getattr(hints.PerformanceMode, hint)
        if self.threads:
            config[props.inference_num_threads()] = int(self.threads)
        if self.streams > 1:
            config[props.streams.num()] = self.streams
        return config

    def _compiled_for(self, shapes: dict[str, tuple[int, ...]]) -> tuple[Any, Any]:
        """The compiled model for these input shapes and the calling thread's infer request for it."""
        key = tuple(shapes[s.name] for s in self._inputs)
        rkey = (threading.get_ident(), key)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = self._compile(shapes, key)
                if len(self._compiled) >= MAX_CACHED_SHAPES:
                    dropped = next(iter(self._compiled))
                    self._compiled.pop(dropped)
                    for k in [k for k in self._requests if k[1] == dropped]:
                        del self._requests[k]
                self._compiled[key] = compiled
            request = self._requests.get(rkey)
            if request is None:
                request = self._requests[rkey] = compiled.create_infer_request()
            self._last = compiled
        return compiled, request

    def _compile(self, shapes: dict[str, tuple[int, ...]], key: tuple[tuple[int, ...], ...]) -> Any:
        model = self.model
        if any(None in s.shape for s in self._inputs):
            model = self.model.clone()
            try:
                model.reshape({s.name: list(shapes[s.name]) for s in self._inputs})
            except Exception as exc:
                raise InputError(f"OpenVINO cannot reshape {self.path.name} to {key}: {_first_line(exc)}") from exc
        try:
            return self.core.compile_model(model, self.device, self.compile_config())
        except Exception as exc:
            raise InputError(f"OpenVINO cannot compile {self.path.name}: {_first_line(exc)}") from exc

    # -- inference ---------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.model is None:
            raise InputError("OpenVINO runner used before activate()")
        names = [s.name for s in self._inputs]
        missing = [n for n in names if n not in feed]
        if missing:
            raise InputError(f"{self.path.name}: missing input {', '.join(missing)} (model inputs: {', '.join(names)})")
        shapes: dict[str, tuple[int, ...]] = {}
        for spec in self._inputs:
            arr = feed[spec.name]
            if arr.ndim != len(spec.shape) or any(
                d is not None and d != a for d, a in zip(spec.shape, arr.shape)
            ):
                raise InputError(f"{self.path.name}: input {spec.name} has shape {tuple(arr.shape)}, "
                                 f"the model expects {spec.shape}")
            if arr.dtype != np.dtype(spec.dtype):
                raise InputError(f"{self.path.name}: input {spec.name} has dtype {arr.dtype}, the model expects {spec.dtype}")
            shapes[spec.name] = tuple(int(d) for d in arr.shape)
        compiled, request = self._compiled_for(shapes)
        try:
            result = request.infer({n: np.ascontiguousarray(feed[n]) for n in names})
        except Exception as exc:
            raise InputError(f"OpenVINO failed to run {self.path.name}: {_first_line(exc)}") from exc
        return {name: np.array(result[compiled.output(i)]) for i, name in enumerate(self._outputs)}

    def describe(self) -> dict[str, Any]:
        ov = lazy_import("openvino", extra="openvino")
        info: dict[str, Any] = {
            "runner": self.name,
            "openvino": ov.__version__.split("-")[0],
            "openvino_build": ov.__version__,
            "device": self.device,
            "threads": self.threads,
            "requested": {"precision_hint": self.precision, "performance_hint": self.performance_hint,
                          **({"streams": self.streams} if self.streams > 1 else {})},
        }
        if self.core is not None:
            props = lazy_import("openvino.properties", extra="openvino")
            info["device_name"] = self.core.get_property(self.device, props.device.full_name())
        if self._last is not None:
            info["in_effect"] = self.properties_in_effect()
        return info

    def properties_in_effect(self) -> dict[str, Any]:
        """What the compiled model reports (not what was asked for)."""
        props = lazy_import("openvino.properties", extra="openvino")
        hints = lazy_import("openvino.properties.hint", extra="openvino")
        compiled = self._last
        wanted = {
            "precision_hint": hints.inference_precision(),
            "performance_hint": hints.performance_mode(),
            "execution_mode": hints.execution_mode(),
            "num_streams": props.streams.num(),
            "inference_num_threads": props.inference_num_threads(),
            "enable_cpu_pinning": hints.enable_cpu_pinning(),
            "execution_devices": props.execution_devices(),
        }
        out: dict[str, Any] = {}
        for key, prop in wanted.items():
            try:
                value = compiled.get_property(prop)
            except Exception:  # noqa: BLE001 - a property this plugin/version does not report
                continue
            out[key] = _plain(value)
        if "precision_hint" in out:
            out["precision_hint"] = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}.get(
                out["precision_hint"], out["precision_hint"])
        return out


def _plain(value: Any) -> Any:
    """OpenVINO property values (ov.Type, enums, lists) as JSON-friendly Python values."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "to_string"):
        return value.to_string()
    if hasattr(value, "name") and isinstance(getattr(value, "name"), str):
        return value.name
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)
