"""quantize-int8: accuracy-aware post-training static int8 (QDQ) with ONNX Runtime's quantiser.

The quantisation itself is ``onnxruntime.quantization.quantize_static``; this pass adds what the
release flow needs around it:

- ORT's pre-processing (``quant_pre_process``: symbolic shape inference + ORT basic graph
  optimisation, the step ORT's docs recommend before quantising).
- Calibration statistics collected once, in one streaming pass (:mod:`optkit.quantization.calib_stats`) and
  cached beside the output as ``<stem>.calib.npz``; every range method is computed from them and
  handed to ``quantize_static`` through its ``calibration_cache_path`` argument (ORT's supported
  way to quantise with precomputed ranges).
- A search until the int8 gate passes (:mod:`optkit.quantization.int8_search`): each trial is checked on
  validation data; the one that passes is written to the output, its settings to
  ``<stem>.search.json`` (a re-run with unchanged inputs rebuilds it without searching). When no
  trial passes, the best one is written as ``<stem>.failed.onnx`` and the pass raises
  :class:`Int8SearchFailed` (exit 3), never leaving a failing model at the output path.
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
- Nodes kept out of int8 (by the search, ``exclude_nodes``, ``exclude_op_types``) stay fp32,
  except for ``target tensorrt``: there they are converted to fp16
  (:func:`optkit.quantization.fp16.nodes_to_fp16`, onnxconverter-common), because optkit builds
  TensorRT engines strongly typed, where each layer runs in the type the ONNX graph gives it (an
  fp32 node would run in fp32). Each trial is judged as converted, and its MACs count as fp16.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.model.artifact import Artifact
from optkit.common.errors import InputError, PassFailed, VerificationFailed, first_line
from optkit.common.fileio import atomic_output, sha256_file
from optkit.common.lazy import lazy_import
from optkit.quantization import executor as calibration_executor
from optkit.model.macs import mac_breakdown
from optkit.model.onnx_utils import QDQ_OPS, check_model, io_specs, load_onnx, model_precision
from optkit.passes.config import option
from optkit.common.errors import ParameterError
from optkit.passes.base import Pass, PassOutput, PassResult
from optkit.common.workspace import work_dir

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

CHECK_SAMPLES = 8  # calibration samples the pass runs through both models to check its result
METHODS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_PERCENTILE = 99.999
WEIGHT_FORMS = ("auto", "s8", "u8", "s8-7bit")
WEIGHT_WORDS = {"s8": "s8", "u8": "u8 (asymmetric)", "s8-7bit": "s8 7-bit range"}
# the order a search tries other range methods in: percentile clips rare outliers (the usual
# failure of minmax), mse balances clipping against resolution, entropy clips hardest
METHODS_SEARCH_ORDER = ("percentile", "mse", "entropy", "minmax")
SETTINGS_FORMAT = "optkit-int8-settings"


class Int8SearchFailed(VerificationFailed):
    """No trial passed the int8 gate; ``result`` has the trials and the best (failed) model."""

    def __init__(self, message: str, result: PassResult | None = None):
        super().__init__(message)
        self.result = result


def _check_holdout(value: float) -> None:
    if not 0.0 < value < 1.0:
        raise InputError(f"holdout must be a fraction in (0, 1), got {value:g}")


def _check_providers(value: Any) -> None:
    from optkit.runtime.registry import check_provider

    names = (value,) if isinstance(value, str) else tuple(value)
    if not names:
        raise InputError("validate_on needs at least one runtime, e.g. cpu")
    for name in names:
        check_provider(str(name))


def _check_percentile(value: float) -> None:
    if not 0.0 < value <= 100.0:
        raise InputError(f"{value:g} is out of range; give a value in (0, 100], e.g. {DEFAULT_PERCENTILE}")


@dataclass(frozen=True)
class QuantizeInt8Config:
    calibration: str = option(help="Calibration samples (directory of .npy files, or an .npz with x).",
                              path=True, metavar="DIR")
    target: str = option("cpu", "The runtime that will run the model; picks the QDQ form (cpu: u8 activations; "
                         "openvino: u8 too, measured fastest there; tensorrt: symmetric s8, zero points 0).",
                         choices=TARGETS)
    weights: str = option("auto", "Form of the int8 weights. s8: symmetric 8-bit (the fast form where the CPU has "
                          "VNNI/AMX); u8: asymmetric 8-bit, exact on CPUs without VNNI but slow there; s8-7bit: "
                          "symmetric in a 7-bit range. auto: s8, except on an x86 CPU with AVX2 but no VNNI/AMX, "
                          "where ONNX Runtime's u8 x s8 kernels saturate with full-range weights: s8-7bit there "
                          "(exact, and the fast kernel).", choices=WEIGHT_FORMS)
    method: str = option("minmax", "Range method of the first trial (the search tries the others).", choices=METHODS)
    percentile: float = option(DEFAULT_PERCENTILE, "Percentile of |x| for the percentile method.",
                               check=_check_percentile)
    exclude_nodes: tuple[str, ...] = option((), "Node names always kept out of int8, in fp32 (fp16 for target "
                                            "tensorrt; see `optkit verify` for where error grows).", metavar="A,B")
    exclude_op_types: tuple[str, ...] = option((), "Op types always kept out of int8, in fp32 (fp16 for target "
                                               "tensorrt), e.g. Add,Sigmoid.", metavar="OP,OP")
    equalize: bool = option(False, "The first trial equalises a badly scaled input per channel (folded into the "
                            "first convs).")
    search: bool = option(True, "Search until the int8 gate passes (other range methods, input equalisation, "
                          "sensitive nodes, classes of ops (normalisation, attention, elementwise) kept in float, "
                          "recurrent/MatMul nodes quantised dynamically, a greedy float set); --no-search makes "
                          "exactly one quantisation.", flag="--search/--no-search")
    budget: int = option(16, "At most N trials (a larger budget tries more: the greedy fallback grows the float "
                         "set until the gate passes or a quarter of the MACs is in float).", metavar="N", min=1)
    reference: str | None = option(None, "Validate trials on this reference (.npz from `optkit export`) or labelled "
                                   "data (x, y); default: a held-out part of the calibration data judged against "
                                   "the fp32 model's own outputs.", path=True, metavar="REF.npz")
    holdout: float = option(0.25, "Share of the calibration samples held out for validation (without reference).",
                            check=_check_holdout)
    threshold: float = option(0.5, "Decision threshold of the agreement gate.")
    gates: dict[str, Any] | None = option(None, "Overrides of the int8 gate, e.g. {min_agreement: 0.99}.", cli=False)
    outputs: dict[str, Any] | None = option(None, "Per output: its kind and int8 gate, e.g. {emb: {kind: embedding, "
                                            "gates: {int8: {min_sample_cosine: 0.9}}}} (CLI: --output-kind "
                                            "NAME=KIND, --output-gate NAME:int8.LIMIT=VALUE); default: each output's kind detected from the fp32 model.",
                                            cli=False)
    recalibrate: bool = option(False, "Ignore the statistics cache (<stem>.calib.npz) and the saved search result "
                               "(<stem>.search.json).")
    calibration_limit: int | None = option(None, "Use only the first N calibration samples.", metavar="N", min=1)
    chunk_size: int = option(8, "Samples whose statistics are binned together (the result does not depend on it).",
                             min=1)
    outliers: str = option("clip", "Calibration values far outside the rest of the set (beyond the 0.1-99.9 "
                           "percentile band by 10 band widths): clip them with a warning, refuse the data, or keep "
                           "them with a warning. Values beyond float32's reach are always refused.",
                           choices=("clip", "refuse", "keep"))
    validate_on: tuple[str, ...] = option(("cpu",), "Runtimes every trial is judged on; a trial passes only where "
                                          "it passes on all of them (a recipe's int8 step takes its verify "
                                          "providers), e.g. cpu,openvino.", metavar="P,P",
                                          check=_check_providers)
    latency_rounds: int = option(30, "Timed rounds of the latency check after the search: the fp32 model, plain "
                                 "int8 and the chosen model, batch 1 on ONNX Runtime CPU, interleaved in one run "
                                 "after 5 warm-up rounds; 0 = no latency check.", metavar="N", min=0)


def _progress(line: str) -> None:
    """Live progress of the search (each trial as it finishes) on stderr, so a search of a minute
    or two is not silent; the summary in ``PassResult.messages`` is printed at the end as before."""
    import sys

    print(line, file=sys.stderr, flush=True)


def _refuse_non_finite_stats(stats: Any, source: str) -> None:
    """A calibration range that is inf/NaN (an activation overflowed float32 on the data) would
    give a model whose quantisation scales are meaningless: refuse, naming the tensor."""
    absmax = np.maximum(np.abs(stats.mins), np.abs(stats.maxs))
    bad = [n for n, a in zip(stats.names, absmax) if not np.isfinite(a) or a > 3.0e38]
    if bad:
        raise InputError(f"calibration on {source}: activation {bad[0]} (and {len(bad) - 1} more) overflows float32 "
                         "(range inf/NaN); the data is not what the model expects")


def sidecar_paths(out: Path) -> dict[str, Path]:
    """``model.int8.onnx`` -> its statistics cache, saved settings and failed-model names."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return {"stats": out.with_name(stem + ".calib.npz"), "settings": out.with_name(stem + ".search.json"),
            "failed": out.with_name(stem + ".failed.onnx")}


