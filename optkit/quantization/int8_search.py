"""Accuracy-aware int8: quantise, check the gate on validation data, and fix what fails.

A *trial* is (range method, nodes kept in float, input equalisation). Every trial reuses the same
calibration statistics (:mod:`optkit.quantization.calib_stats`), so trying another range method costs no
inference; a trial costs one ``quantize_static`` call and one run over the validation set.

Order of the search (stop at the first trial that passes, or after ``budget`` trials):

1. the requested trial (by default: minmax ranges, nothing excluded);
2. the other range methods, from the statistics already collected: percentile, mse, entropy;
3. input equalisation, where the model input is badly scaled across channels and its consumers
   can absorb a per-channel scale exactly (Conv weights): it keeps every MAC in int8;
4. with the best range method so far, the nodes where error grows kept in float: the ranking
   comes from one pass comparing every tensor of that trial with its fp32 twin
   (:func:`optkit.verification.localize.localize_error`, built on ORT's ``qdq_loss_debug``; see
   :func:`rank_sensitive_nodes`); 1, 2, 4, ... nodes, never more than a quarter of
   the MACs (a "pass" bought by un-quantising the model is not an int8 model). For a target that
   runs them in fp16 (TensorRT) the nodes kept out of int8 are converted to fp16 in the trial
   itself (:func:`run_trial`), so the trial is judged as the runtime will run it.

Trials 1-3 are the first wave, 4 the second (its ranking needs the best of the first). A wave is
handed to a *trial map* (:data:`TrialMap`; in order in this process by default, as Ray tasks with
``--ray``), and the search keeps its results in queue order up to and including the first that
passes: what a sequential search keeps, whatever ran in parallel.

Validation: a reference ``.npz`` (PyTorch outputs) when given, else a held-out part of the
calibration data (:mod:`optkit.quantization.split`: content order, seeded, stratified) judged
against the fp32 model's own outputs; each output is judged by its kind as ``optkit verify``
judges it (:func:`optkit.verification.verify.judge_outputs`,
:mod:`optkit.verification.output_kinds`), with the int8 gate.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import

EQUALIZE_MIN_SPREAD = 8.0   # per-channel |x| maxima differing by more than this: badly scaled
FP16_TARGETS = ("tensorrt",)  # targets that run the nodes kept out of int8 in fp16


@dataclass(frozen=True)
class TrialSpec:
    name: str
    change: str
    method: str
    excluded_nodes: tuple[str, ...] = ()
    equalized: bool = False
    dynamic_nodes: tuple[str, ...] = ()   # float LSTM/MatMul nodes quantised dynamically (trials.apply_dynamic)


@dataclass
class TrialResult:
    spec: TrialSpec
    path: Path
    metrics: dict[str, Any]          # per output: optkit.verification.task_metrics.compare_outputs
    accuracy: float | None
    accuracy_drop: float | None
    failures: list[str]
    mac: dict[str, Any]
    seconds: float
    quantize_seconds: float = 0.0   # of ``seconds``: the quantize_static call
    fp16_nodes: tuple[str, ...] = ()  # nodes kept out of int8 that were converted to fp16 (target tensorrt)

    @property
    def passed(self) -> bool:
        return not self.failures

    def row(self) -> dict[str, Any]:
        """The contract of info["int8_search"]["trials"][i]."""
        first = next(iter(self.metrics.values()), {})
        return {
            "name": self.spec.name,
            "change": self.spec.change,
            "method": self.spec.method,
            "excluded_nodes": list(self.spec.excluded_nodes),
            "equalized": self.spec.equalized,
            "dynamic_nodes": list(self.spec.dynamic_nodes),
            "kind": first.get("kind"),
            "agreement": first.get("agreement"),
            "mean_abs_dp": first.get("mean_abs"),
            "sample_cosine_min": first.get("sample_cosine_min"),
            "sample_cosine_mean": first.get("sample_cosine_mean"),
            "accuracy": self.accuracy,
            "int8_mac_share": self.mac["share"]["int8"],
            "fp16_mac_share": self.mac["share"].get("fp16", 0.0),
            # the precision of the nodes kept out of int8: fp16 where the target runs them in fp16
            "kept_in": "fp16" if self.fp16_nodes else "fp32",
            "fp16_nodes": list(self.fp16_nodes),
            "passed": self.passed,
            "failures": list(self.failures),
            "seconds": round(self.seconds, 3),
        }

    def score(self) -> tuple[float, ...]:
        """Larger is better: passed, then fewer flipped decisions (an embedding: higher mean cosine),
        then smaller mean |dp|."""
        first = next(iter(self.metrics.values()), {})
        agree = first.get("agreement")
        if agree is None:
            agree = first.get("sample_cosine_mean")
        return (float(self.passed), -1.0 if agree is None else agree, -(first.get("mean_abs", math.inf)),
                self.mac["share"]["int8"])


@dataclass
class Validation:
    """What trials are judged on."""

    kind: str                      # "reference" | "holdout"
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]  # what int8 must match: PyTorch's or the fp32 model's
    labels: np.ndarray | None
    description: str
    base_accuracy: float | None = None
    # what each output is ({name: output_kinds.OutputKind}) and per-output gates ({name: Gate})
    kinds: dict[str, Any] = field(default_factory=dict)
    output_gates: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))  # an array, or a list of mixed-length samples


def run_fp32(fp32_path: Path, input_name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """The fp32 model's outputs on ``x`` (ORT CPU)."""
    from optkit.verification.reference import Reference
    from optkit.runtime.onnxruntime import OnnxRuntimeRunner
    from optkit.verification.verify import run_artifact

    with OnnxRuntimeRunner(fp32_path) as runner:
        return run_artifact(runner, Reference({input_name: x}, {"_": x[:0]}), 32)


