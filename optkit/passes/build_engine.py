"""build-engine: ONNX -> serialized TensorRT engine (+ sidecar JSON).

The TensorRT build itself is :mod:`optkit.runtime.tensorrt_build`, the Q/DQ form check
:mod:`optkit.quantization.qdq_form`; this module is the pass: options, the precision pre-step, the sidecar and
the self-check of the built engine.

Precision, one path for every TensorRT version (>= 10): the network is always created
STRONGLY_TYPED, so the engine's precision is the ONNX model's dtypes. TensorRT 11 only
works this way (the FP16/INT8 builder flags and calibrators are gone); on TensorRT 10 the same
path keeps builds reproducible across versions, instead of FP16-flag builds whose per-layer
choice TensorRT makes. So for ``precision="fp16"`` / ``"int8"`` from an fp32 model, the pass
declares a pre-step (:meth:`BuildEngine.pre_steps`): quantize-fp16 (fp32 inputs/outputs kept) or
quantize-int8 target=tensorrt (signed symmetric int8), run and cached like any other step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from optkit.model.artifact import Artifact, now_iso
from optkit.common.errors import InputError, MissingDependency, PassFailed, RuntimeUnavailable
from optkit.common.fileio import check_output_path, require_file, sha256_file
from optkit.passes.config import option
from optkit.common.errors import ParameterError
from optkit.passes.base import Pass, PassOutput, PassResult, PreStep
from optkit.quantization.qdq_form import tensorrt_qdq_problems
from optkit.runtime.tensorrt_build import (  # noqa: F401 - re-exported: the CLI and tests use them from here
    DEFAULT_BATCH,
    build_serialized,
    check_profiles,
    declared_lengths,
    describe_profiles,
    format_parser_error,
    input_profiles,
    optimization_profiles,
    parse_batch,
    parse_size,
)

@dataclass(frozen=True)
class BuildEngineConfig:
    precision: Literal["fp32", "fp16", "int8"] | None = option(
        None, "Engine precision. Default: the model's own. fp16/int8 from an fp32 model: optkit makes the fp16 / "
        "TensorRT-form QDQ int8 model first (a pre-step; int8 needs calibration data).")
    batch: str | None = option(None, "Optimization profile for the batch axis, MIN:OPT:MAX (or N). Default 1:1:8 "
                               "(dynamic batch), or the model's static batch.", metavar="MIN:OPT:MAX",
                               check=parse_batch)
    profiles: tuple[str, ...] = option(
        (), "One TensorRT optimization profile: NAME:MIN,OPT,MAX with shapes like 1x1x40x241, e.g. "
        "input_mfcc:1x1x40x100,1x1x40x241,1x1x40x400 (repeatable: one profile each; the engine runs a length "
        "with the first profile that holds it). Default: one profile from the model's declared length range "
        "(min, the export length, max) and --batch.", flag="--profile", metavar="NAME:MIN,OPT,MAX", multiple=True,
        split=False, check=check_profiles)
    workspace: str = option("1G", "TensorRT workspace memory limit (512M, 1G, 2GiB, or bytes).", check=parse_size)
    timing_cache: str | None = option(None, "Timing cache file: loaded if it exists, saved after the build "
                                      "(speeds up rebuilds).", path=True, output=True)
    calibration: str | None = option(None, "Calibration samples (dir of .npy or .npz) for precision int8 from an "
                                     "fp32 model.", path=True)
    opt_level: int = option(3, "Builder optimization level (0 fastest build ... 5 most tactics).", min=0, max=5)
    version_compatible: bool = option(False, "Build an engine that later TensorRT versions can load (may run "
                                      "slower).")
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = option(
        "none", "Let the engine run on other GPU architectures.")
    # What to do when TensorRT or a CUDA GPU is not usable here: fail (error) or skip (the
    # pipeline reports the step as skipped with the reason, never as passed).
    if_unavailable: Literal["fail", "skip"] = option("fail", "fail or skip where TensorRT/a GPU is not usable.",
                                                     cli=False)
    # TensorRT enables TF32 by default, but measured on an H100 (benchmarks/gpu_check.sh,
    # PyTorch/cuDNN on voice-resnet-seed) TF32 moved outputs by 3.9e-3 against 1.3e-5 without it:
    # far outside the fp32 gate (1e-4). Off unless asked for.
    tf32: bool = option(False, "Allow TF32 tensor cores for fp32 layers (faster; off by default because it moves "
                        "outputs by ~1e-3, beyond the fp32 verification gate).")


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
    kind = "engine"
    tools = ("onnx",)

    def fingerprint(self, cfg: BuildEngineConfig) -> str:
        """Calibration data, TensorRT version and GPU: an engine is only valid for those."""
        from optkit.runtime import gpu
        from optkit.data.samples import fingerprint as data_fingerprint

        parts = [f"tensorrt={gpu.tensorrt_version()}"]
        if cfg.calibration:
            parts.append("calibration=" + data_fingerprint(cfg.calibration))
        if gpu.tensorrt_version():
            dev = gpu.cuda_device()
            parts.append(f"gpu={dev.get('name')}/{dev.get('compute_capability')}")
        return ";".join(parts)

    def side_outputs(self, cfg: BuildEngineConfig, out: Path) -> list[Path]:
        from optkit.runtime.engine_meta import sidecar_path

        return [sidecar_path(out)] + ([Path(cfg.timing_cache)] if cfg.timing_cache else [])

    def validate(self, src: Artifact | None, cfg: BuildEngineConfig) -> None:
        """Options and the model, before TensorRT is looked for (so these errors show anywhere)."""
        from optkit.model.onnx_utils import io_specs, load_onnx, model_precision

        if src is None:
            raise InputError("build-engine needs an ONNX model as input")
        src_path = require_file(src.path, "ONNX model")
        model = load_onnx(src_path)
        inputs, _ = io_specs(model)
        model_profiles(model, inputs, cfg)
        src_precision = model_precision(model)
        wanted = cfg.precision or src_precision
        if wanted != src_precision and src_precision != "fp32":
            raise ParameterError(
                "precision", f"{src_path.name} is already {src_precision}; it cannot become a {wanted} engine: "
                f"pass the fp32 model with {{name}} {wanted}, or omit {{name}}"
            )
        if wanted != src_precision and wanted == "int8":
            if not cfg.calibration:
                raise ParameterError("calibration", "an int8 engine from an fp32 model needs calibration data: "
                                     "give {name} DIR (or pass a QDQ int8 model)")
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

    def unavailable(self, cfg: BuildEngineConfig) -> tuple[type[Exception], str] | None:
        from optkit.runtime import gpu

        return gpu.unavailable_reason_tensorrt()

    def pre_steps(self, src: Artifact, cfg: BuildEngineConfig) -> list[PreStep]:
        if cfg.precision is None or cfg.precision == src.precision:
            return []
        if cfg.precision == "fp16":
            return [PreStep("quantize-fp16", {"keep_io_types": True})]
        return [PreStep("quantize-int8", {"target": "tensorrt", "calibration": str(cfg.calibration)})]

    def run(self, src: Artifact | None, cfg: BuildEngineConfig, out: PassOutput) -> PassResult:
        from optkit.runtime import gpu
        from optkit.runtime import engine_meta
        from optkit.runtime.engine_meta import make_sidecar, sidecar_path
        from optkit.model.onnx_utils import io_specs, load_onnx, model_precision

        assert src is not None
        origin = out.origin or src
        model = load_onnx(src.path)
        inputs, _ = io_specs(model)
        profiles = model_profiles(model, inputs, cfg)
        precision = model_precision(model)
        del model
        trt, device = gpu.require_tensorrt_gpu()
        timing_cache = Path(cfg.timing_cache) if cfg.timing_cache else None
        if timing_cache is not None:
            check_output_path(timing_cache)

        started = time.perf_counter()
        messages: list[str] = []
        cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else None
        built = build_serialized(trt, src.path, profiles, workspace=cfg.workspace, opt_level=cfg.opt_level,
                                 version_compatible=cfg.version_compatible,
                                 hardware_compatibility=cfg.hardware_compatibility, tf32=cfg.tf32,
                                 timing_cache_bytes=cache_bytes)
        with open(out.path, "wb") as f:
            f.write(built.plan)
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
            source_onnx=origin.path.name,
            source_onnx_sha256=origin.sha256,
            built_onnx_sha256=src.sha256,
            engine_sha256=sha256_file(out.path),
            optkit_version=optkit.__version__,
            created=now_iso(),
            build_seconds=round(elapsed, 1),
        )
        engine_meta.write_sidecar(out.final, meta, dest=out.side(sidecar_path(out.final)))
        if timing_cache is not None and built.timing_cache:
            out.side(timing_cache).write_bytes(built.timing_cache)
            messages.append(f"timing cache saved to {timing_cache}")

        messages.append(f"built {out.final.name}: {precision} engine for {device.get('name')} "
                        f"(compute {device.get('compute_capability')}), TensorRT {built.tensorrt_version}, "
                        f"batch {profiles[0]['min'][0]}:{profiles[0]['opt'][0]}:{profiles[0]['max'][0]}, "
                        f"{elapsed:.1f} s")
        if cfg.profiles or any(p["min"][1:] != p["max"][1:] for p in profiles):
            messages.append(f"optimization profiles: {describe_profiles(profiles)}")
        messages += [f"TensorRT warning: {w}" for w in built.warnings]
        return PassResult(messages=messages, info={"build_seconds": round(elapsed, 1), "sidecar": meta},
                          precision=precision, versions={"tensorrt": built.tensorrt_version},
                          extra={"gpu": device.get("name"), "compute_capability": device.get("compute_capability"),
                                 "sidecar": sidecar_path(out.final).name},
                          check_inputs=profiles)

    def check(self, src: Artifact | None, cfg: BuildEngineConfig, written: Path, result: PassResult) -> None:
        self_check(written, result.check_inputs, cfg.version_compatible)


def model_profiles(model: Any, inputs: list[Any], cfg: BuildEngineConfig) -> list[dict[str, Any]]:
    """The engine's optimization profiles (flat entries with a "profile" index) for ``model``."""
    from optkit.model.dynamic import read_dynamic_axes

    return optimization_profiles(inputs, cfg.batch, cfg.profiles, declared_lengths(read_dynamic_axes(model)))


def self_check(engine_path: Path, profiles: list[dict[str, Any]], version_compatible: bool = False) -> None:
    """The engine must load, expose the model's inputs, and run one batch to finite outputs."""
    from optkit.verification.comparator import check_finite
    from optkit.model.feeds import random_feed
    from optkit.runtime.tensorrt import TensorRTRunner

    runner = TensorRTRunner(engine_path, check_sidecar=False, allow_host_code=version_compatible)
    try:
        with runner:
            names = {s.name for s in runner.inputs}
            profiles = [p for p in profiles if int(p.get("profile", 0)) == 0]  # the runner starts on profile 0
            missing = [p["input"] for p in profiles if p["input"] not in names]
            if missing:
                raise PassFailed(f"the built engine lacks the model inputs {', '.join(missing)}")
            feed = random_feed(runner.inputs, seed=0, shapes={p["input"]: p["opt"] for p in profiles})
            check_finite(runner.infer(feed), "the built engine", "on a random input")
    except (MissingDependency, RuntimeUnavailable, InputError) as exc:
        raise PassFailed(f"the built engine failed its self-check: {exc}") from exc