def resolve_weights(setting: str, target: str) -> tuple[str, str]:
    """(the weight form: s8, u8 or s8-7bit; why, when it is not plain s8) for a ``weights`` setting.

    Why auto looks at this machine's CPU: on x86 with AVX2 but no VNNI/AMX, ONNX Runtime multiplies
    u8 activations by s8 weights with vpmaddubsw, whose pairwise int16 sums saturate with full-range
    weights; its quantisation docs name two remedies, u8 weights (U8U8, no saturation) or a 7-bit
    weight range. Measured on a 2-core AMD EPYC (AVX2 only): plain min/max int8 of the bundled model
    agreed with fp32 on 55 % of decisions with s8 weights, 98.3-98.6 % with u8 or 7-bit ones. Through
    the default recipe's search (every trial judged on ONNX Runtime and OpenVINO), 7-bit weights
    passed with 97.4 % of MACs in int8 at 1.41x fp32 (p50, batch 1, ORT), u8 weights only with 76.2 %
    at 1.09x: ORT's U8U8 kernel is no faster than fp32 here, the U8S8 one with 7-bit weights is. So
    auto picks s8-7bit there; u8 stays for whoever asks for it. The search validates every trial on
    this machine's runtimes, so the form must be exact here."""
    if setting != "auto":
        if setting == "u8" and target == "tensorrt":
            raise InputError("weights u8 cannot be used with target tensorrt: its ONNX parser takes s8 weights only "
                             "(use s8 or s8-7bit)")
        return setting, ("" if setting == "s8" else f"weights {setting} (as requested)")
    from optkit.runtime.sysinfo import cpu_info

    cpu = cpu_info()
    if not cpu.u8s8_saturates():
        return "s8", ""
    form = "s8-7bit"
    return form, (f"weights {form}: this CPU ({cpu.model}) has AVX2 but no VNNI/AMX, where ONNX Runtime's u8 x s8 "
                  "int8 kernels saturate with full-range s8 weights (--weights s8 forces them; --weights u8 is "
                  "exact too, but slower there)")


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


WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def quantized_node_report(model: Any, fp16: set[str] | None = None) -> dict[str, Any]:
    """Compute nodes of a QDQ model that run in int8, by op type.

    A node counts as quantised in ONNX Runtime's QDQ "node unit" sense: it reads at least one
    DequantizeLinear output and each of its outputs feeds a QuantizeLinear. A node that only reads
    DQ outputs (e.g. an excluded op after a quantised one) computes in fp32, or in fp16 when it is
    in ``fp16`` (converted for target tensorrt; the Casts around those are not counted).
    """
    fp16 = fp16 or set()
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    total: collections.Counter[str] = collections.Counter()
    quantized: collections.Counter[str] = collections.Counter()
    fp32_nodes: list[str] = []
    fp16_nodes: list[str] = []
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            continue
        if node.op_type == "Cast" and fp16 and (
                any(c.name in fp16 for o in node.output for c in consumers.get(o, []))
                or any(i in producers and producers[i].name in fp16 for i in node.input)):
            continue  # a Cast into or out of an fp16 node
        total[node.op_type] += 1
        if node.op_type in WEIGHTED_OPS:
            # ONNX Runtime fuses DQ -> Conv/Gemm/MatMul -> Q into an int8 kernel only when the
            # weights come from a DequantizeLinear too: a node kept out of int8 (float weights)
            # between quantised neighbours reads and writes int8 tensors yet runs in float
            data = [i for i in node.input[:2] if i]
            reads_int8 = len(data) == 2 and all(i in producers and producers[i].op_type == "DequantizeLinear"
                                                for i in data)
        else:
            reads_int8 = any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)
        writes_int8 = all(any(c.op_type == "QuantizeLinear" for c in consumers.get(o, [])) for o in node.output if o)
        if reads_int8 and writes_int8:
            quantized[node.op_type] += 1
        elif node.name in fp16:
            fp16_nodes.append(node.name)
        else:
            fp32_nodes.append(node.name or f"<{node.op_type}>")
    return {
        "by_op_type": {op: {"quantized": quantized[op], "total": n} for op, n in sorted(total.items())},
        "quantized": sum(quantized.values()),
        "total": sum(total.values()),
        "fp32_nodes": fp32_nodes,
        "fp16_nodes": fp16_nodes,
    }