def holdout_validation(fp32_path: Path, input_name: str, x: np.ndarray, y: np.ndarray | None,
                       threshold: float, outputs: dict[str, np.ndarray] | None = None,
                       kind_overrides: dict[str, str] | None = None) -> Validation:
    """Held-out calibration samples judged against the fp32 model's own outputs (``outputs``: those
    outputs when already computed); each output judged by its kind (``kind_overrides`` win)."""
    from optkit.verification.output_kinds import detect_kinds
    from optkit.verification.verify import reference_task

    outputs = outputs if outputs is not None else run_fp32(fp32_path, input_name, x)
    kinds = detect_kinds(outputs, fp32_path, kind_overrides)
    task = reference_task(outputs, kinds, y, threshold)
    return Validation("holdout", {input_name: x}, outputs, y,
                      f"{len(x)} held-out calibration samples judged against the fp32 model's own outputs",
                      task["accuracy"] if task else None, kinds)


def reference_validation(path: str, threshold: float, fp32_path: Path | None = None, input_name: str = "",
                         sample_shape: tuple[int, ...] | None = None,
                         kind_overrides: dict[str, str] | None = None) -> Validation:
    """Validation on a file: an optkit reference (.npz with input.*/output.*: judged against its
    reference outputs) or a labelled data set (.npz with x[, y] or a .npy folder: judged against
    the fp32 model's own outputs on it, labels for accuracy). Samples in content order."""
    import zipfile

    from optkit.quantization.split import content_order
    from optkit.verification.output_kinds import detect_kinds
    from optkit.verification.reference import load_reference
    from optkit.verification.verify import reference_task

    is_reference = False
    if str(path).endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as z:
                is_reference = any(n.startswith("output.") for n in z.namelist())
        except (OSError, zipfile.BadZipFile):
            is_reference = True  # let load_reference report what is wrong with it
    if not is_reference and fp32_path is not None:
        from optkit.data.source import load_samples

        data = load_samples(path, sample_shape=sample_shape)
        order = content_order(data.x, data.y)
        v = holdout_validation(fp32_path, input_name, np.asarray(data.x)[order],
                               None if data.y is None else np.asarray(data.y)[order], threshold,
                               kind_overrides=kind_overrides)
        v.kind = "reference"
        v.description = f"{len(data)} samples of {Path(path).name} judged against the fp32 model's own outputs"
        return v
    ref = load_reference(path, mixed_length=True)  # mixed lengths: lists of samples, run length by length
    kinds = detect_kinds(ref.outputs, fp32_path, kind_overrides)
    task = reference_task(ref.outputs, kinds, ref.labels, threshold)
    return Validation("reference", ref.inputs, ref.outputs, ref.labels,
                      f"{len(ref)} samples of {Path(path).name} judged against its reference outputs",
                      task["accuracy"] if task else None, kinds)


def evaluate(path: Path, validation: Validation, gate: Any, threshold: float,
             threads: int | None = None, providers: tuple[str, ...] = ("cpu",),
             ) -> tuple[dict[str, Any], float | None, float | None, list[str]]:
    """Run a trial model over the validation set on each of ``providers`` (default ORT CPU;
    ``threads``: None = the runtime's default) and judge it as ``optkit verify`` does
    (:func:`optkit.verification.verify.judge_outputs`: each output by its kind, against the int8
    gate). With several runtimes the model passes only where it passes on every one: the figures
    returned are those of the runtime that judged it worst, the failures of each are named with it
    (one QDQ file runs on different int8 kernels per runtime: a model that passes on ONNX Runtime
    can miss the gate on OpenVINO by a hair, and the release verifies both)."""
    from optkit.runtime.registry import make_runner
    from optkit.verification.lengths import bucket_failures, bucket_results
    from optkit.verification.output_kinds import detect_kinds
    from optkit.verification.reference import Reference
    from optkit.verification.verify import judge_outputs, run_artifact

    ref = Reference(validation.inputs, validation.outputs, validation.labels)
    kinds = validation.kinds or detect_kinds(validation.outputs)
    lengths = _sample_lengths(validation)
    judged = []
    for provider in providers:
        with make_runner(path, provider=provider, threads=threads) as runner:
            outs = run_artifact(runner, ref, 32)
        j = judge_outputs(validation.outputs, outs, kinds, gate, threshold, validation.labels,
                          validation.base_accuracy, validation.output_gates)
        failures = list(j.failures)
        if lengths is not None and j.outputs:
            # mixed lengths: each length bucket judged as `optkit verify` judges it, so the search
            # cannot choose a model that passes overall and fails verify in one bucket (measured:
            # the voice model's chosen int8 passed at mean |diff| 0.0091 over 576 natural-length
            # utterances, then failed verify at 0.0104 in its 556-600-frame bucket)
            failures += bucket_failures(bucket_results(validation.outputs, outs, validation.labels, lengths, gate,
                                                       threshold))
        judged.append((provider, j, failures))
    if len(judged) == 1:
        _, j, failures = judged[0]
        return j.outputs, (j.task or {}).get("accuracy"), j.accuracy_drop, failures

    def badness(item: Any) -> tuple[int, float, float]:
        first = next(iter(item[1].outputs.values()), {})
        return len(item[2]), -float(first.get("agreement") or 0.0), float(first.get("mean_abs") or 0.0)

    worst = max(judged, key=badness)[1]
    failures = [f"{f} [{p}]" for p, _, fs in judged for f in fs]
    return worst.outputs, (worst.task or {}).get("accuracy"), worst.accuracy_drop, failures


