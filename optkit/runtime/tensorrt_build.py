"""Building a TensorRT engine with the TensorRT Python API: option parsing, optimization
profiles, parse/build with one-line error messages.

Why the TensorRT API directly and not Polygraphy's loaders (``NetworkFromOnnxPath``,
``CreateConfig``, ``EngineBytesFromNetwork``): the build is ~40 lines either way, but optkit
must report a parse failure as one line naming the failing node (``ParserError.node()``,
``node_name()``, ``node_operator()``, ``desc()``) and a build failure with the errors TensorRT
logged; Polygraphy prints those to its own logger and raises "See logging output above".
The API facts this relies on are in docs/tensorrt.md. Plain arguments only: this module knows
nothing of passes or configs (``optkit.passes.build_engine`` calls it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError, PassFailed, RuntimeUnavailable
from optkit.runtime.gpu import tensorrt_logger
from optkit.common.errors import ParameterError

DEFAULT_BATCH = (1, 1, 8)

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'1G', '512M', '2GiB', '1073741824' -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise InputError(f"workspace size {text!r} is not a size like 512M, 1G or 2GiB")
        value = int(float(m.group(1)) * (1 << (10 * " kmgt".index((m.group(2) or " ").lower()))))
    if value <= 0:
        raise InputError(f"workspace size {text!r} must be positive")
    return value


def parse_batch(text: str | int) -> tuple[int, int, int]:
    """'1:4:8' -> (1, 4, 8); '4' -> (4, 4, 4). MIN <= OPT <= MAX, all >= 1."""
    s = str(text).strip()
    parts = s.split(":")
    if len(parts) == 1:
        parts = parts * 3
    if len(parts) != 3:
        raise InputError(f"batch range {text!r} is not MIN:OPT:MAX (e.g. 1:4:8) or one number")
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"batch range {text!r} is not MIN:OPT:MAX with integers (e.g. 1:4:8)") from None
    if lo < 1:
        raise InputError(f"batch range {text!r}: MIN must be >= 1")
    if not lo <= opt <= hi:
        raise InputError(f"batch range {text!r}: need MIN <= OPT <= MAX")
    return lo, opt, hi


def input_profiles(inputs: list[Any], batch: str | None,
                   lengths: dict[str, dict[int, tuple[int, int, int]]] | None = None) -> list[dict[str, Any]]:
    """One profile entry per model input: ``{"input", "min", "opt", "max"}`` (lists of ints).

    A dynamic first axis is the batch axis. Another dynamic axis needs a declared length range
    (``lengths``: {input: {axis: (min, opt, max)}}, from the model's metadata, see
    :func:`declared_lengths`), which becomes its min/opt/max; others are refused. A static batch
    must match the requested range.
    """
    if not inputs:
        raise InputError("the model has no inputs")
    requested = parse_batch(batch) if batch is not None else None
    profiles = []
    for spec in inputs:
        if not spec.shape:
            raise InputError(f"input {spec.name} has no shape (a scalar or unknown rank); TensorRT needs ranks")
        declared = (lengths or {}).get(spec.name, {})
        rest: list[tuple[int, int, int]] = []
        for i, d in enumerate(spec.shape[1:], start=1):
            if isinstance(d, int) and d > 0:
                rest.append((d, d, d))
            elif i in declared:
                rest.append(declared[i])
            else:
                raise InputError(f"input {spec.name} has a dynamic dimension {i} ({d}) without a declared length "
                                 "range; export it with --dynamic-axis NAME:AXIS --length-range MIN:MAX, or fixed")
        first = spec.shape[0]
        if isinstance(first, int) and first > 0:
            if requested is not None and requested != (first, first, first):
                raise ParameterError(
                    "batch", f"input {spec.name} has a static batch of {first}, so {{name}} must be {first} "
                    f"(got {':'.join(map(str, requested))}); export the model with a dynamic batch axis "
                    "to build an engine for a batch range"
                )
            lo = opt = hi = first
        else:
            lo, opt, hi = requested or DEFAULT_BATCH
        profiles.append({"input": spec.name, "min": [lo, *(r[0] for r in rest)], "opt": [opt, *(r[1] for r in rest)],
                         "max": [hi, *(r[2] for r in rest)]})
    return profiles


def declared_lengths(axes: list[Any]) -> dict[str, dict[int, tuple[int, int, int]]]:
    """{input: {axis: (min, opt, max)}} of the model's declared dynamic axes besides the batch
    (optkit.model.dynamic.DynamicAxis): min/max the length range, opt the export length (the
    range's minimum where the model does not record it)."""
    out: dict[str, dict[int, tuple[int, int, int]]] = {}
    for a in axes:
        if a.is_batch or a.min is None:
            continue
        hi = int(a.max if a.max is not None else a.min)
        opt = getattr(a, "opt", None)
        opt = int(opt) if opt is not None and a.min <= opt <= hi else int(a.min)
        out.setdefault(a.tensor, {})[a.axis] = (int(a.min), opt, hi)
    return out


def parse_profile(text: str) -> tuple[str, list[int], list[int], list[int]]:
    """``NAME:MIN,OPT,MAX`` with each shape ``1x1x40x100`` -> (name, min, opt, max)."""
    name, sep, shapes = str(text).strip().rpartition(":")
    parts = shapes.split(",")
    example = "input_mfcc:1x1x40x100,1x1x40x241,1x1x40x400"
    if not sep or not name or len(parts) != 3:
        raise InputError(f"profile {text!r} is not NAME:MIN,OPT,MAX with shapes like 1x1x40x241 (e.g. {example})")
    try:
        lo, opt, hi = ([int(d) for d in p.strip().lower().split("x")] for p in parts)
    except ValueError:
        raise InputError(f"profile {text!r}: shapes are integers joined by x (e.g. {example})") from None
    if not len(lo) == len(opt) == len(hi):
        raise InputError(f"profile {text!r}: MIN, OPT and MAX have different ranks")
    for i, (a, b, c) in enumerate(zip(lo, opt, hi)):
        if a < 1 or not a <= b <= c:
            raise InputError(f"profile {text!r}: dimension {i} needs 1 <= MIN <= OPT <= MAX (got {a}, {b}, {c})")
    return name.strip(), lo, opt, hi


def check_profiles(values: Any) -> None:
    """The config check of ``--profile`` (each value parses)."""
    for v in values:
        parse_profile(v)


def optimization_profiles(inputs: list[Any], batch: str | None, values: Any = (),
                          lengths: dict[str, dict[int, tuple[int, int, int]]] | None = None) -> list[dict[str, Any]]:
    """The engine's optimization profiles as a flat list of entries ``{"profile", "input", "min",
    "opt", "max"}``: without ``values`` one profile (:func:`input_profiles`); else one profile per
    ``--profile`` value, whose input takes the given shapes (static dimensions must match, a
    declared length must stay inside the model's range) and the other inputs their defaults."""
    defaults = input_profiles(inputs, batch, lengths)
    if not values:
        return [{"profile": 0, **p} for p in defaults]
    specs = {s.name: s for s in inputs}
    out = []
    for k, text in enumerate(values):
        name, lo, opt, hi = parse_profile(text)
        spec = specs.get(name)
        if spec is None:
            raise InputError(f"profile {text!r}: the model has no input {name!r} (its inputs: {', '.join(specs)})")
        if len(lo) != len(spec.shape):
            raise InputError(f"profile {text!r}: input {name} has rank {len(spec.shape)} {tuple(spec.shape)}, "
                             f"the profile's shapes rank {len(lo)}")
        declared = (lengths or {}).get(name, {})
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d > 0 and not lo[i] == opt[i] == hi[i] == d:
                raise InputError(f"profile {text!r}: dimension {i} of {name} is fixed at {d}")
            if i in declared and (lo[i] < declared[i][0] or hi[i] > declared[i][2]):
                raise InputError(f"profile {text!r}: dimension {i} of {name} ({lo[i]}..{hi[i]}) leaves the model's "
                                 f"declared length range {declared[i][0]}..{declared[i][2]}")
        for p in defaults:
            if p["input"] == name:
                out.append({"profile": k, "input": name, "min": lo, "opt": opt, "max": hi})
            else:
                out.append({"profile": k, **p})
    return out


def describe_profiles(profiles: list[dict[str, Any]]) -> str:
    """'0: input_mfcc 1x1x40x100..1x1x40x400 (opt 1x1x40x241); 1: ...' for messages."""
    def shape(s: list[int]) -> str:
        return "x".join(map(str, s))

    return "; ".join(f"{p.get('profile', 0)}: {p['input']} {shape(p['min'])}..{shape(p['max'])} (opt {shape(p['opt'])})"
                     for p in profiles)


def _call(obj: Any, name: str) -> Any:
    fn = getattr(obj, name, None)
    try:
        return fn() if callable(fn) else None
    except Exception:  # noqa: BLE001 - a missing detail must not hide the error itself
        return None


def format_parser_error(err: Any) -> str:
    """One ParserError -> 'node 12 "Conv_3" (Conv): <desc> [UNSUPPORTED_NODE]'."""
    node, name, op = _call(err, "node"), _call(err, "node_name"), _call(err, "node_operator")
    desc = _call(err, "desc") or str(err)
    code = _call(err, "code")
    code_text = getattr(code, "name", None) or (str(code).split(".")[-1] if code is not None else "")
    where = "model" if node is None or int(node) < 0 else f"node {int(node)}"
    if name:
        where += f" {name!r}"
    if op:
        where += f" ({op})"
    text = f"{where}: {' '.join(str(desc).split())}"
    return text + (f" [{code_text}]" if code_text else "")


def parser_failure_message(onnx_name: str, errors: list[Any], logged: list[str]) -> str:
    if not errors:
        detail = logged[-1] if logged else "no details reported"
        return f"TensorRT could not parse {onnx_name}: {detail}"
    more = f" (+{len(errors) - 1} more parser errors)" if len(errors) > 1 else ""
    return f"TensorRT could not parse {onnx_name}: {format_parser_error(errors[0])}{more}"


def build_failure_message(onnx_name: str, logged: list[str]) -> str:
    detail = " | ".join(logged[-3:]) if logged else "TensorRT logged no error"
    return f"TensorRT could not build an engine from {onnx_name}: {detail}"


@dataclass
class BuildOutput:
    plan: Any                # IHostMemory (buffer protocol)
    timing_cache: bytes | None
    builder_flags: list[str]
    network_flags: list[str]
    warnings: list[str]
    tensorrt_version: str


def build_serialized(trt: Any, onnx_path: Path, profiles: list[dict[str, Any]], *, workspace: str | int,
                     opt_level: int, version_compatible: bool, hardware_compatibility: str, tf32: bool,
                     timing_cache_bytes: bytes | None) -> BuildOutput:
    """Parse ``onnx_path`` and build a serialized engine; docs/tensorrt.md (building an engine) has the steps."""
    logger = tensorrt_logger(trt)
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # CUDA initialisation failures surface here
        raise RuntimeUnavailable(f"TensorRT could not create a builder ({exc}): "
                                 + (" | ".join(logger.errors) or "is a CUDA GPU usable?")) from exc
    if builder is None:
        raise RuntimeUnavailable("TensorRT could not create a builder: "
                                 + (" | ".join(logger.errors) or "is a CUDA GPU usable?"))
    network_flags: list[str] = []
    flags = 0
    # TRT 10: opt-in; TRT 11: deprecated, always on, ignored (still accepted).
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network_flags.append("STRONGLY_TYPED")
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if version_compatible or hardware_compatibility != "none":
        # required by version- and hardware-compatible engines (on by default; made explicit)
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise PassFailed(parser_failure_message(onnx_path.name, errors, list(logger.errors)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, parse_size(workspace))
    config.builder_optimization_level = int(opt_level)
    builder_flags: list[str] = []
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        builder_flags.append("VERSION_COMPATIBLE")
    if hardware_compatibility != "none":
        level = hardware_compatibility.upper()
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if hasattr(trt.BuilderFlag, "TF32"):
        if tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
        if config.get_flag(trt.BuilderFlag.TF32):
            builder_flags.append("TF32")

    warnings: list[str] = []
    cache = config.create_timing_cache(timing_cache_bytes or b"")
    if cache is None and timing_cache_bytes:
        warnings.append("the timing cache could not be read; starting a new one")
        cache = config.create_timing_cache(b"")
    if cache is not None and not config.set_timing_cache(cache, False):
        # Recorded on another GPU/TensorRT: TensorRT refuses it (ignore_mismatch=False).
        warnings.append("the timing cache does not match this GPU/TensorRT; starting a new one")
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)

    # One TensorRT optimization profile per "profile" index (docs/tensorrt.md: several profiles).
    for index in sorted({int(p.get("profile", 0)) for p in profiles}):
        entries = [p for p in profiles if int(p.get("profile", 0)) == index
                   and not (p["min"] == p["max"] and network_input_is_static(network, p["input"]))]
        if not entries:
            continue
        profile = builder.create_optimization_profile()
        for p in entries:
            profile.set_shape(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        if config.add_optimization_profile(profile) < 0:
            raise PassFailed(f"TensorRT refused optimization profile {index} "
                             f"({', '.join(p['input'] for p in entries)}): "
                             + (" | ".join(logger.errors) or "no details"))

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise PassFailed(build_failure_message(onnx_path.name, list(logger.errors)))
    new_cache = config.get_timing_cache()
    cache_bytes = bytes(memoryview(new_cache.serialize())) if new_cache is not None else None
    return BuildOutput(plan, cache_bytes, builder_flags, network_flags, warnings + list(logger.warnings)[-5:],
                       str(trt.__version__))


def network_input_is_static(network: Any, name: str) -> bool:
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if tensor.name == name:
            return all(int(d) >= 0 for d in tensor.shape)
    return False
