"""quantize-int8: post-training static int8 (QDQ) with ONNX Runtime's quantiser.

The quantisation itself is ``onnxruntime.quantization.quantize_static``; this pass adds what the
release flow needs around it:

- ORT's pre-processing (``quant_pre_process``: symbolic shape inference + ORT basic graph
  optimisation, the step ORT's docs recommend before quantising).
- Calibration streamed in chunks (:mod:`optkit.calibration`), so the histogram methods stay in
  bounded memory; the ranges are handed to ``quantize_static`` through its own
  ``calibration_cache_path`` argument (ORT's supported way to quantise with precomputed ranges)
  and cached beside the output as ``<stem>.calib.json``.
- The QDQ form for the runtime that will run the model (``target``):

  ========  =======================  ==========================================================
  target    activations              why
  ========  =======================  ==========================================================
  cpu       QUInt8 (asymmetric)      ORT CPU fuses u8 activations x s8 weights into int8 kernels
                                     everywhere (3.1x fp32 measured); with s8 activations it
                                     leaves a third of the convs and every residual Add in fp32.
  openvino  QUInt8 (asymmetric)      Measured with OpenVINO 2026.4 on voice-resnet-seed (batch 1,
                                     2 threads, vs ORT fp32 in one interleaved run): u8
                                     activations 7.75x (min) / 4.93x (p50); symmetric s8 6.64x /
                                     4.33x; asymmetric s8 (ORT's QInt8 default) 0.93x - OpenVINO's
                                     CPU plugin does not run that form in int8 at all. So the
                                     OpenVINO form is, by measurement, the u8 one (see
                                     benchmarks/README.md); an earlier note said s8 was faster.
  tensorrt  QInt8, symmetric (zp 0)  TensorRT's ONNX parser rejects uint8 and non-zero zero
                                     points; NVIDIA ModelOpt's TensorRT-friendly ORT options.
  ========  =======================  ==========================================================

  Weights are always per-channel signed int8 (Conv output-channel axis 0).
"""
from __future__ import annotations

import collections
import contextlib
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit import calibration
from optkit.artifact import Artifact
from optkit.errors import InputError, PassFailed, first_line
from optkit.fileio import sha256_file
from optkit.lazy import lazy_import
from optkit.onnx_utils import QDQ_OPS, check_model, io_specs, load_onnx, model_precision
from optkit.options import ParameterError, option
from optkit.passes.base import Pass, PassOutput, PassResult
from optkit.workspace import work_dir

TARGETS = ("cpu", "openvino", "tensorrt")

# NVIDIA ModelOpt's "TensorRT friendly" quantize_static options (see docs/tensorrt.md, int8 Q/DQ):
# symmetric int8 activations and weights (all zero points 0), fp32 bias (TRT's parser has rejected
# int32 bias DQs), weights kept fp32 behind a Q->DQ pair, per-channel on the output channels.
TENSORRT_EXTRA_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "AddQDQPairToWeight": True,
    "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1},
    "DedicatedQDQPair": False,
    "ForceQuantizeNoInputCheck": True,
    "QDQDisableWeightAdjustForInt32Bias": True,
}

# (a config field is named calibration: the class body would see it, not the module)
METHODS, DEFAULT_PERCENTILE = calibration.METHODS, calibration.DEFAULT_PERCENTILE
CHECK_SAMPLES = 8  # calibration samples the pass runs through both models to check its result


