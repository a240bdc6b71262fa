"""What each model output is, and the comparison that means something for it.

One implementation for ``optkit verify``, the int8 search's gate, the release report and the
service (which needs the probability/logit part: ``serve.inference``).

Kinds, detected from the reference outputs (and, where an ONNX graph is at hand, the op that
computes the output and its declared shape):

============  ==========================================  =========================================
kind          detected when                               judged by
============  ==========================================  =========================================
probability   one value per sample, computed by a         decisions at the threshold, |Δp|
              Sigmoid/Softmax or all within [0, 1]
logit         one value per sample, outside [0, 1]        decisions at logit(threshold) (0 at 0.5),
                                                          |Δp| of sigmoid(logit)
frames        per-frame values: (batch, frames, 1), a     per-frame decisions at the threshold,
              Sigmoid per frame, a dynamic frame axis,    |Δ| per frame
              or (batch, F) within [0, 1]
embedding     many values per sample (>= 8), unbounded    per-sample cosine (min and mean); EER of
              or each sample of L2 norm 1                 same/different-label trials with labels
other         anything else (class-probability vectors,   element-wise |Δ| and decisions at the
              (batch, T, D) ...)                          threshold (the gate as it always was)
============  ==========================================  =========================================

A detection is a guess from values; ``--output-kind NAME=KIND`` (verify, quantize) and recipes
(``verify: outputs: NAME: {kind: ...}``, the int8 step's ``outputs``) say it instead. An override
naming an output the model does not have is an input error.

Which gate limits apply to which kind: :data:`KIND_LIMITS` (a limit set for a kind it does not
apply to is not checked, and the result says which limits were checked).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from optkit.common.errors import InputError, RecipeError

KINDS = ("probability", "logit", "embedding", "frames", "other")
# kinds with one decision per sample: task metrics (accuracy, EER), split stratification
DECISION_KINDS = ("probability", "logit")
EMBEDDING_MIN_VALUES = 8  # fewer unbounded values per sample: a score vector ("other"), not an embedding
RANGE_SLACK = 1e-3  # fp16/int8 rounding of a sigmoid may land just outside [0, 1]

# ops that pass a probability through unchanged in value range, walked back from an output to find
# the op that computed it (a quantised model puts Q/DQ after the Sigmoid, an fp16 one a Cast)
PASS_THROUGH_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "CastLike", "Gather",
                    "Slice", "Transpose", "Expand", "QuantizeLinear", "DequantizeLinear"}
PROBABILITY_OPS = {"Sigmoid", "Softmax", "QLinearSigmoid", "QLinearSoftmax"}  # the last two: ORT's QOperator int8
SOFTMAX_OPS = {"Softmax", "QLinearSoftmax"}

_ELEMENTWISE = ("max_abs", "mean_abs", "min_agreement", "min_cosine", "min_snr_db")
# the gate limits (optkit.verification.verify.Gate fields) that mean something for each kind
KIND_LIMITS: dict[str, tuple[str, ...]] = {
    "probability": _ELEMENTWISE + ("max_accuracy_drop",),
    "logit": _ELEMENTWISE + ("max_accuracy_drop",),
    "frames": _ELEMENTWISE,
    "embedding": ("min_sample_cosine", "min_mean_cosine", "min_snr_db", "max_eer_increase"),
    "other": _ELEMENTWISE + ("max_accuracy_drop",),
}
EER_MAX_SAMPLES = 2000  # embeddings used for the same/different-label trials (all pairs among them)


@dataclass(frozen=True)
class OutputKind:
    """What one output is and why optkit thinks so (``source``: detected | override)."""

    name: str
    kind: str
    why: str
    source: str = "detected"

    def gated_by(self, threshold: float, labels: bool = False) -> str:
        t = f"{threshold:g}"
        return {
            "probability": f"decisions at {t}, |Δp|",
            "logit": (f"decisions at {logit_threshold(threshold):g} (sigmoid >= {t}), |Δp| of sigmoid(logit)"
                      if 0.0 < threshold < 1.0 else f"decisions at {t} (a score threshold), |Δ|"),
            "frames": f"per-frame decisions at {t}, |Δ| per frame",
            "embedding": "per-sample cosine (min, mean)" + (", EER of same/different-label trials" if labels else ""),
            "other": f"element-wise |Δ|, decisions at {t}",
        }[self.kind]

    def line(self, threshold: float, labels: bool = False) -> str:
        """The one line a command prints for this output."""
        how = "set by override" if self.source == "override" else self.why
        return f"output {self.name}: {self.kind} ({how}); judged by {self.gated_by(threshold, labels)}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "why": self.why, "source": self.source}


def logit_threshold(threshold: float) -> float:
    """The logit at which sigmoid crosses ``threshold`` (0 at 0.5); a threshold outside (0, 1) is
    already a score threshold and is returned as is."""
    if 0.0 < threshold < 1.0:
        return float(math.log(threshold / (1.0 - threshold)))
    return float(threshold)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, np.float64)))  # = 1 / (1 + e^-z), without overflow


def within_unit(values: np.ndarray) -> bool:
    """All values finite and within [0, 1] (up to fp16/int8 rounding)."""
    v = np.asarray(values, np.float64)
    return bool(v.size and np.isfinite(v).all() and v.min() >= -RANGE_SLACK and v.max() <= 1.0 + RANGE_SLACK)


def unit_norm(values: np.ndarray, tol: float = 1e-3) -> bool:
    """Every sample's vector has L2 norm 1 (an L2-normalised embedding; per-frame probabilities
    summing in squares to exactly 1 on every sample would be a coincidence)."""
    v = np.asarray(values, np.float64).reshape(len(values), -1) if np.ndim(values) else np.zeros((0, 0))
    if not v.size or not np.isfinite(v).all():
        return False
    return bool(np.all(np.abs(np.linalg.norm(v, axis=1) - 1.0) <= tol))


# -- the graph ---------------------------------------------------------------------------------

def output_head_op(path: Path, output: str) -> str | None:
    """The op that computes ``output`` of an ONNX file, looking through ops that only move or
    re-encode values (Reshape, Cast, Q/DQ, Gather...); None for an engine, an unreadable graph or an
    output that is a graph input."""
    graph = _graph(path)
    if graph is None:
        return None
    producer = {o: node for node in graph.node for o in node.output}
    name, seen, last = output, set(), None
    while name in producer and name not in seen:
        seen.add(name)
        node = producer[name]
        if node.op_type not in PASS_THROUGH_OPS or not node.input:
            return node.op_type
        name, last = node.input[0], node.op_type
    return last  # the walk reached a graph input or a constant


def _graph(path: Path | None) -> Any:
    if path is None or Path(path).suffix.lower() != ".onnx":
        return None
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - without its graph the kind is judged by values alone
        return None


def graph_facts(path: Path | None) -> dict[str, tuple[str | None, tuple[Any, ...] | None]]:
    """{output name: (head op, declared shape)} of an ONNX file; {} when there is no graph."""
    graph = _graph(path)
    if graph is None:
        return {}
    out = {}
    for o in graph.output:
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in o.type.tensor_type.shape.dim)
        out[o.name] = (output_head_op(Path(path), o.name), dims)  # type: ignore[arg-type]
    return out


# -- detection ---------------------------------------------------------------------------------

def detect_kind(name: str, values: np.ndarray, head_op: str | None = None,
                declared_shape: tuple[Any, ...] | None = None) -> OutputKind:
    """The kind of one output from its reference values (batch first) and, when known, the op that
    computes it and its declared shape (a symbolic second dimension is a frame axis)."""
    v = np.asarray(values)
    per_sample = tuple(v.shape[1:])
    size = int(np.prod(per_sample)) if per_sample else 1
    unit = within_unit(v)
    head = f"computed by {head_op}" if head_op else "no graph"
    if size == 1:
        if head_op in PROBABILITY_OPS:
            return OutputKind(name, "probability", f"one value per sample, computed by {head_op}")
        if unit:
            return OutputKind(name, "probability", f"one value per sample, all within [0, 1], {head}")
        lo, hi = (float(np.nanmin(v)), float(np.nanmax(v))) if v.size else (0.0, 0.0)
        return OutputKind(name, "logit", f"one value per sample over [{lo:.4g}, {hi:.4g}], {head}")
    if head_op in SOFTMAX_OPS:
        return OutputKind(name, "other", f"{size} values per sample computed by {head_op}: class probabilities")
    frame_axis = bool(declared_shape and len(declared_shape) >= 2 and isinstance(declared_shape[1], str))
    shape = "x".join(map(str, per_sample))
    if len(per_sample) == 2 and per_sample[1] == 1:
        return OutputKind(name, "frames", f"({shape}) per sample: one value per frame")
    if len(per_sample) == 1:
        if size >= EMBEDDING_MIN_VALUES and head_op not in PROBABILITY_OPS and unit_norm(v):
            # an L2-normalised vector: before the frame tests (an all-positive one lies in [0, 1]; torch's
            # exporter names an unresolved dimension, e.g. 'Divoutput_dim_1', which reads as a dynamic axis)
            return OutputKind(name, "embedding", f"{size} values per sample, each sample of L2 norm 1, {head}")
        if frame_axis:
            return OutputKind(name, "frames", f"{size} values per sample on the dynamic axis {declared_shape[1]!r}")
        if head_op in PROBABILITY_OPS:
            return OutputKind(name, "frames", f"{size} values per sample, computed by {head_op}: one per frame")
        if unit:
            return OutputKind(name, "frames", f"{size} values per sample, all within [0, 1]: one per frame")
        if size >= EMBEDDING_MIN_VALUES:
            return OutputKind(name, "embedding", f"{size} unbounded values per sample, {head}")
    return OutputKind(name, "other", f"({shape}) per sample, {head}")


def detect_kinds(outputs: Mapping[str, np.ndarray], model: Path | None = None,
                 overrides: Mapping[str, str] | None = None, where: str = "--output-kind") -> dict[str, OutputKind]:
    """Kinds of every output of ``outputs`` (reference values), overrides applied. An override
    for an output ``outputs`` lacks is an InputError naming the outputs there are."""
    overrides = dict(overrides or {})
    check_overrides(overrides, list(outputs), where)
    facts = graph_facts(model)
    kinds = {}
    for name, values in outputs.items():
        if name in overrides:
            kinds[name] = OutputKind(name, overrides[name], "set by override", "override")
        else:
            head, dims = facts.get(name, (None, None))
            kinds[name] = detect_kind(name, values, head, dims)
    return kinds


def check_overrides(overrides: Mapping[str, str], names: list[str], where: str = "--output-kind") -> None:
    for name, kind in overrides.items():
        if kind not in KINDS:
            raise InputError(f"{where} {name}={kind}: unknown output kind {kind!r}; use one of {', '.join(KINDS)}")
        if name not in names:
            raise InputError(f"{where} {name}={kind}: the model has no output {name!r} (its outputs: "
                             f"{', '.join(names)})")


def parse_output_kind_option(values: Any, where: str = "--output-kind") -> dict[str, str]:
    """CLI ``--output-kind NAME=KIND`` (repeatable) -> {name: kind}; kinds checked, names later."""
    out: dict[str, str] = {}
    for item in values or ():
        name, sep, kind = str(item).partition("=")
        name, kind = name.strip(), kind.strip()
        if not sep or not name or not kind:
            raise InputError(f"{where} {item!r}: expected NAME=KIND, e.g. embedding=embedding "
                             f"(kinds: {', '.join(KINDS)})")
        if kind not in KINDS:
            raise InputError(f"{where} {item!r}: unknown output kind {kind!r}; use one of {', '.join(KINDS)}")
        out[name] = kind
    return out


def parse_output_gate_option(values: Any, where: str = "--output-gate") -> dict[str, dict[str, dict[str, Any]]]:
    """CLI ``--output-gate NAME:PRECISION.LIMIT=VALUE`` (repeatable; 'off' disables a limit) ->
    {name: {precision: {limit: value}}}, the shape of a recipe's ``outputs: NAME: {gates: ...}``.
    The name ends at the last ':' (an output name may hold one); precisions and limits are checked
    by ``verify.merge_gates``, names against the model later."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for item in values or ():
        lhs, sep, raw = str(item).rpartition("=")
        name, colon, key = lhs.rpartition(":")
        precision, dot, limit = key.partition(".")
        name, precision, limit, raw = name.strip(), precision.strip(), limit.strip(), raw.strip()
        if not sep or not colon or not dot or not name or not precision or not limit or not raw:
            raise InputError(f"{where} {item!r}: expected NAME:PRECISION.LIMIT=VALUE, e.g. "
                             "embedding:int8.min_sample_cosine=0.97")
        try:
            value: float | None = None if raw.lower() in ("none", "null", "off") else float(raw)
        except ValueError:
            raise InputError(f"{where} {item!r}: {raw!r} is not a number (or 'off')") from None
        out.setdefault(name, {}).setdefault(precision, {})[limit] = value
    return out