def _sample_lengths(validation: Validation) -> np.ndarray | None:
    """Each validation sample's length for a mixed-length set (lists of samples); None otherwise."""
    from optkit.verification.lengths import lengths_of

    samples = next((v for v in validation.inputs.values() if isinstance(v, list)), None)
    return lengths_of(samples) if samples else None


# -- one trial ---------------------------------------------------------------------------------

@dataclass
class TrialContext:
    """Everything a trial needs, in one picklable object: a trial is a pure function of this
    context and its :class:`TrialSpec` (:func:`run_trial`), so it runs the same in this process
    or on a Ray worker that shares no files with the driver (the context travels once through
    Ray's object store; the models are bytes, not paths).
    """

    model: bytes                          # the pre-processed fp32 model
    stats: Any                            # optkit.quantization.calib_stats.CalibStats of the model's tensors
    percentile: float
    symmetric: bool
    exclude_nodes: tuple[str, ...]        # always kept in float (the user's --exclude-nodes)
    op_types: tuple[str, ...]             # op types quantize_static may quantise
    settings: dict[str, Any]              # quantize_static's activation/weight types, extra options
    target: str                           # the runtime the model is made for (cpu/openvino/tensorrt)
    validation: Validation
    gate: Any                             # optkit.verification.verify.Gate (int8)
    threshold: float
    equalized_model: bytes | None = None  # the model with the input equalisation folded in
    eq_stats: Any = None                  # statistics of the equalised input
    eq_mul_node: str | None = None        # the equalisation's Mul (never quantised)
    threads: int | None = None            # ORT threads of the evaluation (None = ORT's default)
    exclude_op_types: tuple[str, ...] = ()  # the user's --exclude-op-types (kept out of int8)
    providers: tuple[str, ...] = ("cpu",)  # runtimes every trial is judged on (all must pass)

    @property
    def keeps_fp16(self) -> bool:
        """Nodes kept out of int8 become fp16 where the target runs them in fp16 (TensorRT)."""
        return self.target in FP16_TARGETS

    def __post_init__(self) -> None:
        import hashlib

        self._names = {"model": f"fp32-{hashlib.sha256(self.model).hexdigest()[:16]}.onnx"}
        if self.equalized_model is not None:
            self._names["equalized_model"] = f"fp32eq-{hashlib.sha256(self.equalized_model).hexdigest()[:16]}.onnx"

    def model_file(self, work_dir: Path, equalized: bool) -> Path:
        """The (equalised) fp32 model as a file in ``work_dir``, written on first use."""
        which = "equalized_model" if equalized else "model"
        if which not in self._names:
            raise InputError("an equalised trial needs a context with the equalised model")
        path = Path(work_dir) / self._names[which]
        if not path.exists():
            from optkit.common.fileio import write_bytes_atomically

            write_bytes_atomically(path, getattr(self, which))
        return path