@dataclass(frozen=True)
class QuantizeInt8Config:
    calibration: str = option(help="Calibration samples (directory of .npy files, or an .npz with x).",
                              path=True, metavar="DIR")
    target: str = option("cpu", "The runtime that will run the model; picks the QDQ form (cpu: u8 activations; "
                         "openvino: u8 too, measured fastest there; tensorrt: symmetric s8, zero points 0).",
                         choices=TARGETS)
    method: str = option("minmax", "Calibration method.", choices=METHODS)
    percentile: float = option(DEFAULT_PERCENTILE, "Percentile for method percentile.")
    exclude_nodes: tuple[str, ...] = option((), "Node names to keep in fp32 (see `optkit verify` for where error "
                                            "grows).", metavar="A,B")
    exclude_op_types: tuple[str, ...] = option((), "Op types to keep in fp32, e.g. Add,Sigmoid.", metavar="OP,OP")
    recalibrate: bool = option(False, "Ignore the calibration cache (<output stem>.calib.json).")
    calibration_limit: int | None = option(None, "Use only the first N calibration samples.", metavar="N", min=1)
    chunk_size: int = option(2, "Samples per calibration step; bounds memory (~0.85 GiB per sample on the "
                             "production-size voice model with entropy/percentile).", min=1)
    outliers: str = option("clip", "Calibration values far outside the rest of the set (beyond the 0.1-99.9 "
                           "percentile band by 10 band widths): clip them with a warning, refuse the data, or keep "
                           "them with a warning. Values beyond float32's reach are always refused.",
                           choices=("clip", "refuse", "keep"))


def _refuse_non_finite_ranges(ranges: Any, source: str) -> None:
    """A calibration range that is inf/NaN (an activation overflowed float32 on the data) would
    give a model whose quantisation scales are meaningless: refuse, naming the tensor."""
    bad = {k: v for k, v in calibration.tensor_absmax(ranges).items() if not np.isfinite(v) or v > 3.0e38}
    if bad:
        name = next(iter(bad))
        raise InputError(f"calibration on {source}: activation {name} (and {len(bad) - 1} more) overflows float32 "
                         "(range inf/NaN); the data is not what the model expects")


def target_settings(target: str) -> dict[str, Any]:
    """quantize_static arguments for a target runtime."""
    qz = lazy_import("onnxruntime.quantization")
    if target == "cpu":
        return {"activation_type": qz.QuantType.QUInt8, "weight_type": qz.QuantType.QInt8, "extra_options": {}}
    if target == "openvino":
        # Same form as cpu, by measurement (module docstring): kept a separate target so a
        # recipe states the runtime it was made for and can change with OpenVINO.
        return {"activation_type": qz.QuantType.QUInt8, "weight_type": qz.QuantType.QInt8, "extra_options": {}}
    if target == "tensorrt":
        return {"activation_type": qz.QuantType.QInt8, "weight_type": qz.QuantType.QInt8,
                "extra_options": dict(TENSORRT_EXTRA_OPTIONS)}
    raise InputError(f"unknown quantisation target {target!r}; use one of {', '.join(TARGETS)}")


def preprocess(src: Path, dst: Path) -> list[str]:
    """ORT's recommended quantisation pre-processing; falls back to less when a step fails."""
    shape_inference = lazy_import("onnxruntime.quantization.shape_inference")
    attempts = [
        ({}, "ORT pre-processing (symbolic shape inference + basic optimisation)"),
        ({"skip_symbolic_shape": True}, "ORT pre-processing without symbolic shape inference"),
        ({"skip_optimization": True, "skip_symbolic_shape": True}, "ONNX shape inference only"),
    ]
    notes: list[str] = []
    for kwargs, what in attempts:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                shape_inference.quant_pre_process(str(src), str(dst), **kwargs)
            if notes:
                notes.append(f"used {what}")
            return notes
        except Exception as exc:  # symbolic shape inference fails on some exotic ops
            notes.append(f"{what} failed ({type(exc).__name__}: {first_line(exc)})")
    raise PassFailed("ONNX Runtime's quantisation pre-processing failed: " + "; ".join(notes))