def check_output_names(per_output: Mapping[str, Any], names: Any, where: str) -> None:
    """Per-output settings for an output the model lacks: an InputError naming the outputs there
    are (``where``: a template with ``{name}``, e.g. "verify.outputs.{name}")."""
    unknown = sorted(set(per_output) - set(names))
    if unknown:
        raise InputError(f"{where.format(name=unknown[0])}: the model has no output {unknown[0]!r} (its outputs: "
                         f"{', '.join(names)})")


# -- per-output settings of a recipe -----------------------------------------------------------

def parse_output_settings(raw: Any, where: str, precisions: tuple[str, ...] | None = None
                          ) -> tuple[dict[str, str], dict[str, dict[str, dict[str, Any]]]]:
    """A recipe's ``outputs:`` mapping ``{NAME: {kind: KIND, gates: {PRECISION: {LIMIT: VALUE}}}}``
    -> ({name: kind}, {name: gate overrides}); RecipeError on anything else. The gate overrides
    are checked by ``verify.merge_gates`` (``precisions``: the precisions allowed, None = any)."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping of output name -> {{kind: ..., gates: ...}}, got {raw!r}")
    kinds: dict[str, str] = {}
    gates: dict[str, dict[str, dict[str, Any]]] = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise RecipeError(f"{where}.{name}: expected a mapping with kind and/or gates, got {spec!r}")
        unknown = sorted(set(spec) - {"kind", "gates"})
        if unknown:
            raise RecipeError(f"{where}.{name}: unknown key {', '.join(unknown)}; use kind, gates")
        if "kind" in spec and spec["kind"] is not None:
            if spec["kind"] not in KINDS:
                raise RecipeError(f"{where}.{name}.kind: unknown output kind {spec['kind']!r}; use one of "
                                  f"{', '.join(KINDS)}")
            kinds[str(name)] = spec["kind"]
        if spec.get("gates") is not None:
            g = spec["gates"]
            if not isinstance(g, dict):
                raise RecipeError(f"{where}.{name}.gates: expected a mapping of precision -> limits")
            bad = sorted(set(g) - set(precisions)) if precisions else []
            if bad:
                raise RecipeError(f"{where}.{name}.gates: {bad[0]!r} here; only {', '.join(precisions or ())}")
            gates[str(name)] = g
    return kinds, gates


# -- per-kind figures ----------------------------------------------------------------------------

def sample_cosines(ref: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Cosine of each sample's output with its reference (rows: samples); two zero vectors: 1."""
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    o = np.asarray(out, np.float64).reshape(len(out), -1)
    nr, no = np.linalg.norm(r, axis=1), np.linalg.norm(o, axis=1)
    both = (nr > 0) & (no > 0)
    cos = np.where(nr == no, 1.0, 0.0)  # both zero: the same; one zero: nothing alike
    cos[both] = np.sum(r[both] * o[both], axis=1) / (nr[both] * no[both])
    return np.where(np.isfinite(o).all(axis=1), cos, -1.0)


