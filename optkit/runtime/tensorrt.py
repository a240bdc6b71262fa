"""TensorRT engine runner (``.engine`` / ``.plan`` / ``.trt``).

Loading: the sidecar written by build-engine is compared with the current TensorRT version
and GPU first (optkit.runtime.engine_meta), so a mismatch says "rebuild" instead of TensorRT's
``deserialize_cuda_engine`` returning None; that None is caught too (engines without a sidecar,
or a mismatch the sidecar could not predict). A missing sidecar is a warning, not an error:
engines built by trtexec or Polygraphy have none, and TensorRT's own check still runs.

Running: Polygraphy's ``TrtRunner`` over the deserialized engine. It drives the tensor-name API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``), allocates device buffers and
copies through libcudart via ctypes, so optkit needs neither pycuda, cuda-python nor a CUDA
PyTorch to run an engine; Polygraphy is already an optkit dependency.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError, RuntimeUnavailable
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import TensorSpec
from optkit.runtime.base import Runner

log = logging.getLogger("optkit")


def check_shape_in_profile(name: str, shape: tuple[int, ...], profile: tuple[Any, Any, Any] | None) -> None:
    """InputError when ``shape`` is outside the engine's optimization profile for ``name``."""
    if profile is None:
        return
    lo, _, hi = (tuple(int(d) for d in s) for s in profile)
    if len(shape) != len(lo):
        raise InputError(f"input {name}: rank {len(shape)} given, the engine expects rank {len(lo)} {lo}")
    for i, (d, a, b) in enumerate(zip(shape, lo, hi)):
        if not a <= d <= b:
            if i == 0 and lo[1:] == hi[1:] == tuple(shape[1:]):
                raise InputError(f"input {name}: batch {d} is outside the engine's profile {a}..{b}; "
                                 f"rebuild with optkit build-engine --batch MIN:OPT:MAX covering it")
            raise InputError(f"input {name}: shape {tuple(shape)} is outside the engine's profile {lo}..{hi}")


def choose_profile(shapes: dict[str, tuple[int, ...]], profiles: list[dict[str, tuple[Any, Any, Any]]]) -> int:
    """The index of the first optimization profile whose min..max holds every shape in ``shapes``
    (``profiles``: per profile {input: (min, opt, max)}); InputError naming the profiles if none does."""
    for k, prof in enumerate(profiles):
        try:
            for name, shape in shapes.items():
                check_shape_in_profile(name, shape, prof.get(name))
        except InputError:
            continue
        return k
    if len(profiles) == 1:  # its own message (the batch hint)
        for name, shape in shapes.items():
            check_shape_in_profile(name, shape, profiles[0].get(name))
    given = ", ".join(f"{n} {tuple(s)}" for n, s in shapes.items())
    listed = "; ".join(
        f"{k}: " + ", ".join(f"{n} {'x'.join(map(str, lo))}..{'x'.join(map(str, hi))}" for n, (lo, _, hi) in p.items())
        for k, p in enumerate(profiles))
    raise InputError(f"{given} is outside every optimization profile of the engine ({listed}); rebuild with "
                     "optkit build-engine --profile NAME:MIN,OPT,MAX covering it")


def current_environment(trt: Any, device: dict[str, Any]) -> dict[str, Any]:
    return {
        "tensorrt_version": str(trt.__version__),
        "gpu_name": device.get("name"),
        "compute_capability": device.get("compute_capability"),
    }