def run_trial(ctx: TrialContext, spec: TrialSpec, index: int, work_dir: Path) -> TrialResult:
    """One trial: ranges from the statistics, quantise, check it is int8, evaluate on the
    validation set against the gate, count MACs by precision. Writes ``trial{index}.onnx`` (and
    its ranges) in ``work_dir``; the result's ``path`` is that model."""
    import time

    from optkit.quantization import calib_stats
    from optkit.common.errors import PassFailed
    from optkit.model.macs import mac_breakdown
    from optkit.model.onnx_utils import load_onnx, model_precision

    work_dir = Path(work_dir)
    started = time.perf_counter()
    path = work_dir / f"trial{index}.onnx"
    # quantise
    ranges = ctx.stats.ranges(spec.method, ctx.percentile, symmetric=ctx.symmetric)
    exclude = list(ctx.exclude_nodes) + list(spec.excluded_nodes)
    if spec.equalized:
        if ctx.eq_stats is None or ctx.eq_mul_node is None:
            raise InputError("an equalised trial needs a context with the equalisation's statistics")
        ranges.update(ctx.eq_stats.ranges(spec.method, ctx.percentile, symmetric=ctx.symmetric))
        exclude.append(ctx.eq_mul_node)
    model_in = ctx.model_file(work_dir, spec.equalized)
    ranges_path = calib_stats.write_ort_ranges(work_dir / f"ranges{index}.json", ranges)
    q0 = time.perf_counter()
    quantize_with_ranges(model_in, path, ranges_path, exclude, ctx.settings, list(ctx.op_types))
    if spec.dynamic_nodes:
        from optkit.quantization.trials import apply_dynamic

        static = work_dir / f"trial{index}.static.onnx"
        path.replace(static)
        # full-range weights, whatever the static form: measured on the suite's LSTM encoder on an
        # AVX2-only CPU (where the static form is 7-bit), dynamic LSTM with 7-bit weights fell to a
        # worst per-sample cosine of 0.83 and with full-range ones kept 0.973 (mean 0.9992) at 2.4-3.2x fp32;
        # a CPU where they saturate shows it in this trial's gate
        apply_dynamic(static, path, spec.dynamic_nodes, reduce_range=False)
    quantize_seconds = time.perf_counter() - q0
    # post-process
    qmodel = load_onnx(path)
    if model_precision(qmodel) != "int8":
        raise PassFailed("ONNX Runtime quantised nothing (no QuantizeLinear/DequantizeLinear nodes); "
                         "check --exclude-nodes / --exclude-op-types")
    fp16_nodes: list[str] = []
    if ctx.keeps_fp16:
        # what TensorRT will run: the nodes kept out of int8 in fp16 (the equalisation's Mul is
        # the input's scaling, not a node kept out, and stays fp32); judged as converted
        from optkit.model.onnx_utils import save_onnx_atomically
        from optkit.quantization.fp16 import nodes_to_fp16

        keep = set(ctx.exclude_nodes) | set(spec.excluded_nodes)
        keep |= {n.name for n in qmodel.graph.node if n.op_type in set(ctx.exclude_op_types)}
        if keep:
            qmodel, fp16_nodes, _, _ = nodes_to_fp16(qmodel, keep, f"trial {index}")
            if fp16_nodes:
                save_onnx_atomically(qmodel, path)
    # evaluate
    metrics, accuracy, drop, failures = evaluate(path, ctx.validation, ctx.gate, ctx.threshold, ctx.threads, ctx.providers)
    return TrialResult(spec, path, metrics, accuracy, drop, failures, mac_breakdown(qmodel),
                       time.perf_counter() - started, quantize_seconds, tuple(fp16_nodes))


def quantize_with_ranges(model: Path, out: Path, ort_ranges: Path, exclude_nodes: list[str],
                         settings: dict[str, Any], op_types: list[str]) -> None:
    """ONNX Runtime's ``quantize_static`` (QDQ, per-channel weights) with precomputed ranges,
    handed over as its calibration cache (ORT's supported way to quantise with given ranges)."""
    import contextlib
    import io
    import logging

    from optkit.common.errors import OptkitError, PassFailed, first_line

    qz = lazy_import("onnxruntime.quantization")
    logger = logging.getLogger()
    level = logger.level
    try:
        # quantize_static logs a pre-processing hint on the root logger even when the model is
        # pre-processed by another tool; optkit prints its own summary.
        logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()):
            qz.quantize_static(
                str(model), str(out), calibration_data_reader=None,
                quant_format=qz.QuantFormat.QDQ,
                op_types_to_quantize=op_types,
                per_channel=True,
                reduce_range=bool(settings.get("reduce_range", False)),
                activation_type=settings["activation_type"],
                weight_type=settings["weight_type"],
                nodes_to_exclude=list(exclude_nodes),
                calibrate_method=qz.CalibrationMethod.MinMax,  # ranges precomputed
                extra_options=settings["extra_options"],
                calibration_cache_path=str(ort_ranges),
            )
    except OptkitError:
        raise
    except Exception as exc:
        raise PassFailed(f"ONNX Runtime quantize_static failed: {type(exc).__name__}: "
                         f"{first_line(exc)}") from exc
    finally:
        logger.setLevel(level)


# -- equalisation ------------------------------------------------------------------------------

@dataclass
class Equalization:
    """x' = x / scale per channel at the model input; the consumers' weights absorb the scale."""

    input_name: str
    new_input: str
    mul_node: str
    scale: np.ndarray          # (C,) per input channel
    consumers: list[str]
    spread: float              # max/min of the per-channel |x| maxima before

    def describe(self) -> str:
        return (f"input {self.input_name} equalised per channel (|x| maxima spread {self.spread:.3g}x; scale "
                f"folded into {', '.join(self.consumers)})")