def trial_eer(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """EER of all same/different-label trials among the samples, scored by cosine; nan without
    both kinds of trial. At most :data:`EER_MAX_SAMPLES` samples (the first ones)."""
    from optkit.verification.task_metrics import eer

    e = np.asarray(embeddings, np.float64).reshape(len(embeddings), -1)[:EER_MAX_SAMPLES]
    y = np.asarray(labels).ravel()[: len(e)]
    if len(e) < 3 or not np.isfinite(e).all():
        return float("nan")
    n = np.linalg.norm(e, axis=1, keepdims=True)
    u = e / np.where(n > 0, n, 1.0)
    i, j = np.triu_indices(len(u), k=1)
    scores = np.sum(u[i] * u[j], axis=1)
    same = y[i] == y[j]
    return eer(scores, same)[0]


def kind_metrics(kind: str, ref: np.ndarray, out: np.ndarray, threshold: float,
                 labels: np.ndarray | None = None) -> dict[str, Any]:
    """Figures of one output for its kind: ``output_metrics`` (element-wise, decisions at the
    kind's threshold; logits compared as sigmoid(logit)) plus, for embeddings, per-sample cosine
    min/mean and the EER of same/different-label trials. Always records ``kind``."""
    from optkit.verification.comparator import output_metrics

    if kind == "logit" and 0.0 < threshold < 1.0:
        m = output_metrics(sigmoid(ref), sigmoid(out), threshold)
        m["compared_as"] = "sigmoid(logit)"
        m["decision_threshold"] = logit_threshold(threshold)
    else:
        m = output_metrics(ref, out, threshold)
        m["decision_threshold"] = float(threshold)
    m["kind"] = kind
    if kind == "embedding":
        cos = sample_cosines(ref, out)
        m["sample_cosine_min"] = float(cos.min()) if cos.size else 1.0
        m["sample_cosine_mean"] = float(cos.mean()) if cos.size else 1.0
        m["agreement"], m["flipped"] = None, None  # no decision on an embedding
        if labels is not None and len(labels) == len(ref):
            e_ref, e_out = trial_eer(ref, labels), trial_eer(out, labels)
            m["trial_eer_reference"], m["trial_eer"] = e_ref, e_out
            m["eer_increase"] = (e_out - e_ref) if math.isfinite(e_ref) and math.isfinite(e_out) else None
    return m


def decision_scores(kind: str, values: np.ndarray, threshold: float) -> np.ndarray:
    """Values as the probabilities task metrics read (sigmoid of a logit at a probability threshold)."""
    if kind == "logit" and 0.0 < threshold < 1.0:
        return sigmoid(values)
    return np.asarray(values)


def decisions(kind: str, values: np.ndarray, threshold: float) -> np.ndarray | None:
    """One accept/reject per sample for a decision kind (probability, logit); None otherwise."""
    if kind not in DECISION_KINDS:
        return None
    v = np.asarray(values, np.float64).reshape(len(values), -1)[:, 0]
    t = logit_threshold(threshold) if kind == "logit" else threshold
    return v >= t