def quantized_node_report(model: Any) -> dict[str, Any]:
    """Compute nodes of a QDQ model that run in int8, by op type.

    A node counts as quantised in ONNX Runtime's QDQ "node unit" sense: it reads at least one
    DequantizeLinear output and each of its outputs feeds a QuantizeLinear. A node that only reads
    DQ outputs (e.g. an excluded op after a quantised one) computes in fp32.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    total: collections.Counter[str] = collections.Counter()
    quantized: collections.Counter[str] = collections.Counter()
    fp32_nodes: list[str] = []
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        total[node.op_type] += 1
        reads_int8 = any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)
        writes_int8 = all(any(c.op_type == "QuantizeLinear" for c in consumers.get(o, [])) for o in node.output if o)
        if reads_int8 and writes_int8:
            quantized[node.op_type] += 1
        else:
            fp32_nodes.append(node.name or f"<{node.op_type}>")
    return {
        "by_op_type": {op: {"quantized": quantized[op], "total": n} for op, n in sorted(total.items())},
        "quantized": sum(quantized.values()),
        "total": sum(total.values()),
        "fp32_nodes": fp32_nodes,
    }


class QuantizeInt8(Pass):
    name = "quantize-int8"
    config_cls = QuantizeInt8Config
    output_suffix = ".int8.onnx"
    tools = ("onnxruntime", "onnx")

    def side_outputs(self, cfg: QuantizeInt8Config, out: Path) -> list[Path]:
        return [calibration.cache_path_for(out)]

    def fingerprint(self, cfg: QuantizeInt8Config) -> str:
        from optkit.data import fingerprint

        return fingerprint(cfg.calibration)

    # -- checks -------------------------------------------------------------------------------
    @staticmethod
    def _check_config(cfg: QuantizeInt8Config) -> None:
        if cfg.target not in TARGETS:
            raise InputError(f"unknown quantisation target {cfg.target!r}; use one of {', '.join(TARGETS)}")
        if cfg.method not in calibration.METHODS:
            raise InputError(f"unknown calibration method {cfg.method!r}; use one of {', '.join(calibration.METHODS)}")
        if cfg.method == "percentile" and not 0.0 < cfg.percentile <= 100.0:
            raise ParameterError("percentile", f"{{name}} {cfg.percentile:g} is out of range; give a value in "
                                 f"(0, 100], e.g. {calibration.DEFAULT_PERCENTILE}")
        if cfg.chunk_size < 1:
            raise InputError(f"chunk size must be at least 1, got {cfg.chunk_size}")
        if cfg.calibration_limit is not None and cfg.calibration_limit < 1:
            raise InputError(f"calibration limit must be at least 1, got {cfg.calibration_limit}")
        from optkit.data import OUTLIER_POLICIES

        if cfg.outliers not in OUTLIER_POLICIES:
            raise InputError(f"unknown outlier policy {cfg.outliers!r}; use one of {', '.join(OUTLIER_POLICIES)}")
        if not cfg.calibration:
            raise InputError("int8 quantisation needs calibration data (a directory of .npy files or an .npz)")

    @staticmethod
    def _check_exclusions(model: Any, cfg: QuantizeInt8Config) -> None:
        names = {n.name for n in model.graph.node}
        missing = [n for n in cfg.exclude_nodes if n not in names]
        if missing:
            sample = ", ".join(sorted(names)[:8])
            raise ParameterError(
                "exclude_nodes", f"{{name}}: no node named {', '.join(missing)} in the model "
                f"(node names look like: {sample}{', ...' if len(names) > 8 else ''})"
            )
        op_types = {n.op_type for n in model.graph.node}
        unknown = [t for t in cfg.exclude_op_types if t not in op_types]
        if unknown:
            raise ParameterError(
                "exclude_op_types", f"{{name}}: the model has no {', '.join(unknown)} nodes "
                f"(its op types: {', '.join(sorted(op_types))})"
            )

    # -- run ----------------------------------------------------------------------------------
    def run(self, src: Artifact | None, cfg: QuantizeInt8Config, out: PassOutput) -> PassResult:
        qz = lazy_import("onnxruntime.quantization")
        from optkit.data import fingerprint, load_samples, screen_outliers

        assert src is not None
        self._check_config(cfg)
        cache_path = calibration.cache_path_for(out.final)
        model = load_onnx(src.path)
        precision = model_precision(model)
        if precision != "fp32":
            raise InputError(
                f"{src.path.name} is already a {precision} model; int8 quantisation needs the fp32 model"
            )
        inputs, _ = io_specs(model)
        if len(inputs) != 1:
            raise InputError(
                f"{src.path.name} has {len(inputs)} inputs; calibration data covers single-input models only"
            )
        spec = inputs[0]
        if spec.dtype != "float32":
            raise InputError(f"model input {spec.name} is {spec.dtype}; int8 calibration needs a float32 input")
        sample_shape = spec.concrete_shape(1)[1:]
        samples = load_samples(cfg.calibration, sample_shape=sample_shape, dtype=spec.dtype,
                               limit=cfg.calibration_limit)
        samples, outliers = screen_outliers(samples, cfg.outliers)
        data_fp = fingerprint(cfg.calibration) + f":outliers={cfg.outliers}"
        settings = target_settings(cfg.target)
        messages: list[str] = []
        if outliers.action != "none":
            messages.append(outliers.message(samples.source))

        with work_dir("optkit-int8-") as work_name:
            work = Path(work_name)
            pre = work / "preprocessed.onnx"
            messages += preprocess(src.path, pre)
            pre_model = load_onnx(pre)
            self._check_exclusions(pre_model, cfg)
            key = calibration.cache_key(sha256_file(pre), data_fp, cfg.method, cfg.percentile,
                                        len(samples), cfg.chunk_size)
            outcome = calibration.calibrate_cached(
                pre, samples.x, spec.name, key, cache_path, cfg.recalibrate, cfg.method,
                cfg.percentile, cfg.chunk_size, work,
            )
            messages.append(outcome.message)
            _refuse_non_finite_ranges(outcome.ranges, samples.source)
            ort_ranges = calibration.write_ort_ranges(work / "ranges.json", outcome.ranges)
            op_types = [t for t in calibration.default_op_types() if t not in set(cfg.exclude_op_types)]

            tmp = out.path
            t0 = time.perf_counter()
            self._quantize(qz, pre, tmp, ort_ranges, cfg, settings, op_types)
            quant_seconds = time.perf_counter() - t0
            qmodel = load_onnx(tmp)
            check_model(qmodel, full=True, what="int8 model")
            if model_precision(qmodel) != "int8":
                raise PassFailed("ONNX Runtime quantised nothing (no QuantizeLinear/DequantizeLinear nodes); "
                                 "check exclude_nodes / exclude_op_types")
            if not outcome.cache_hit:
                # renamed into place with the model, only once the model passed its check
                calibration.save_cache(out.side(cache_path), key, outcome.ranges, meta={
                    "model": src.path.name, "calibration": str(cfg.calibration),
                    "samples": len(samples), "method": cfg.method,
                })

        report = quantized_node_report(qmodel)
        pre_ops = collections.Counter(n.op_type for n in pre_model.graph.node)
        folded = {op: n - report["by_op_type"].get(op, {}).get("total", 0) for op, n in pre_ops.items()}
        folded = {op: n for op, n in folded.items() if n > 0}
        by_op = ", ".join(f"{op} {c['quantized']}/{c['total']}" for op, c in report["by_op_type"].items())
        messages.append(
            f"quantised {report['quantized']} of {report['total']} nodes for target {cfg.target} "
            f"({'per-channel s8 weights, ' + self._act_desc(cfg.target)}): {by_op}"
        )
        if folded:
            messages.append("folded into quantisation ranges: " + ", ".join(f"{n} {op}" for op, n in sorted(folded.items())))
        if report["fp32_nodes"]:
            shown = report["fp32_nodes"][:10]
            messages.append(f"left in fp32: {len(report['fp32_nodes'])} nodes ({', '.join(shown)}"
                            f"{', ...' if len(report['fp32_nodes']) > 10 else ''})")
        messages.append(f"calibration cache: {cache_path}" + (" (reused)" if outcome.cache_hit else " (written)"))
        messages.insert(0, f"quantised {src.path.name} -> {out.final} (int8 QDQ, {cfg.method} calibration, target {cfg.target})")

        info = {
            "target": cfg.target,
            "method": cfg.method,
            "percentile": cfg.percentile if cfg.method == "percentile" else None,
            "samples": len(samples),
            "chunk_size": cfg.chunk_size,
            "calibration_seconds": round(outcome.seconds, 3),
            "quantize_seconds": round(quant_seconds, 3),
            "cache_hit": outcome.cache_hit,
            "cache_path": str(cache_path),
            "quantized_nodes": report["quantized"],
            "total_nodes": report["total"],
            "by_op_type": report["by_op_type"],
            "fp32_nodes": report["fp32_nodes"],
            "folded_nodes": folded,
            "exclude_nodes": list(cfg.exclude_nodes),
            "exclude_op_types": list(cfg.exclude_op_types),
            "calibration_outliers": outliers.to_json(),
        }
        return PassResult(messages=messages, info=info, precision="int8",
                          side_files=[cache_path] if outcome.cache_hit else [],  # else written via out.side
                          extra={"target": cfg.target, "calibration_cache": cache_path.name,
                                 "calibration_outliers": outliers.to_json()},
                          check_inputs=(spec.name, samples.x[:CHECK_SAMPLES]))

    def check(self, src: Artifact | None, cfg: QuantizeInt8Config, written: Path, result: PassResult) -> None:
        assert src is not None
        input_name, x = result.check_inputs
        check = self._compare(src.path, written, input_name, x)
        result.messages.append(
            f"int8 vs fp32 on {check['samples']} calibration samples: max |diff| {check['max_abs_diff']:.3g}, "
            f"relative error {check['rel_error']:.3g}"
        )
        result.info["check"] = check

    @staticmethod
    def _act_desc(target: str) -> str:
        return {"cpu": "u8 activations", "openvino": "u8 activations",
                "tensorrt": "symmetric s8 activations, all zero points 0"}[target]

    @staticmethod
    def _quantize(qz: Any, pre: Path, tmp: Path, ort_ranges: Path, cfg: QuantizeInt8Config,
                  settings: dict[str, Any], op_types: list[str]) -> None:
        logger = logging.getLogger()
        level = logger.level
        try:
            # quantize_static logs a pre-processing hint on the root logger even when the model is
            # pre-processed by another tool; optkit prints its own summary.
            logger.setLevel(logging.ERROR)
            with contextlib.redirect_stdout(io.StringIO()):
                qz.quantize_static(
                    str(pre), str(tmp), calibration_data_reader=None,
                    quant_format=qz.QuantFormat.QDQ,
                    op_types_to_quantize=op_types,
                    per_channel=True,
                    reduce_range=False,
                    activation_type=settings["activation_type"],
                    weight_type=settings["weight_type"],
                    nodes_to_exclude=list(cfg.exclude_nodes),
                    calibrate_method=calibration.ort_method(cfg.method),
                    extra_options=settings["extra_options"],
                    calibration_cache_path=str(ort_ranges),
                )
        except (InputError, PassFailed):
            raise
        except Exception as exc:
            raise PassFailed(f"ONNX Runtime quantize_static failed: {type(exc).__name__}: "
                             f"{first_line(exc)}") from exc
        finally:
            logger.setLevel(level)

    @staticmethod
    def _compare(fp32_path: Path, int8_path: Path, input_name: str, x: np.ndarray) -> dict[str, Any]:
        """Run both models (ORT CPU, full optimisations) on a few samples: a sanity check of the
        artifact; the release gate against the PyTorch reference is ``optkit verify``."""
        from optkit.compare import Comparison
        from optkit.runners.onnxruntime import OnnxRuntimeRunner

        comparison = Comparison("the int8 model")
        with OnnxRuntimeRunner(fp32_path) as ref, OnnxRuntimeRunner(int8_path) as q:
            for i in range(len(x)):
                feed = {input_name: x[i : i + 1]}
                comparison.add(ref.infer(feed), q.infer(feed), where=f"on calibration sample {i}")
        return {"samples": int(len(x)), "max_abs_diff": comparison.max_abs_diff, "rel_error": comparison.rel_error}