class QuantizeInt8(Pass):
    name = "quantize-int8"
    config_cls = QuantizeInt8Config
    output_suffix = ".int8.onnx"
    tools = ("onnxruntime", "onnx")

    def side_outputs(self, cfg: QuantizeInt8Config, out: Path) -> list[Path]:
        paths = sidecar_paths(out)
        return [paths["stats"], paths["settings"], paths["failed"]]

    def fingerprint(self, cfg: QuantizeInt8Config) -> str:
        from optkit.data.samples import fingerprint

        fp = fingerprint(cfg.calibration)
        # auto resolves per machine: a cached model made for another CPU is not this one's
        weights, _ = resolve_weights(cfg.weights, cfg.target)
        return fp + (":" + fingerprint(cfg.reference) if cfg.reference else "") + f":weights={weights}"

    # -- checks -------------------------------------------------------------------------------
    @staticmethod
    def _check_config(cfg: QuantizeInt8Config) -> None:
        if cfg.target not in TARGETS:
            raise InputError(f"unknown quantisation target {cfg.target!r}; use one of {', '.join(TARGETS)}")
        if cfg.method not in METHODS:
            raise InputError(f"unknown calibration method {cfg.method!r}; use one of {', '.join(METHODS)}")
        if not 0.0 < cfg.percentile <= 100.0:
            raise InputError(f"percentile {cfg.percentile:g} is out of range; give a value in (0, 100], e.g. 99.999")
        if cfg.chunk_size < 1:
            raise InputError(f"chunk size must be at least 1, got {cfg.chunk_size}")
        if cfg.calibration_limit is not None and cfg.calibration_limit < 1:
            raise InputError(f"calibration limit must be at least 1, got {cfg.calibration_limit}")
        if cfg.budget < 1:
            raise InputError(f"search budget must be at least 1 trial, got {cfg.budget}")
        if not 0.0 < cfg.holdout < 1.0:
            raise InputError(f"holdout must be a fraction in (0, 1), got {cfg.holdout:g}")
        from optkit.data.samples import OUTLIER_POLICIES

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
        from optkit.quantization import calib_stats
        from optkit.quantization import answer, int8_search, mixed_calibration, trials
        from optkit.quantization.calibration import default_op_types
        from optkit.data.samples import fingerprint, screen_outliers
        from optkit.data.source import load_samples
        from optkit.model.macs import describe_share
        from optkit.verification.verify import merge_gates

        assert src is not None
        self._check_config(cfg)
        paths = sidecar_paths(out.final)
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
        sample_shape = spec.concrete_shape(1, label=src.path.name)[1:]
        # a dynamic time axis and data of mixed length: every sample at its own length, never padded
        mixed = mixed_calibration.load_mixed(cfg.calibration, spec, src.path.name, cfg.calibration_limit)
        if mixed is not None:
            samples, outliers = mixed_calibration.screen(mixed, cfg.outliers)
        else:
            samples = load_samples(cfg.calibration, sample_shape=sample_shape, dtype=spec.dtype,
                                   limit=cfg.calibration_limit)
            samples, outliers = screen_outliers(samples, cfg.outliers)
        gate = merge_gates({"int8": dict(cfg.gates or {})}, where="gates")["int8"]
        symmetric = cfg.target == "tensorrt"
        settings = target_settings(cfg.target)
        weights, weights_why = resolve_weights(cfg.weights, cfg.target)
        settings["reduce_range"] = weights == "s8-7bit"
        if weights == "u8":
            settings["weight_type"] = lazy_import("onnxruntime.quantization").QuantType.QUInt8
        say = _progress
        messages: list[str] = []
        if weights_why:
            messages.append(weights_why)
        if outliers.action != "none":
            messages.append(outliers.message(samples.source))
        if mixed is not None:
            messages.append(f"calibration data: {mixed.describe()}")

        # Validation data: the reference when given, else a held-out part of the calibration set
        # (quantization.split: content order, seeded, stratified), each output judged by its kind
        kind_overrides, output_gates = _output_settings(cfg, gate)
        # (mixed lengths: a list of samples, stratified by length bucket too, every one at its own length)
        validation, calib_x, split_info, split_lines = _validation(src.path, spec.name, samples, cfg,
                                                                   sample_shape, kind_overrides)
        from optkit.verification.output_kinds import check_output_names

        check_output_names(output_gates, list(validation.outputs), "outputs.{name}.gates (--output-gate {name}:...)")
        validation.output_gates = output_gates
        messages.append(f"validation: {validation.description}")
        for line in split_lines:
            messages.append(line)
            if line.startswith("WARNING:"):
                say(line)
        labelled = validation.labels is not None
        for k in validation.kinds.values():
            messages.append(k.line(cfg.threshold, labelled))
            say(k.line(cfg.threshold, labelled))
        # an output taken for a probability (by override) with values outside [0, 1]: say so, as verify does
        from optkit.verification.verify import score_warnings

        for note in score_warnings({n: v for n, v in validation.outputs.items()
                                    if validation.kinds[n].kind == "probability"}, cfg.threshold):
            warning = "WARNING: " + note.replace("--threshold 0, or threshold: 0 under a recipe's verify:",
                                                 "--threshold 0 here and in verify")
            messages.append(warning)
            say(warning)
        key = {
            "model_sha256": src.sha256, "data_fingerprint": fingerprint(cfg.calibration) + f":outliers={cfg.outliers}",
            "calibration_samples": int(len(calib_x)), "validation": validation.kind,
            "reference_fingerprint": fingerprint(cfg.reference) if cfg.reference else None,
            "target": cfg.target, "method": cfg.method, "percentile": cfg.percentile,
            "exclude_nodes": list(cfg.exclude_nodes), "exclude_op_types": list(cfg.exclude_op_types),
            "equalize": cfg.equalize, "gate": dataclasses.asdict(gate), "threshold": cfg.threshold,
            "outputs": {n: [k.kind, dataclasses.asdict(output_gates.get(n, gate))] for n, k in validation.kinds.items()},
            "split": {k: split_info.get(k) for k in ("seed", "stratified_by", "validation_samples")},
            "onnxruntime": lazy_import("onnxruntime").__version__, "weights": weights,
        }

        with work_dir("optkit-int8-") as work_name:
            work = Path(work_name)
            pre = work / "preprocessed.onnx"
            messages += preprocess(src.path, pre)
            pre_model = load_onnx(pre)
            self._check_exclusions(pre_model, cfg)
            op_types = [t for t in default_op_types() if t not in set(cfg.exclude_op_types)]

            # Statistics: from the cache when it was made from the same model and data.
            stats_key = {"model_sha256": sha256_file(pre), "data_fingerprint": key["data_fingerprint"],
                         "samples": int(len(calib_x)), "hist_cap": calib_stats.HIST_CAP,
                         "onnxruntime": key["onnxruntime"]}
            stats, why = (None, "recalibrating (--recalibrate)") if cfg.recalibrate else _load_stats(paths["stats"], stats_key)
            stats_fresh = stats is None
            t0 = time.perf_counter()
            if stats is None:
                # in this process, or on Ray when the command set an executor (same statistics)
                stats = calibration_executor.collect_stats(pre, calib_x, spec.name, chunk_size=cfg.chunk_size,
                                                  check_finite=False)
                _refuse_non_finite_stats(stats, samples.source)
                stats.meta = stats_key
                messages.append(f"collected calibration statistics of {len(stats.names)} tensors on {len(calib_x)} "
                                f"samples in {time.perf_counter() - t0:.1f} s ({why})")
            else:
                messages.append(f"reused calibration statistics {paths['stats'].name}")
            calibration_seconds = time.perf_counter() - t0

            saved = None if cfg.recalibrate or not cfg.search else _load_settings(paths["settings"], key)
            first = int8_search.TrialSpec("requested", "as requested", cfg.method, (), cfg.equalize)
            if saved is not None:
                first = int8_search.TrialSpec("saved", f"settings from {paths['settings'].name}", saved["method"],
                                              tuple(saved["excluded_nodes"]), bool(saved["equalized"]),
                                              tuple(saved["dynamic_nodes"]))
                messages.append(f"rebuilding the model found earlier ({paths['settings'].name}); no search needed")
            elif cfg.search:
                first = dataclasses.replace(first, name="plain", change="plain int8")

            eq_x = calib_x if mixed is None else mixed_calibration.joined(calib_x, mixed.time_axis)
            eq_plan, eq_why = int8_search.plan_equalization(pre_model, spec.name, eq_x)
            if (cfg.equalize or first.equalized) and eq_plan is None:
                raise InputError(f"cannot equalise the input: {eq_why}")
            eq_model_path = None
            eq_stats = None
            if eq_plan is not None:
                eq_model_path = work / "equalized.onnx"
                import onnx

                onnx.save(int8_search.apply_equalization(pre_model, eq_plan), str(eq_model_path))
                eq_stats = calib_stats.array_stats(eq_plan.new_input, eq_x / eq_plan.scale.reshape(
                    (1, -1) + (1,) * (eq_x.ndim - 2)), stats.hist_cap)
            fp32_mac = mac_breakdown(pre_model)
            fp32_macs = {r["name"]: r["macs"] for r in fp32_mac["unquantized_heavy_nodes"]}
            # everything a trial needs, in one picklable object (int8_search.run_trial)
            trial_ctx = int8_search.TrialContext(
                model=pre.read_bytes(), stats=stats, percentile=cfg.percentile, symmetric=symmetric,
                exclude_nodes=tuple(cfg.exclude_nodes), op_types=tuple(op_types), settings=settings,
                target=cfg.target, validation=validation, gate=gate, threshold=cfg.threshold,
                equalized_model=eq_model_path.read_bytes() if eq_model_path is not None else None,
                eq_stats=eq_stats, eq_mul_node=eq_plan.mul_node if eq_plan is not None else None,
                exclude_op_types=tuple(cfg.exclude_op_types), providers=tuple(cfg.validate_on))

            def run_trial(index: int, t: Any) -> Any:
                return int8_search.run_trial(trial_ctx, t, index, work)

            def rank(base: Any) -> list[dict[str, Any]]:
                fp32 = eq_model_path if base.spec.equalized else pre
                n = min(len(validation), 8)
                say(f"ranking the quantised nodes by the error they add ({base.spec.name}, {n} validation samples)")
                from optkit.verification.lengths import stacked_group

                return int8_search.rank_sensitive_nodes(fp32, base.path, stacked_group(validation.inputs, n), fp32_macs)

            say(f"int8 trials (validation: {validation.description}):")
            t_search = time.perf_counter()
            outcome = int8_search.search(first, run_trial=run_trial, budget=cfg.budget, do_search=cfg.search,
                                         methods=list(METHODS_SEARCH_ORDER), equalization=eq_plan, rank=rank,
                                         echo=say, node_macs=fp32_macs, total_macs=fp32_mac["total_macs"],
                                         kept_as="fp16" if trial_ctx.keeps_fp16 else "float",
                                         # trials as Ray tasks when the command set an executor
                                         # (same trials kept, same chosen model); else in order here
                                         map_trials=calibration_executor.trial_map(trial_ctx, work),
                                         classes=trials.op_classes(pre_model, op_types),
                                         dynamic=cfg.target in trials.DYNAMIC_TARGETS)
            search_seconds = time.perf_counter() - t_search
            chosen = outcome.trials[outcome.chosen] if outcome.chosen is not None else outcome.best()
            passed = outcome.chosen is not None
            latency = self._latency(src.path, first, outcome, chosen, cfg, run_trial, say)
            # the plain answer: what to ship, measured here (answer module docstring)
            recommendation = (answer.int8_verdict(latency, cfg.target) if passed else
                              answer.fallback_answer(src.path, validation, gate, cfg.threshold, work,
                                                     cfg.latency_rounds, progress=say))
            final = out.final if passed else paths["failed"]
            qmodel = load_onnx(chosen.path)
            check_model(qmodel, full=True, what="int8 model")
            if passed:
                # renamed into place by Pass.__call__ once check() accepted the model
                out.path.write_bytes(chosen.path.read_bytes())
                if stats_fresh:
                    stats.save(out.side(paths["stats"]))
                _save_settings(out.side(paths["settings"]), key, chosen, outcome, validation)
            else:
                # Pass.__call__ discards out's files when run raises: the failed model and the
                # statistics (valid whatever the gate says; a re-run with a larger budget reuses
                # them) are written here, atomically, under names that are not the output's.
                with atomic_output(final, suffix=".onnx") as tmp:
                    tmp.write_bytes(chosen.path.read_bytes())
                if stats_fresh:
                    stats.save(paths["stats"])

        report = quantized_node_report(qmodel, set(chosen.fp16_nodes))
        mac = chosen.mac
        rows = [t.row() for t in outcome.trials]
        search_info = {"validation": validation.kind, "validation_description": validation.description,
                       "split": split_info,
                       "output_kinds": {n: k.to_json() for n, k in validation.kinds.items()},
                       "trials": rows, "chosen": outcome.chosen, "ranking": [
                           {k: r[k] for k in ("node", "op_type", "growth_db", "sqnr_db")} for r in outcome.ranking[:16]],
                       "notes": outcome.notes, "latency": latency, "recommendation": recommendation}
        by_op = ", ".join(f"{op} {c['quantized']}/{c['total']}" for op, c in report["by_op_type"].items())
        header = (f"quantised {src.path.name} -> {final} (int8 QDQ, target {cfg.target}, "
                  f"{chosen.spec.method} ranges" + (f", {len(chosen.spec.excluded_nodes)} node(s) kept in "
                                                    f"{'fp16' if trial_ctx.keeps_fp16 else 'float'}"
                                                    if chosen.spec.excluded_nodes else "")
                  + (", equalised input" if chosen.spec.equalized else "")
                  + (f", {len(chosen.spec.dynamic_nodes)} node(s) quantised dynamically"
                     if chosen.spec.dynamic_nodes else "") + ")")
        trial_lines = [int8_search.format_row(i, t) for i, t in enumerate(outcome.trials)]
        messages = [header, *messages, f"int8 trials ({len(outcome.trials)}, validation: {validation.kind}):",
                    *["  " + line for line in trial_lines]]
        if passed:
            messages.append(f"chosen: trial {outcome.chosen} ({chosen.spec.name}: {chosen.spec.change}); "
                            f"settings saved to {paths['settings'].name}")
        if latency is None:
            messages.append("latency not measured (latency_rounds 0)")
        elif "error" in latency:
            messages.append(f"latency not measured: {latency['error']}")
        else:
            messages += int8_search.format_latency(latency)
        messages.append(f"quantised {report['quantized']} of {report['total']} nodes "
                        f"(per-channel {WEIGHT_WORDS[weights]} weights, {self._act_desc(cfg.target)}): {by_op}")
        if chosen.fp16_nodes:
            messages.append(f"kept in fp16 (target {cfg.target} runs the nodes kept out of int8 in fp16; judged as "
                            f"converted): {len(chosen.fp16_nodes)} node(s) ({', '.join(chosen.fp16_nodes[:10])}"
                            f"{', ...' if len(chosen.fp16_nodes) > 10 else ''})")
        if report["fp32_nodes"]:
            shown = report["fp32_nodes"][:10]
            messages.append(f"left in fp32: {len(report['fp32_nodes'])} nodes ({', '.join(shown)}"
                            f"{', ...' if len(report['fp32_nodes']) > 10 else ''})")
        messages.append("MACs by precision: " + describe_share(mac))
        heavy_fp = [r for r in mac["unquantized_heavy_nodes"] if r["macs"] > 0]
        if mac["share"]["int8"] < 0.5:
            top = ", ".join(f"{r['name']} ({r['op_type']}, {100 * r['macs'] / max(1, mac['total_macs']):.0f} %)"
                            for r in heavy_fp[:3])
            messages.append(f"WARNING: only {100 * mac['share']['int8']:.1f} % of the MACs run in int8; this model "
                            f"is mostly float, not int8 (largest float layers: {top})")
        elif heavy_fp:
            messages.append("heavy nodes left in float: " + ", ".join(
                f"{r['name']} ({r['op_type']}, {r['precision']})" for r in heavy_fp[:6]) + (", ..." if len(heavy_fp) > 6 else ""))
        if mac["unknown_shape_nodes"]:
            messages.append(f"MACs unknown (shape not inferred) for {len(mac['unknown_shape_nodes'])} heavy node(s), "
                            f"counted as 0: {', '.join(mac['unknown_shape_nodes'][:5])}")
        messages.append(f"calibration statistics: {paths['stats']}" + (" (written)" if stats_fresh else " (reused)"))
        messages.append(("RECOMMENDATION: " if recommendation["ship"] != "int8" else "") + recommendation["line"])

        info = {
            "target": cfg.target,
            "weights": weights,
            "method": chosen.spec.method,
            "percentile": cfg.percentile if chosen.spec.method == "percentile" else None,
            "samples": int(len(calib_x)),
            "validation_samples": len(validation),
            "split": split_info,
            "output_kinds": {n: k.to_json() for n, k in validation.kinds.items()},
            "chunk_size": cfg.chunk_size,
            "calibration_seconds": round(calibration_seconds, 3),
            "search_seconds": round(search_seconds, 3),  # all trials and the ranking, wall time
            "quantize_seconds": round(sum(t.quantize_seconds for t in outcome.trials), 3),
            "cache_hit": not stats_fresh,
            "cache_path": str(paths["stats"]),
            "quantized_nodes": report["quantized"],
            "total_nodes": report["total"],
            "by_op_type": report["by_op_type"],
            "fp32_nodes": report["fp32_nodes"],
            "fp16_nodes": list(chosen.fp16_nodes),
            # the precision of the nodes kept out of int8 (fp16: converted for a target that runs fp16)
            "kept_in": "fp16" if chosen.fp16_nodes else "fp32",
            "exclude_nodes": list(cfg.exclude_nodes) + list(chosen.spec.excluded_nodes),
            "exclude_op_types": list(cfg.exclude_op_types),
            "equalized": chosen.spec.equalized,
            "dynamic_nodes": list(chosen.spec.dynamic_nodes),
            "recommendation": recommendation,
            "macs": {k: mac[k] for k in ("total_macs", "by_precision", "share")},
            "unquantized_heavy_nodes": heavy_fp[:20],
            "int8_search": search_info,
            "calibration_outliers": outliers.to_json(),
        }
        result = PassResult(messages=messages, info=info, precision="int8",
                            side_files=[] if stats_fresh else [paths["stats"]],  # else written via out.side
                            # what the model really is (the config holds what was asked for: the
                            # first trial's settings)
                            extra={"target": cfg.target, "calibration_stats": paths["stats"].name,
                                   "int8_mac_share": mac["share"]["int8"], "search_passed": passed,
                                   "fp16_nodes": list(chosen.fp16_nodes),
                                   "calibration_outliers": outliers.to_json(),
                                   "recommendation": {k: recommendation[k] for k in ("ship", "line")},
                                   "chosen": {"method": chosen.spec.method,
                                              "excluded_nodes": list(cfg.exclude_nodes) + list(chosen.spec.excluded_nodes),
                                              "equalized": chosen.spec.equalized,
                                              "dynamic_nodes": list(chosen.spec.dynamic_nodes)}},
                            check_inputs=(spec.name, calib_x[:CHECK_SAMPLES]))
        if not passed:
            best = outcome.trials.index(chosen)
            raise Int8SearchFailed(
                f"no int8 trial passed the gate in {len(outcome.trials)} trial(s) (budget {cfg.budget}); the best "
                f"(trial {best}: {chosen.spec.name}) is kept as {final.name}, not at {out.final.name}: "
                + "; ".join(chosen.failures) + f"; ship {recommendation['ship']} instead (see above)", result)
        return result

    @staticmethod
    def _latency(fp32: Path, first: Any, outcome: Any, chosen: Any, cfg: QuantizeInt8Config, run_trial: Any,
                 say: Any) -> dict[str, Any] | None:
        """fp32 vs plain int8 vs the chosen model, timed in one interleaved run (None: switched off).

        Plain int8 is trial 0 (the requested settings, before any fix). A re-run that rebuilt the
        saved settings has no plain trial: it is quantised here (not judged, not a trial) to be timed."""
        from optkit.quantization import int8_search
        from optkit.common.errors import OptkitError

        if not cfg.latency_rounds:
            return None
        plain, plain_index = outcome.trials[0], 0
        requested = (cfg.method, (), cfg.equalize)
        if first.name == "saved" and (first.method, first.excluded_nodes, first.equalized) != requested \
                or first.name == "saved" and first.dynamic_nodes:
            say("quantising plain int8 (the requested settings) to time it against the rebuilt model")
            plain = run_trial(len(outcome.trials), int8_search.TrialSpec("plain", "plain int8", cfg.method, (),
                                                                         cfg.equalize))
            plain_index = None
        index = outcome.trials.index(chosen)
        say(f"timing fp32, plain int8 and the chosen model (trial {index}): batch 1, ONNX Runtime CPU, "
            f"{int8_search.LATENCY_WARMUP} warm-up + {cfg.latency_rounds} timed rounds, interleaved")
        try:
            latency = int8_search.measure_latency(fp32, (plain_index, plain.path), (index, chosen.path),
                                                  cfg.latency_rounds, target=cfg.target)
        except OptkitError as exc:  # a model that cannot be timed still is the model the search chose
            return {"error": first_line(exc)}
        return latency

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
    def _compare(fp32_path: Path, int8_path: Path, input_name: str, x: np.ndarray) -> dict[str, Any]:
        """Run both models (ORT CPU, full optimisations) on a few samples: a sanity check of the
        artifact; the release gate against the PyTorch reference is ``optkit verify``."""
        from optkit.verification.comparator import Comparison
        from optkit.runtime.onnxruntime import OnnxRuntimeRunner

        comparison = Comparison("the int8 model")
        with OnnxRuntimeRunner(fp32_path) as ref, OnnxRuntimeRunner(int8_path) as q:
            for i in range(len(x)):
                feed = {input_name: np.asarray(x[i])[None]}  # one sample (of its own length)
                comparison.add(ref.infer(feed), q.infer(feed), where=f"on calibration sample {i}")
        return {"samples": int(len(x)), "max_abs_diff": comparison.max_abs_diff, "rel_error": comparison.rel_error}


