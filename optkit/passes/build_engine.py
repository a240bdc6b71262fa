"""build-engine: ONNX -> serialized TensorRT engine (+ sidecar JSON), with the TensorRT Python API.

Why the TensorRT API directly and not Polygraphy's loaders (``NetworkFromOnnxPath``,
``CreateConfig``, ``EngineBytesFromNetwork``): the build is ~40 lines either way, but optkit
must report a parse failure as one line naming the failing node (``ParserError.node()``,
``node_name()``, ``node_operator()``, ``desc()``) and a build failure with the errors TensorRT
logged; Polygraphy prints those to its own logger and raises "See logging output above". The
runner does use Polygraphy (``TrtRunner``), where it saves real code (device buffers, copies).

Precision, one path for every TensorRT version (>= 10): the network is always created
STRONGLY_TYPED, so the engine's precision is the ONNX model's dtypes. TensorRT 11 only
works this way (the FP16/INT8 builder flags and calibrators are gone); on TensorRT 10 the same
path keeps builds reproducible across versions, instead of FP16-flag builds whose per-layer
choice TensorRT makes. So for ``precision="fp16"`` / ``"int8"`` from an fp32 model, optkit first
writes the fp16 model (quantize-fp16, fp32 inputs/outputs kept) or the TensorRT-form QDQ int8
model (quantize-int8 target=tensorrt: signed symmetric int8) and builds that.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from optkit.workspace import work_dir
from optkit.artifact import Artifact, now_iso, tool_versions
from optkit.errors import InputError, MissingDependency, PassFailed, RuntimeUnavailable
from optkit.fileio import atomic_output, check_output_path, require_file, sha256_file, write_bytes_atomically
from optkit.gpu import tensorrt_logger
from optkit.passes.base import Pass, PassResult, config_to_dict

DEFAULT_BATCH = (1, 1, 8)
PRECISIONS = ("fp32", "fp16", "int8")
HW_COMPAT = ("none", "ampere_plus", "same_compute_capability")


@dataclass(frozen=True)
class BuildEngineConfig:
    # None: the ONNX model's own precision. fp16/int8 from an fp32 model: converted first.
    precision: Literal["fp32", "fp16", "int8"] | None = None
    # "MIN:OPT:MAX" for the batch axis (or "N" = N:N:N). None: 1:1:8 for a dynamic batch axis,
    # the model's own batch for a static one.
    batch: str | None = None
    workspace: str = "1G"          # TensorRT workspace pool limit: bytes, or 512M / 1G / 2GiB
    timing_cache: str | None = None  # loaded if it exists, saved (atomically) after the build
    calibration: str | None = None   # sample dir for int8 from an fp32 model
    opt_level: int = 3               # builder optimization level, 0..5
    version_compatible: bool = False
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    # What to do when TensorRT or a CUDA GPU is not usable here: fail (error) or skip (the
    # pipeline reports the step as skipped with the reason, never as passed).
    if_unavailable: Literal["fail", "skip"] = "fail"
    # TF32 tensor cores for fp32 layers. TensorRT enables TF32 by default, but measured on an
    # H100 (benchmarks/gpu_check.sh, PyTorch/cuDNN on voice-resnet-seed) TF32 moved outputs by
    # 3.9e-3 against 1.3e-5 without it: far outside the fp32 gate (1e-4). Off unless asked for.
    tf32: bool = False


# --------------------------------------------------------------------------------------------
# option parsing (shared with the CLI, which turns InputError into a click usage error)

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


# --------------------------------------------------------------------------------------------
# pure helpers: profiles and checks that need only the ONNX model

def input_profiles(inputs: list[Any], batch: str | None) -> list[dict[str, Any]]:
    """One profile entry per model input: ``{"input", "min", "opt", "max"}`` (lists of ints).

    A dynamic first axis is the batch axis; other dynamic axes are refused (optkit's models
    are fixed-size MFCC windows). A static batch must match the requested range.
    """
    if not inputs:
        raise InputError("the model has no inputs")
    requested = parse_batch(batch) if batch is not None else None
    profiles = []
    for spec in inputs:
        if not spec.shape:
            raise InputError(f"input {spec.name} has no shape (a scalar or unknown rank); TensorRT needs ranks")
        rest = []
        for i, d in enumerate(spec.shape[1:], start=1):
            if not isinstance(d, int) or d <= 0:
                raise InputError(f"input {spec.name} has a dynamic dimension {i} ({d}); only the batch axis "
                                 "(dimension 0) may be dynamic: export with a fixed input shape")
            rest.append(d)
        first = spec.shape[0]
        if isinstance(first, int) and first > 0:
            if requested is not None and requested != (first, first, first):
                raise InputError(
                    f"input {spec.name} has a static batch of {first}, so --batch must be {first} "
                    f"(got {':'.join(map(str, requested))}); export the model with a dynamic batch axis "
                    "to build an engine for a batch range"
                )
            lo = opt = hi = first
        else:
            lo, opt, hi = requested or DEFAULT_BATCH
        profiles.append({"input": spec.name, "min": [lo, *rest], "opt": [opt, *rest], "max": [hi, *rest]})
    return profiles


def tensorrt_qdq_problems(model: Any) -> list[str]:
    """Why TensorRT would reject this model's Q/DQ nodes (empty when fine).

    TensorRT takes signed int8 Q/DQ with zero point 0 only (uint8 or non-zero zero points fail
    the parse with INVALID_NODE, see notes/tensorrt.md §4). ORT's default quantisation makes
    exactly those, so catching it here gives a clear message instead of a parser error.
    onnx-tensorrt has no standalone check for this, hence these few lines.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a.t
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            out_dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            if node.op_type == "QuantizeLinear" and out_dtype != TensorProto.INT8:
                # without a zero point (or output_dtype) QuantizeLinear outputs uint8
                problems.append(f"QuantizeLinear {node.name or node.output[0]} has no zero point (uint8 output)")
            continue
        zp = inits.get(node.input[2]) or consts.get(node.input[2])
        if zp is None:
            problems.append(f"{node.op_type} {node.name or node.output[0]} has a computed zero point")
            continue
        if zp.data_type == TensorProto.UINT8:
            problems.append(f"{node.op_type} {node.name or node.output[0]} uses uint8 (TensorRT needs int8)")
        elif numpy_helper.to_array(zp).any():
            problems.append(f"{node.op_type} {node.name or node.output[0]} has a non-zero zero point")
    return problems