def plan_equalization(model: Any, input_name: str, x: np.ndarray) -> tuple[Equalization | None, str]:
    """Whether the input is badly scaled across channels and Conv weights can absorb a scale."""
    if x.ndim < 3 or x.shape[1] < 2:
        return None, f"input {input_name} has fewer than 2 channels (axis 1): no per-channel scale to fold"
    consumers = [n for n in model.graph.node if input_name in n.input]
    inits = {i.name: i for i in model.graph.initializer}
    for n in consumers:
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        if n.op_type != "Conv" or n.input[0] != input_name or group != 1 or n.input[1] not in inits:
            return None, f"input {input_name} feeds {n.op_type} {n.name}: a per-channel scale cannot be folded there"
    if not consumers:
        return None, f"input {input_name} feeds no node"
    absmax = np.abs(x).max(axis=tuple(i for i in range(x.ndim) if i != 1)).astype(np.float64)
    absmax = np.where(absmax > 0, absmax, absmax[absmax > 0].min() if (absmax > 0).any() else 1.0)
    spread = float(absmax.max() / absmax.min())
    if spread < EQUALIZE_MIN_SPREAD:
        return None, f"input {input_name} is evenly scaled across channels (spread {spread:.3g}x)"
    scale = absmax / math.exp(float(np.mean(np.log(absmax))))
    return Equalization(input_name, input_name + "_equalized", input_name + "_equalize", scale.astype(np.float32),
                        [n.name for n in consumers], spread), ""


def apply_equalization(model: Any, eq: Equalization) -> Any:
    """A copy of ``model`` with x' = x * (1/scale) at the input and W[:, c] *= scale[c]."""
    onnx = lazy_import("onnx")
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    c = len(eq.scale)
    rank = next(len(v.type.tensor_type.shape.dim) for v in g.input if v.name == eq.input_name)
    inv = (1.0 / eq.scale).reshape((1, c) + (1,) * (rank - 2)).astype(np.float32)
    g.initializer.append(numpy_helper.from_array(inv, eq.mul_node + "_inv_scale"))
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.name in eq.consumers:
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            w = w * eq.scale.reshape((1, c) + (1,) * (w.ndim - 2))
            new_name = n.input[1] + "_equalized"
            g.initializer.append(numpy_helper.from_array(w.astype(np.float32), new_name))
            n.input[1] = new_name
            n.input[0] = eq.new_input
    g.node.insert(0, helper.make_node("Mul", [eq.input_name, eq.mul_node + "_inv_scale"], [eq.new_input],
                                      name=eq.mul_node))
    # drop initializers nothing reads any more (the original weights)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


# -- sensitivity -------------------------------------------------------------------------------

def rank_sensitive_nodes(fp32_path: Path, quant_path: Path, inputs: dict[str, np.ndarray],
                         node_macs: dict[str, int], samples: int = 8) -> list[dict[str, Any]]:
    """Quantised nodes in the order to keep them in float.

    First the nodes where the error grows by 6 dB or more (localize's ``grows``), in graph order:
    error made early is carried and amplified by every later layer, so the earliest such node
    is the one to fix first (on the bundled voice model: the first conv, which sees raw MFCCs).
    Then the other nodes that add error, the most first (ties: fewer MACs first).
    """
    from optkit.verification.localize import localize_error

    table = localize_error(fp32_path, quant_path, inputs, top=None, max_samples=samples)
    # localize measures what a node adds on top of its inputs *as consumed*; the error of a
    # quantised model input belongs to no node's row, yet it is made for (and removed with) the
    # nodes that read it: those count as growing (badly scaled raw features, e.g. MFCCs)
    first = _reads_quantized_model_input(quant_path)
    for r in table:
        if r["node"] in first and r["quantized"]:
            r["grows"] = True
    quantized = [r for r in table if r["quantized"] and (r["growth_db"] > 0 or r["grows"])]
    grows = sorted((r for r in quantized if r["grows"]), key=lambda r: r["index"])
    rest = sorted((r for r in quantized if not r["grows"]),
                  key=lambda r: (-round(r["growth_db"], 1), node_macs.get(r["node"], 0)))
    return grows + rest