def _output_settings(cfg: QuantizeInt8Config, gate: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The step's ``outputs``: ({name: kind override}, {name: int8 Gate}); names checked later."""
    from optkit.verification.output_kinds import parse_output_settings
    from optkit.verification.verify import merge_gates

    kinds, gates = parse_output_settings(cfg.outputs, "outputs", precisions=("int8",))
    per_output = {}
    for name, g in gates.items():
        per_output[name] = merge_gates({"int8": {**dataclasses.asdict(gate), **(g.get("int8") or {})}},
                                       where=f"outputs.{name}.gates")["int8"]
    return kinds, per_output


def _reference_validation(cfg: QuantizeInt8Config, fp32: Path, input_name: str, sample_shape: tuple[int, ...],
                          kind_overrides: dict[str, str]) -> Any:
    """The ``--reference`` validation set, refused in one line when it lacks the model's input."""
    from optkit.quantization import int8_search

    validation = int8_search.reference_validation(cfg.reference, cfg.threshold, fp32, input_name, sample_shape,
                                                  kind_overrides)
    if input_name not in validation.inputs:
        raise InputError(f"reference {cfg.reference} has no input {input_name} "
                         f"(it has {', '.join(validation.inputs)})")
    return validation


def _validation(fp32: Path, input_name: str, samples: Any, cfg: QuantizeInt8Config,
                sample_shape: tuple[int, ...], kind_overrides: dict[str, str]
                ) -> tuple[Any, np.ndarray, dict[str, Any], list[str]]:
    """(validation, calibration samples, the split's facts, lines to print). Samples are taken in
    content order (quantization.split), so the same samples in any file order give the same
    split, statistics, trials and model bytes. A mixed-length set (``samples.x`` a list of
    samples at their own lengths) stays a list, and its split is stratified by length bucket too."""
    from optkit.quantization import int8_search
    from optkit.quantization.split import (class_line, content_order, count_classes, one_class_warnings,
                                           split_by_length, stratified_split)
    from optkit.verification.output_kinds import decisions, detect_kinds
    from optkit.verification.verify import task_output

    order = content_order(samples.x, samples.y)
    ragged = isinstance(samples.x, list)
    x = [samples.x[i] for i in order] if ragged else np.asarray(samples.x)[order]
    y = None if samples.y is None else np.asarray(samples.y)[order]
    outputs = int8_search.run_fp32(fp32, input_name, x)  # the fp32 model's own outputs on every sample
    kinds = detect_kinds(outputs, fp32, kind_overrides)
    decider = task_output(kinds)

    def strata(out: dict[str, np.ndarray], labels: np.ndarray | None) -> tuple[np.ndarray | None, str | None]:
        if labels is not None:
            return labels, "label"
        if decider is not None and decider in out:
            return decisions(kinds[decider].kind, out[decider], cfg.threshold), "fp32 decision"
        return None, None

    if cfg.reference:
        validation = _reference_validation(cfg, fp32, input_name, sample_shape, kind_overrides)
        s_cal, by_cal = strata(outputs, y)
        s_val, by_val = strata(validation.outputs, validation.labels)
        by = by_val or by_cal
        counts = {"calibration": count_classes(s_cal, by_cal), "validation": count_classes(s_val, by_val)}
        counts = {k: v for k, v in counts.items() if v}
        bys = {"calibration": by_cal, "validation": by_val}
        info = {"seed": None, "stratified_by": by, "calibration_samples": int(len(x)),
                "validation_samples": len(validation), "classes": counts,
                "classes_by": {part: bys[part] for part in counts},
                "warnings": [w for part, c in counts.items() for w in one_class_warnings({part: c}, bys[part])],
                "order": "sha256 of each sample's bytes"}
        lines = ["classes: " + "; ".join(f"{class_line({part: c})} (by {bys[part]})" for part, c in counts.items())
                 ] if counts else []
        return validation, x, info, lines + [f"WARNING: {w}" for w in info["warnings"]]
    if len(x) < 2:
        raise InputError(f"{len(x)} calibration sample: at least 2 are needed to hold some out for "
                         "validation (or give --reference)")
    s, by = strata(outputs, y)
    if ragged:
        from optkit.verification.lengths import lengths_of

        sp = split_by_length(lengths_of(x, samples.time_axis), cfg.holdout, s, by)
    else:
        sp = stratified_split(len(x), cfg.holdout, s, by)
    v = sp.validation

    def take(idx: np.ndarray) -> Any:
        return [x[i] for i in idx] if ragged else x[idx]

    validation = int8_search.holdout_validation(fp32, input_name, take(v), None if y is None else y[v], cfg.threshold,
                                                outputs={k: o[v] for k, o in outputs.items()},
                                                kind_overrides=kind_overrides)
    return validation, take(sp.calibration), sp.to_json(), [f"split: {sp.describe()}"] + [
        f"WARNING: {w}" for w in sp.warnings]


def _load_stats(path: Path, key: dict[str, Any]) -> tuple[Any, str]:
    """Cached statistics if ``path`` holds statistics made for ``key``; else (None, why not)."""
    from optkit.quantization.calib_stats import CalibStats

    if not path.exists():
        return None, "no statistics cache yet"
    try:
        stats = CalibStats.load(path)
        old = stats.meta
    except (InputError, KeyError, ValueError, OSError) as exc:
        return None, f"statistics cache {path.name} is unreadable ({type(exc).__name__}); recalibrating"
    stale = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
    if stale:
        return None, f"statistics cache {path.name} is stale ({', '.join(stale)} changed)"
    stats.meta = key
    return stats, "reused"


def _load_settings(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The chosen trial of an earlier search with the same inputs, or None."""
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != SETTINGS_FORMAT or payload.get("key") != json.loads(json.dumps(key)):
            return None
        chosen = payload["chosen"]
        if chosen["method"] not in METHODS:
            return None
        return {"method": chosen["method"], "excluded_nodes": list(chosen["excluded_nodes"]),
                "equalized": bool(chosen["equalized"]), "dynamic_nodes": list(chosen.get("dynamic_nodes", []))}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_settings(path: Path, key: dict[str, Any], chosen: Any, outcome: Any, validation: Any) -> None:
    from optkit.common.fileio import write_text_atomically
    from optkit.verification.task_metrics import json_safe

    payload = {
        "format": SETTINGS_FORMAT, "version": 1, "key": key,
        "chosen": {"method": chosen.spec.method, "excluded_nodes": list(chosen.spec.excluded_nodes),
                   "equalized": chosen.spec.equalized, "dynamic_nodes": list(chosen.spec.dynamic_nodes),
                   "trial": outcome.chosen, "name": chosen.spec.name},
        "validation": validation.description,
        "trials": [t.row() for t in outcome.trials],
    }
    write_text_atomically(path, json.dumps(json_safe(payload), indent=1) + "\n")