def _tensorrt_input(src_path: Path, model_precision: str, cfg: BuildEngineConfig,
                    workdir: Path) -> tuple[Path, str, list[str]]:
    """The ONNX file TensorRT will parse and its precision, converting an fp32 model if asked."""
    wanted = cfg.precision or model_precision
    if wanted == model_precision:
        return src_path, wanted, []
    assert model_precision == "fp32", "checked in BuildEngine.run"
    from optkit.passes import get_pass

    if wanted == "fp16":
        step = get_pass("quantize-fp16")
        step_cfg = step.make_config({"keep_io_types": True})
    else:
        step = get_pass("quantize-int8")
        step_cfg = step.make_config({"target": "tensorrt", "calibration": str(cfg.calibration)})
    out = workdir / f"{src_path.stem}.{wanted}.onnx"
    result = step.run(Artifact.from_file(src_path, kind="onnx", precision=model_precision), step_cfg, out)
    if result.skipped or result.artifact is None:
        raise PassFailed(f"could not make the {wanted} model for TensorRT: {result.skipped or 'no artifact'}")
    notes = [f"made a {wanted} model for TensorRT with {step.name}", *result.messages]
    return result.artifact.path, wanted, notes


# --------------------------------------------------------------------------------------------
# TensorRT

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


def build_serialized(trt: Any, onnx_path: Path, profiles: list[dict[str, Any]], cfg: BuildEngineConfig,
                     timing_cache_bytes: bytes | None) -> BuildOutput:
    """Parse ``onnx_path`` and build a serialized engine; notes/tensorrt.md §1 is the template."""
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
    if cfg.version_compatible or cfg.hardware_compatibility != "none":
        # required by version- and hardware-compatible engines (on by default; made explicit)
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        raise PassFailed(parser_failure_message(onnx_path.name, errors, list(logger.errors)))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, parse_size(cfg.workspace))
    config.builder_optimization_level = int(cfg.opt_level)
    builder_flags: list[str] = []
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        builder_flags.append("VERSION_COMPATIBLE")
    if cfg.hardware_compatibility != "none":
        level = cfg.hardware_compatibility.upper()
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if hasattr(trt.BuilderFlag, "TF32"):
        if cfg.tf32:
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

    for p in profiles:
        if p["min"] == p["max"] and network_input_is_static(network, p["input"]):
            continue
        profile = builder.create_optimization_profile()
        profile.set_shape(p["input"], tuple(p["min"]), tuple(p["opt"]), tuple(p["max"]))
        if config.add_optimization_profile(profile) < 0:
            raise PassFailed(f"TensorRT refused the optimization profile for {p['input']}: "
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


# --------------------------------------------------------------------------------------------
# the pass

def source_artifact(path: str | Path) -> Artifact:
    """An ONNX file as an Artifact, with InputError for missing/unreadable/corrupt files."""
    path = require_file(path, "ONNX model")
    if path.suffix.lower() != ".onnx":
        raise InputError(f"{path}: build-engine needs an .onnx model")
    return Artifact.from_file(path, kind="onnx")


class BuildEngine(Pass):
    name = "build-engine"
    config_cls = BuildEngineConfig
    output_suffix: ClassVar[str] = ".engine"

    def fingerprint(self, cfg: BuildEngineConfig) -> str:
        """Calibration data, TensorRT version and GPU: an engine is only valid for those."""
        from optkit import gpu
        from optkit.data import fingerprint as data_fingerprint

        parts = [f"tensorrt={gpu.tensorrt_version()}"]
        if cfg.calibration:
            parts.append("calibration=" + data_fingerprint(cfg.calibration))
        if gpu.tensorrt_version():
            dev = gpu.cuda_device()
            parts.append(f"gpu={dev.get('name')}/{dev.get('compute_capability')}")
        return ";".join(parts)

    def run(self, src: Artifact | None, cfg: BuildEngineConfig, out: Path) -> PassResult:
        from optkit import gpu
        from optkit.engine_meta import make_sidecar, sidecar_path, write_sidecar
        from optkit.onnx_utils import io_specs, load_onnx, model_precision

        if src is None:
            raise InputError("build-engine needs an ONNX model as input")
        out = check_output_path(out)
        check_output_path(sidecar_path(out))
        if cfg.precision is not None and cfg.precision not in PRECISIONS:
            raise InputError(f"precision {cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
        if cfg.hardware_compatibility not in HW_COMPAT:
            raise InputError(f"hardware_compatibility {cfg.hardware_compatibility!r} is not one of "
                             f"{', '.join(HW_COMPAT)}")
        if not 0 <= int(cfg.opt_level) <= 5:
            raise InputError(f"opt_level {cfg.opt_level} is outside 0..5")
        parse_size(cfg.workspace)
        timing_cache = Path(cfg.timing_cache) if cfg.timing_cache else None
        if timing_cache is not None:
            check_output_path(timing_cache)

        src_path = require_file(src.path, "ONNX model")
        model = load_onnx(src_path)
        inputs, _ = io_specs(model)
        profiles = input_profiles(inputs, cfg.batch)
        src_precision = model_precision(model)
        wanted = cfg.precision or src_precision
        if wanted != src_precision and src_precision != "fp32":
            raise InputError(
                f"{src_path.name} is already {src_precision}; it cannot become a {wanted} engine: "
                f"pass the fp32 model with --precision {wanted}, or omit --precision"
            )
        if wanted != src_precision and wanted == "int8":
            if not cfg.calibration:
                raise InputError("an int8 engine from an fp32 model needs calibration data: give --calibration DIR "
                                 "(or pass a QDQ int8 model)")
            if not Path(cfg.calibration).exists():
                raise InputError(f"calibration data {cfg.calibration} does not exist")
        if src_precision == "int8":
            problems = tensorrt_qdq_problems(model)
            if problems:
                raise InputError(
                    f"{src_path.name} has Q/DQ nodes TensorRT cannot take ({problems[0]}"
                    f"{f'; +{len(problems) - 1} more' if len(problems) > 1 else ''}): TensorRT needs signed "
                    "symmetric int8; re-quantize the fp32 model with quantize-int8 target=tensorrt"
                )
        del model

        unavailable = gpu.unavailable_reason_tensorrt()
        if unavailable is not None:
            exc_cls, reason = unavailable
            if cfg.if_unavailable == "skip":
                return PassResult(artifact=None, skipped=reason, messages=[f"skipped build-engine: {reason}"])
            raise exc_cls(reason)
        trt, device = gpu.require_tensorrt_gpu()

        started = time.perf_counter()
        messages: list[str] = []
        cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else None
        with work_dir("optkit-engine-") as work:
            onnx_for_trt, precision, conv_msgs = _tensorrt_input(src_path, src_precision, cfg, Path(work))
            messages += conv_msgs
            built = build_serialized(trt, onnx_for_trt, profiles, cfg, cache_bytes)
            built_sha = sha256_file(onnx_for_trt)
            with atomic_output(out, suffix=".engine") as tmp:
                with open(tmp, "wb") as f:
                    f.write(built.plan)
                self_check(tmp, profiles, cfg.version_compatible)
        elapsed = time.perf_counter() - started

        import optkit

        meta = make_sidecar(
            tensorrt_version=built.tensorrt_version,
            gpu_name=device.get("name"),
            compute_capability=device.get("compute_capability"),
            precision=precision,
            profiles=profiles,
            workspace_bytes=parse_size(cfg.workspace),
            builder_flags=built.builder_flags,
            network_flags=built.network_flags,
            opt_level=cfg.opt_level,
            version_compatible=cfg.version_compatible,
            hardware_compatibility=cfg.hardware_compatibility,
            source_onnx=src_path.name,
            source_onnx_sha256=src.sha256,
            built_onnx_sha256=built_sha,
            engine_sha256=sha256_file(out),
            optkit_version=optkit.__version__,
            created=now_iso(),
            build_seconds=round(elapsed, 1),
        )
        side_files = []
        try:
            side_files.append(write_sidecar(out, meta))
        except BaseException:
            out.unlink(missing_ok=True)  # an engine without its sidecar would load unchecked
            raise
        if timing_cache is not None and built.timing_cache:
            write_bytes_atomically(timing_cache, built.timing_cache)
            side_files.append(timing_cache)
            messages.append(f"timing cache saved to {timing_cache}")

        artifact = Artifact.from_file(
            out, kind="engine", precision=precision, made_by=self.name, config=config_to_dict(cfg),
            parent=src.sha256, tool_versions={**tool_versions("onnx"), "tensorrt": built.tensorrt_version},
            extra={"gpu": device.get("name"), "compute_capability": device.get("compute_capability"),
                   "sidecar": sidecar_path(out).name},
        )
        messages.insert(0, f"built {out.name}: {precision} engine for {device.get('name')} "
                           f"(compute {device.get('compute_capability')}), TensorRT {built.tensorrt_version}, "
                           f"batch {profiles[0]['min'][0]}:{profiles[0]['opt'][0]}:{profiles[0]['max'][0]}, "
                           f"{elapsed:.1f} s")
        messages += [f"TensorRT warning: {w}" for w in built.warnings]
        return PassResult(artifact=artifact, messages=messages, side_files=side_files,
                          info={"build_seconds": round(elapsed, 1), "sidecar": meta})


def self_check(engine_path: Path, profiles: list[dict[str, Any]], version_compatible: bool = False) -> None:
    """The engine must load, expose the model's inputs, and run one batch to finite outputs."""
    import numpy as np

    from optkit.runners.tensorrt import TensorRTRunner

    runner = TensorRTRunner(engine_path, check_sidecar=False, allow_host_code=version_compatible)
    try:
        with runner:
            names = {s.name for s in runner.inputs}
            missing = [p["input"] for p in profiles if p["input"] not in names]
            if missing:
                raise PassFailed(f"the built engine lacks the model inputs {', '.join(missing)}")
            rng = np.random.default_rng(0)
            dtypes = {s.name: s.dtype for s in runner.inputs}
            feed = {p["input"]: rng.standard_normal(p["opt"]).astype(dtypes[p["input"]]) for p in profiles}
            outs = runner.infer(feed)
            bad = [k for k, v in outs.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]
            if bad:
                raise PassFailed(f"the built engine produced NaN/Inf in {', '.join(bad)} on a random input")
    except (MissingDependency, RuntimeUnavailable, InputError) as exc:
        raise PassFailed(f"the built engine failed its self-check: {exc}") from exc