def _reads_quantized_model_input(quant_path: Path) -> set[str]:
    onnx = lazy_import("onnx")
    model = onnx.load(str(quant_path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    inputs = {i.name for i in model.graph.input}
    out = set()
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in node.input:
            p = producers.get(name)
            if p is not None and p.op_type == "DequantizeLinear":
                q = producers.get(p.input[0])
                if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in inputs:
                    out.add(node.name)
    return out


def plan_trials(first: TrialSpec, methods: list[str], equalization_possible: bool) -> list[TrialSpec]:
    """The method and equalisation trials (the exclusion trials need a sensitivity ranking)."""
    trials = [first]
    for m in methods:
        if m != first.method:
            trials.append(dataclasses.replace(first, name=f"{m} ranges", change=f"range method {m}", method=m))
    if equalization_possible and not first.equalized:
        trials.append(dataclasses.replace(first, name="equalised input", change="input equalised per channel",
                                          equalized=True))
    return trials


MAX_FLOAT_SHARE = 0.25  # the search keeps at most this share of the MACs in float


def exclusion_trials(best: TrialSpec, ranked: list[dict[str, Any]], already: tuple[str, ...],
                     node_macs: dict[str, int] | None = None, total_macs: int = 0,
                     counts: tuple[int, ...] = (1, 2, 4, 8, 16), kept_as: str = "float") -> list[TrialSpec]:
    """Keep the top 1, 2, 4, ... ranked nodes in float (``kept_as``: "fp16" where the target runs
    them in fp16), as long as they hold at most
    ``MAX_FLOAT_SHARE`` of the MACs: a search that "passes" by un-quantising the model would
    present a float model as int8."""
    names = [r["node"] for r in ranked if r["node"] not in already]
    if node_macs and total_macs:
        kept, budget = [], MAX_FLOAT_SHARE * total_macs
        for n in names:
            budget -= node_macs.get(n, 0)
            if budget < 0:
                break
            kept.append(n)
        names = kept
    out = []
    for k in counts:
        if k > len(names):
            k = len(names)
        chosen = tuple(names[:k])
        if not chosen or any(t.excluded_nodes == already + chosen for t in out):
            continue
        shown = ", ".join(chosen[:3]) + (", ..." if len(chosen) > 3 else "")
        out.append(dataclasses.replace(
            best, name=f"{len(chosen)} sensitive node{'s' if len(chosen) > 1 else ''} in {kept_as}",
            change=f"{best.method} ranges; kept in {kept_as}: {shown}", excluded_nodes=already + chosen))
    return out


@dataclass
class SearchOutcome:
    trials: list[TrialResult] = field(default_factory=list)
    chosen: int | None = None
    ranking: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def best(self) -> TrialResult:
        return max(self.trials, key=lambda t: t.score())


# ``map_trials(jobs, note)``: run the (index, spec) jobs of one wave and yield their results in
# job order, lazily: the search stops consuming at the first passing trial and closes the
# iterator. A map that ran jobs ahead (in parallel) discards their results and says so with ``note``.
TrialMap = Callable[[list[tuple[int, TrialSpec]], Callable[[str], None]], Iterator[TrialResult]]


def sequential_trials(run_trial: Callable[[int, TrialSpec], TrialResult]) -> TrialMap:
    """The default map: one trial after the other in this process, none run past the consumer."""
    def map_trials(jobs: list[tuple[int, TrialSpec]], note: Callable[[str], None]) -> Iterator[TrialResult]:
        for index, spec in jobs:
            yield run_trial(index, spec)

    return map_trials


def search(first: TrialSpec, *, run_trial: Callable[[int, TrialSpec], TrialResult], budget: int, do_search: bool,
           methods: list[str], equalization: Equalization | None, rank: Callable[[TrialResult], list[dict[str, Any]]],
           echo: Callable[[str], None] = lambda s: None, node_macs: dict[str, int] | None = None,
           total_macs: int = 0, map_trials: TrialMap | None = None, kept_as: str = "float",
           classes: dict[str, tuple[str, ...]] | None = None, dynamic: bool = False) -> SearchOutcome:
    """Run trials until one passes (or ``budget`` trials ran); see the module docstring.

    Waves, each handed up to ``budget - done`` trials: the planned trials (range methods,
    equalisation); the sensitive nodes in float (ranked on the best so far, weighed by MACs:
    :func:`optkit.quantization.trials.weigh_ranking`); ``classes`` of ops in float
    (:func:`optkit.quantization.trials.class_trials`); with ``dynamic``, the float LSTM/MatMul
    nodes quantised dynamically; then the greedy fallback, one trial per wave, until the gate
    passes, the float share would exceed :data:`MAX_FLOAT_SHARE` or the budget ends. A passing
    static trial that leaves LSTM/MatMul MACs in float gets one more trial, those quantised
    dynamically, chosen instead when it passes too.

    Each wave's results are kept in queue order up to and including the first passing one -
    exactly what a sequential search keeps, whatever ran in parallel, so the trials, the ranking
    and the chosen model do not depend on the map (default :func:`sequential_trials`).
    ``kept_as`` names the precision of the nodes kept out of int8 in the trials' names ("fp16"
    where the target runs them in fp16).
    """
    from optkit.quantization import trials as more

    if budget < 1:
        raise InputError(f"search budget must be at least 1 trial, got {budget}")
    out = SearchOutcome()
    map_trials = map_trials or sequential_trials(run_trial)
    node_macs = node_macs or {}

    def note(text: str) -> None:
        out.notes.append(text)
        echo(text)

    def left() -> int:
        return budget - len(out.trials)

    def wave(specs: list[TrialSpec]) -> bool:
        """True when a trial of ``specs`` passed (it is then the last of ``out.trials``)."""
        start = len(out.trials)
        jobs = [(start + i, spec) for i, spec in enumerate(specs[: max(0, left())])]
        if not jobs:
            return False
        results = map_trials(jobs, note)
        try:
            for result in results:
                out.trials.append(result)
                echo(format_row(len(out.trials) - 1, result))
                if result.passed:
                    out.chosen = len(out.trials) - 1
                    return True
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
        return False

    def dynamic_spec(t: TrialResult) -> TrialSpec | None:
        if not dynamic or t.spec.dynamic_nodes:
            return None
        nodes, share, ops = more.dynamic_candidates(t.mac, t.spec.excluded_nodes)
        if not nodes or share < more.DYNAMIC_MIN_SHARE:
            return None
        spec = more.dynamic_trial(t.spec, nodes, share, ops)
        return None if any(r.spec == spec for r in out.trials) else spec

    def finish() -> SearchOutcome:
        """A passing static trial that leaves recurrent/MatMul MACs in float: try them dynamic."""
        if out.chosen is None or not do_search or left() < 1:
            return out
        chosen = out.chosen
        spec = dynamic_spec(out.trials[chosen])
        if spec is not None:
            note(f"trial {chosen} passed with {100 * out.trials[chosen].mac['share']['int8']:.1f} % of the MACs in "
                 "int8; trying its float LSTM/MatMul nodes quantised dynamically")
            if not wave([spec]):
                out.chosen = chosen  # the dynamic trial failed the gate: not chosen
        return out

    def best_static() -> TrialResult:
        return max((t for t in out.trials if not t.spec.dynamic_nodes), key=lambda t: t.score())

    queue = plan_trials(first, methods, equalization is not None) if do_search else [first]
    if wave(queue) or not do_search or left() < 1:
        return finish()
    base = max((t for t in out.trials if not t.spec.equalized), key=lambda t: t.score())
    eq_trial = next((t for t in out.trials if t.spec.equalized), None)
    if eq_trial is not None and eq_trial.score() > base.score():
        base = eq_trial
    out.ranking = more.weigh_ranking(rank(base), node_macs, total_macs, MAX_FLOAT_SHARE)
    if not out.ranking:
        out.notes.append("no quantised node adds measurable error: nothing to keep in float")
    if wave(exclusion_trials(base.spec, out.ranking, base.spec.excluded_nodes, node_macs, total_macs,
                             counts=(1, 2, 4, 8), kept_as=kept_as)):
        return finish()
    if classes and wave(more.class_trials(base.spec, classes, node_macs, total_macs, MAX_FLOAT_SHARE, kept_as)):
        return finish()
    spec = dynamic_spec(best_static())
    if spec is not None and wave([spec]):
        return out
    # greedy fallback: grow the float set of the best trial by the next ranked nodes
    current = best_static()
    if left() < 1:
        return out
    ranked = more.weigh_ranking(rank(current), node_macs, total_macs, MAX_FLOAT_SHARE) if current is not base \
        else out.ranking
    candidates = [r["node"] for r in ranked if r["node"] not in current.spec.excluded_nodes]
    step = 1
    while left() > 0 and candidates:
        spec, candidates = more.greedy_step(current.spec, candidates, step, node_macs, total_macs,
                                            MAX_FLOAT_SHARE, kept_as)
        if spec is None:
            break
        if wave([spec]):
            return finish()
        if out.trials[-1].score() > current.score():
            current = out.trials[-1]
        step *= 2
    if left() > 0:
        note(f"greedy fallback ended: no ranked node left that fits under {100 * MAX_FLOAT_SHARE:.0f} % of the "
             "MACs in float")
    return out


def format_row(index: int, t: TrialResult) -> str:
    r = t.row()
    acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
    agree = "-" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%"
    dp = "-" if r["mean_abs_dp"] is None else f"{r['mean_abs_dp']:.4f}"
    if r.get("sample_cosine_mean") is not None:  # an embedding: cosine, not decisions
        return (f"trial {index}: {r['name']:<28} cosine min {r['sample_cosine_min']:.4f} mean "
                f"{r['sample_cosine_mean']:.4f}  int8 MACs {100 * r['int8_mac_share']:5.1f}%  "
                + ("PASS" if t.passed else "fail: " + "; ".join(t.failures)))
    verdict = "PASS" if t.passed else "fail: " + "; ".join(t.failures)
    fp16 = f" fp16 {100 * r['fp16_mac_share']:.1f}%" if r["fp16_mac_share"] else ""
    return (f"trial {index}: {r['name']:<28} agreement {agree:>8}  mean|dp| {dp:>7}  accuracy {acc:>7}  "
            f"int8 MACs {100 * r['int8_mac_share']:5.1f}%{fp16}  {verdict}")


# -- latency of the result ---------------------------------------------------------------------

LATENCY_WARMUP = 5  # untimed interleaved rounds before the timed ones


def measure_latency(fp32_path: Path, plain: tuple[int | None, Path], chosen: tuple[int | None, Path], rounds: int,
                    warmup: int = LATENCY_WARMUP, progress: Callable[[str], None] | None = None,
                    target: str = "cpu") -> dict[str, Any]:
    """Latency of the fp32 parent, plain int8 and the chosen model: batch 1 on ONNX Runtime CPU,
    all three in ONE interleaved run (:func:`optkit.runtime.bench.benchmark`), so the speed-ups are fair on
    a busy machine. ``plain`` / ``chosen`` are (trial index, model file); when the chosen model is
    the plain one it is timed once.

    ``speedup.chosen_kept_of_plain`` is the chosen model's speed-up over fp32 divided by plain
    int8's (= plain latency / chosen latency): the share of int8's speed-up that the fixes keep.
    """
    same = Path(plain[1]) == Path(chosen[1])
    models = [("fp32", None, Path(fp32_path)), ("plain int8", plain[0], Path(plain[1]))]
    if not same:
        models.append(("chosen", chosen[0], Path(chosen[1])))
    rows, env = time_models(models, rounds, warmup, progress)
    fp32, plain_row = rows[0], rows[1]
    chosen_row = rows[2] if not same else plain_row

    def ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
        return {k: round(a[f"{k}_ms"] / b[f"{k}_ms"], 4) if b[f"{k}_ms"] > 0 else float("inf") for k in ("min", "p50")}

    return {
        "runtime": "onnxruntime CPU", "target": target, "batch": 1, "warmup": warmup, "rounds": rounds,
        "interleaved": True,
        "chosen_is_plain": same, "environment": env,
        "models": [{k: v for k, v in r.items() if k != "runner"} for r in rows],
        "threads": rows[0]["runner"].get("threads"),
        "speedup": {"chosen_vs_fp32": ratio(fp32, chosen_row), "plain_vs_fp32": ratio(fp32, plain_row),
                    "chosen_kept_of_plain": ratio(plain_row, chosen_row)},
    }


def time_models(models: list[tuple[str, int | None, Path]], rounds: int, warmup: int = LATENCY_WARMUP,
                progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(label, trial, file) models timed at batch 1 on ONNX Runtime CPU in ONE interleaved run
    (:func:`optkit.runtime.bench.benchmark`): a row per model (min/p50 ms, runner facts) and the
    machine it ran on."""
    from optkit.runtime import sysinfo
    from optkit.runtime.bench import BenchConfig, BenchItem, benchmark
    from optkit.runtime.registry import make_runner

    items = [BenchItem(label, make_runner(path, provider="cpu"), path) for label, _, path in models]
    cpu = sysinfo.cpu_info()
    env = {"cpu": cpu.model, "int8_acceleration": cpu.int8_acceleration(), "usable_cpus": sysinfo.usable_cpus()}
    rep = benchmark(items, BenchConfig(batches=(1,), warmup=warmup, iterations=rounds), progress=progress,
                    environment=env)
    rows = []
    for (label, trial, path), item in zip(models, rep.items):
        s = rep.result(label, 1).stats
        rows.append({"model": label, "trial": trial, "file": Path(path).name, "min_ms": round(s.min_ms, 4),
                     "p50_ms": round(s.p50_ms, 4), "runner": item["runner"]})
    return rows, env


def format_latency(lat: dict[str, Any]) -> list[str]:
    """The latency table for the terminal (see :func:`measure_latency`)."""
    lines = [f"latency ({lat['runtime']}, batch {lat['batch']}, {lat['warmup']} warm-up + {lat['rounds']} timed rounds, "
             f"interleaved in one run):"]
    sp = lat["speedup"]
    for r in lat["models"]:
        name = r["model"] + (f" (trial {r['trial']})" if r["trial"] is not None
                             else " (quantised to be timed)" if r["model"] == "plain int8" else "")
        if r["model"] == "plain int8" and lat["chosen_is_plain"]:
            name += " = chosen"
        line = f"  {name:<28} min {r['min_ms']:8.3f} ms  p50 {r['p50_ms']:8.3f} ms"
        if r["model"] == "plain int8":
            s = sp["plain_vs_fp32"]
            line += f"  {s['min']:.2f}x / {s['p50']:.2f}x vs fp32 (min / p50)"
        elif r["model"] == "chosen":
            s, k = sp["chosen_vs_fp32"], sp["chosen_kept_of_plain"]
            line += (f"  {s['min']:.2f}x / {s['p50']:.2f}x vs fp32; keeps {100 * k['min']:.0f} % / {100 * k['p50']:.0f} % "
                     "of plain int8's speed-up")
        lines.append(line)
    if lat["chosen_is_plain"]:
        lines.append("  the chosen model is trial 0 (the requested settings, no fix from the search): timed once")
    if lat.get("target", "cpu") not in ("cpu", "openvino"):
        lines.append(f"  (the {lat['target']} QDQ form, timed on ONNX Runtime CPU: its speed there says little "
                     f"about {lat['target']})")
    elif sp["plain_vs_fp32"]["p50"] < 1.0:
        lines.append("  plain int8 is not faster than fp32 here (at p50)")
    return lines
