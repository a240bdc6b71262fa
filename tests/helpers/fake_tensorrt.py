"""A stand-in ``tensorrt`` module for CPU tests of optkit's TensorRT *wiring*.

It implements only the API surface optkit calls (names as documented in docs/tensorrt.md), records
what optkit asked for (network flags, pool limit, profiles, builder flags, timing cache), and can
be told to fail the parse (with ParserError objects), fail the build (log errors, return None)
or fail deserialization (return None). It proves nothing about TensorRT itself: the GPU tests
in test_gpu_device.py do that where TensorRT exists.
"""
from __future__ import annotations

import enum
import types
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Record:
    network_flags: int | None = None
    parsed: str | None = None
    parser_flags: list[str] = field(default_factory=list)
    pool_limits: dict[str, int] = field(default_factory=dict)
    opt_level: int | None = None
    builder_flags: list[str] = field(default_factory=list)
    hw_level: str | None = None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    timing_cache_in: bytes | None = None
    deserialized: bytes | None = None
    engine_host_code_allowed: bool = False
    onnx_precision: str | None = None
    profile_count: int = 0                # optimization profiles added (add_optimization_profile)
    profile_switches: list[int] = field(default_factory=list)  # FakeTrtRunner.set_profile calls
    inferred_shapes: list[dict[str, tuple[int, ...]]] = field(default_factory=list)


@dataclass
class FakeParserError:
    _code: Any
    _desc: str
    _node: int = -1
    _name: str = ""
    _op: str = ""

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def __str__(self) -> str:
        return f"In node {self._node} ({self._op}): {self._desc}"


def make_fake_tensorrt(
    version: str = "10.9.0.34",
    parser_errors: list[FakeParserError] | None = None,
    build_errors: list[str] | None = None,
    plan: bytes = b"FAKE-PLAN",
    deserialize_ok: bool = False,
    deserialize_errors: tuple[str, ...] = ("Error Code 6: The engine plan file is not compatible with this version "
                                           "of TensorRT, expecting library version 10.8.0.43 got 10.9.0.34, please "
                                           "rebuild.",),
    set_timing_cache_ok: bool = True,
) -> tuple[types.ModuleType, Record]:
    rec = Record()
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

    ILogger.Severity = Severity

    NetFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 5, "PREFER_JIT_PYTHON_PLUGINS": 6})
    builder_flag_names = ["TF32", "VERSION_COMPATIBLE", "REFIT"] + (["FP16", "INT8", "BF16"] if major < 11 else [])
    BuilderFlag = enum.Enum("BuilderFlag", builder_flag_names)
    MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "TACTIC_SHARED_MEMORY"])
    HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel",
                                           ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"])
    OnnxParserFlag = enum.Enum("OnnxParserFlag", ["NATIVE_INSTANCENORM"])
    ErrorCode = enum.Enum("ErrorCode", ["SUCCESS", "UNSUPPORTED_NODE", "INVALID_NODE"])
    TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags: int):
            rec.network_flags = flags
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        def __init__(self, network: Network, logger: Any):
            self.network, self.logger = network, logger
            self.errors: list[Any] = []

        def set_flag(self, flag: Any) -> None:
            rec.parser_flags.append(flag.name)

        def parse_from_file(self, path: str) -> bool:
            import onnx

            from optkit.model.onnx_utils import io_specs, model_precision

            rec.parsed = path
            model = onnx.load(path)
            rec.onnx_precision = model_precision(model)
            inputs, _ = io_specs(model)
            self.network.inputs = [Tensor(s.name, tuple(d if isinstance(d, int) else -1 for d in s.shape))
                                   for s in inputs]
            if parser_errors:
                self.errors = list(parser_errors)
                self.logger.log(Severity.ERROR, "ModelImporter.cpp:... While parsing node number 3")
                return False
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> Any:
            return self.errors[i]

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self) -> bytes:
            return b"CACHE:" + self.data

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, Any] = {}

        def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            self.shapes[name] = {"min": list(lo), "opt": list(opt), "max": list(hi)}

    class Config:
        def __init__(self) -> None:
            self.flags = {"TF32"}
            self.cache: TimingCache | None = None
            self._hw = None

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            rec.pool_limits[pool.name] = size

        @property
        def builder_optimization_level(self) -> int | None:
            return rec.opt_level

        @builder_optimization_level.setter
        def builder_optimization_level(self, value: int) -> None:
            rec.opt_level = value

        @property
        def hardware_compatibility_level(self) -> Any:
            return self._hw

        @hardware_compatibility_level.setter
        def hardware_compatibility_level(self, value: Any) -> None:
            rec.hw_level = value.name

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag.name)
            rec.builder_flags.append(flag.name)

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(flag.name)
            rec.builder_flags.append("-" + flag.name)

        def get_flag(self, flag: Any) -> bool:
            return flag.name in self.flags

        def create_timing_cache(self, data: bytes) -> TimingCache:
            if data:
                rec.timing_cache_in = bytes(data)
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            if not set_timing_cache_ok and cache.data:
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> TimingCache | None:
            return self.cache

        def add_optimization_profile(self, profile: Profile) -> int:
            index = rec.profile_count
            rec.profile_count += 1
            for name, s in profile.shapes.items():
                rec.profiles.append({"profile": index, "input": name, **s})
            return index

    class Builder:
        def __init__(self, logger: Any):
            self.logger = logger

        def create_network(self, flags: int = 0) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> Any:
            self.logger.log(Severity.INFO, "building (info lines are not kept)")
            self.logger.log(Severity.WARNING, "a harmless warning")
            if build_errors:
                for e in build_errors:
                    self.logger.log(Severity.ERROR, e)
                return None
            return memoryview(plan)  # IHostMemory supports the buffer protocol

    class Runtime:
        def __init__(self, logger: Any):
            self.logger = logger
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            rec.deserialized = bytes(data)
            rec.engine_host_code_allowed = self.engine_host_code_allowed
            if not deserialize_ok:
                for e in deserialize_errors:
                    self.logger.log(Severity.ERROR, e)
                return None
            return object()

    for name, obj in dict(
        nptype=lambda dtype: "float32", ILogger=ILogger, NetworkDefinitionCreationFlag=NetFlag, BuilderFlag=BuilderFlag,
        MemoryPoolType=MemoryPoolType, HardwareCompatibilityLevel=HardwareCompatibilityLevel,
        OnnxParserFlag=OnnxParserFlag, ErrorCode=ErrorCode, TensorIOMode=TensorIOMode, OnnxParser=OnnxParser,
        Builder=Builder, Runtime=Runtime,
    ).items():
        setattr(trt, name, obj)
    return trt, rec