class TensorRTRunner(Runner):
    name = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None, check_sidecar: bool = True,
                 allow_host_code: bool | None = None, **options: Any):
        super().__init__(path, threads=threads, **options)
        self.check_sidecar = check_sidecar
        # version-compatible engines need TensorRT's engine_host_code_allowed; None: per the sidecar
        self.allow_host_code = allow_host_code
        self.meta: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.engine: Any = None
        self._trt: Any = None
        self._runner: Any = None
        self._device: dict[str, Any] = {}
        self._profile_index = 0  # the execution context's optimization profile (TensorRT starts on 0)

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> None:
        from optkit.runtime import gpu
        from optkit.runtime.engine_meta import check_compatible, incompatibility_message, read_sidecar

        trt, device = gpu.require_tensorrt_gpu()
        self._trt, self._device = trt, device
        self.meta = read_sidecar(self.path)
        if self.check_sidecar:
            compat = check_compatible(self.meta, current_environment(trt, device))
            if not compat.ok:
                raise RuntimeUnavailable(incompatibility_message(self.path, compat, self.meta))
            self.warnings = list(compat.warnings)
            for w in self.warnings:
                log.warning("%s: %s", self.path.name, w)

        logger = gpu.tensorrt_logger(trt)
        runtime = trt.Runtime(logger)
        allow = self.allow_host_code
        if allow is None:
            allow = bool(self.meta and self.meta.get("version_compatible"))
        if allow:
            # version-compatible plans embed a lean runtime that TensorRT must be allowed to run
            runtime.engine_host_code_allowed = True
        try:
            plan = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read engine {self.path}: {exc.strerror or exc}") from exc
        recorded = (self.meta or {}).get("engine_sha256") if self.check_sidecar else None
        if recorded:
            import hashlib

            if hashlib.sha256(plan).hexdigest() != recorded:
                raise InputError(f"engine {self.path.name} is not the file its sidecar describes (sha256 differs "
                                 "from the one recorded at build time): it changed after the build; rebuild it")
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            detail = " | ".join(list(logger.errors)[-2:]) or "TensorRT logged no error"
            raise RuntimeUnavailable(
                f"TensorRT {trt.__version__} could not load engine {self.path.name} ({detail}); an engine only "
                f"loads with the TensorRT version and GPU it was built for: rebuild it on this machine with "
                f"optkit build-engine MODEL.onnx -o {self.path.name}"
            )
        self.engine = engine
        self._runtime, self._logger = runtime, logger  # TensorRT needs both alive while the engine is

        backend = lazy_import("polygraphy.backend.trt", extra="core")
        self._runner = backend.TrtRunner(engine)
        self._profile_index = 0
        try:
            self._runner.activate()
        except Exception as exc:  # PolygraphyException, CUDA errors
            raise RuntimeUnavailable(f"TensorRT could not create an execution context for {self.path.name}: "
                                     f"{' '.join(str(exc).split())}") from exc
        self.active = True

    def deactivate(self) -> None:
        if self._runner is not None:
            try:
                self._runner.deactivate()
            finally:
                self._runner = None
        self.engine = None
        self.active = False

    # -- introspection -----------------------------------------------------------------------
    def _io_names(self, want_input: bool) -> list[str]:
        trt = self._trt
        mode = trt.TensorIOMode.INPUT if want_input else trt.TensorIOMode.OUTPUT
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        return [n for n in names if self.engine.get_tensor_mode(n) == mode]

    @property
    def inputs(self) -> list[TensorSpec]:
        trt = self._trt
        specs = []
        for name in self._io_names(True):
            shape = tuple(int(d) if int(d) >= 0 else None for d in self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))).name
            specs.append(TensorSpec(name, shape, dtype))
        return specs

    @property
    def output_names(self) -> list[str]:
        return self._io_names(False)

    def profile(self, name: str, index: int = 0) -> tuple[Any, Any, Any] | None:
        try:
            shapes = self.engine.get_tensor_profile_shape(name, index)
        except Exception:  # noqa: BLE001 - static engines may have no profile
            return None
        return tuple(tuple(s) for s in shapes) if shapes else None

    def profiles(self, names: list[str]) -> list[dict[str, tuple[Any, Any, Any]]]:
        """Per optimization profile of the engine, {input: (min, opt, max)} of ``names``."""
        count = int(getattr(self.engine, "num_optimization_profiles", 1) or 1)
        out = []
        for k in range(count):
            entry = {n: p for n in names if (p := self.profile(n, k)) is not None}
            out.append(entry)
        return out

    # -- inference ---------------------------------------------------------------------------
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        specs = {s.name: s for s in self.inputs}
        missing = sorted(set(specs) - set(feed))
        if missing:
            raise InputError(f"engine {self.path.name} needs inputs {', '.join(missing)}")
        prepared = {}
        for name, spec in specs.items():
            arr = np.ascontiguousarray(feed[name])
            if arr.dtype != np.dtype(spec.dtype):
                raise InputError(f"input {name}: dtype {arr.dtype} given, the engine expects {spec.dtype}")
            prepared[name] = arr
        dynamic = [name for name, spec in specs.items() if None in spec.shape]
        if dynamic:
            # the first profile whose min..max holds these shapes (e.g. this length); TensorRT runs
            # a shape only under a profile that contains it (docs/tensorrt.md, several profiles)
            index = choose_profile({n: tuple(prepared[n].shape) for n in dynamic}, self.profiles(dynamic))
            if index != self._profile_index:
                try:
                    self._runner.set_profile(index)  # context.set_optimization_profile_async
                except Exception as exc:  # PolygraphyException
                    raise InputError(f"TensorRT could not switch {self.path.name} to optimization profile {index}: "
                                     f"{' '.join(str(exc).split())}") from exc
                self._profile_index = index
        try:
            outs = self._runner.infer(prepared)
        except Exception as exc:  # PolygraphyException, CUDA errors
            raise InputError(f"TensorRT failed to run {self.path.name}: {' '.join(str(exc).split())}") from exc
        # Polygraphy reuses its host buffers between calls: copy.
        return {k: np.array(v, copy=True) for k, v in outs.items()}

    def describe(self) -> dict[str, Any]:
        meta = self.meta or {}
        return {
            "runner": self.name,
            "tensorrt": str(self._trt.__version__) if self._trt is not None else None,
            "gpu": self._device.get("name"),
            "compute_capability": self._device.get("compute_capability"),
            "precision": meta.get("precision", "unknown (no sidecar)"),
            "profiles": meta.get("profiles"),
            "built_with_tensorrt": meta.get("tensorrt_version"),
            "built_on_gpu": (meta.get("gpu") or {}).get("name"),
            "warnings": list(self.warnings),
        }