FAKE_DEVICE = {"available": True, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
               "total_memory_bytes": 80 << 30, "count": 1, "source": "fake"}


def install(monkeypatch: Any, trt: types.ModuleType, device: dict[str, Any] | None = None) -> None:
    """Make ``import tensorrt`` return ``trt`` and the CUDA probe report ``device``."""
    import sys

    from optkit.runtime import gpu

    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(gpu, "cuda_device", lambda index=0: dict(device or FAKE_DEVICE))


class FakeEngine:
    """The engine queries the TensorRT runner makes (tensor-name API, optimization profiles):
    ``io``: {name: (mode "INPUT"/"OUTPUT", shape with -1 for dynamic)}; ``profiles``: per
    profile {input: (min, opt, max)}."""

    def __init__(self, trt: types.ModuleType, io: dict[str, tuple[str, tuple[int, ...]]],
                 profiles: list[dict[str, tuple[Any, Any, Any]]]):
        self.trt, self.io, self._profiles = trt, io, profiles
        self.num_io_tensors = len(io)
        self.num_optimization_profiles = len(profiles)

    def get_tensor_name(self, i: int) -> str:
        return list(self.io)[i]

    def get_tensor_mode(self, name: str) -> Any:
        return getattr(self.trt.TensorIOMode, self.io[name][0])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.io[name][1]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def get_tensor_profile_shape(self, name: str, index: int) -> Any:
        return [tuple(s) for s in self._profiles[index][name]]


class FakeTrtRunner:
    """Polygraphy's TrtRunner as the TensorRT runner uses it: records set_profile and the shapes run;
    a shape outside the active profile fails as TensorRT's set_input_shape would."""

    def __init__(self, engine: FakeEngine, rec: Record):
        self.engine, self.rec, self.active_profile = engine, rec, 0

    def set_profile(self, index: int) -> None:
        self.rec.profile_switches.append(index)
        self.active_profile = index

    def infer(self, feed: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        for name, arr in feed.items():
            lo, _, hi = self.engine.get_tensor_profile_shape(name, self.active_profile)
            if not all(a <= d <= b for a, d, b in zip(lo, arr.shape, hi)):
                raise RuntimeError(f"set_input_shape({name}, {arr.shape}) outside profile {self.active_profile}")
        self.rec.inferred_shapes.append({n: tuple(a.shape) for n, a in feed.items()})
        first = next(iter(feed.values()))
        return {n: np.full((first.shape[0], 1), float(self.active_profile), dtype=np.float32)
                for n, (mode, _) in self.engine.io.items() if mode == "OUTPUT"}
