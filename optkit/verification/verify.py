"""Verification: run each artifact on the reference inputs and gate it against PyTorch.

Unlike a one-input max-error check, every artifact is compared on the whole reference set with
several error measures, decision agreement at the task threshold, task metrics where labels
exist, and per-precision gates; failing quantised models get per-layer error localisation.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optkit.model.artifact import Artifact, now_iso
from optkit.common.versions import tool_versions
from optkit.common.errors import InputError, OptkitError, RecipeError
from optkit.verification.comparator import output_problems
from optkit.common.defaults import BATCH_SIZE, DECISION_THRESHOLD
from optkit.verification.task_metrics import task_metrics
from optkit.verification.reference import Reference
from optkit.verification.output_kinds import detect_kinds


@dataclass(frozen=True)
class Gate:
    """Limits an artifact must meet; None = not checked. Agreement/accuracy are fractions."""

    max_abs: float | None = None
    mean_abs: float | None = None
    min_agreement: float | None = None
    min_cosine: float | None = None
    min_snr_db: float | None = None
    max_accuracy_drop: float | None = None  # vs the PyTorch reference, when labels exist
    # embeddings (optkit.verification.output_kinds): cosine of each sample's vector with its reference
    min_sample_cosine: float | None = None   # the worst sample
    min_mean_cosine: float | None = None     # the mean over samples
    max_eer_increase: float | None = None    # EER of same/different-label trials, when labels exist

    def applied(self, kind: str = "probability") -> dict[str, float]:
        """The limits that are set and mean something for an output of ``kind``."""
        from optkit.verification.output_kinds import KIND_LIMITS

        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k in KIND_LIMITS[kind]}

    def check(self, metrics: dict[str, Any], accuracy_drop: float | None, kind: str = "probability") -> list[str]:
        """Failures of one output's figures (``output_kinds.kind_metrics``) against the limits that
        apply to its ``kind`` (``output_kinds.KIND_LIMITS``)."""
        on = self.applied(kind)
        failures = []
        if not metrics.get("finite", True):
            failures.append("outputs contain NaN/Inf")
        if "max_abs" in on and not metrics["max_abs"] <= on["max_abs"]:
            failures.append(f"max |diff| {metrics['max_abs']:.3g} > {on['max_abs']:g}")
        if "mean_abs" in on and not metrics["mean_abs"] <= on["mean_abs"]:
            failures.append(f"mean |diff| {metrics['mean_abs']:.3g} > {on['mean_abs']:g}")
        if "min_agreement" in on and not metrics["agreement"] >= on["min_agreement"]:
            failures.append(
                f"decision agreement {metrics['agreement']:.2%} < {on['min_agreement']:.2%} "
                f"({metrics['flipped']} flipped)")
        if "min_cosine" in on and not metrics["cosine"] >= on["min_cosine"]:
            failures.append(f"cosine {metrics['cosine']:.6f} < {on['min_cosine']:g}")
        if "min_snr_db" in on and not metrics["snr_db"] >= on["min_snr_db"]:
            failures.append(f"SNR {metrics['snr_db']:.1f} dB < {on['min_snr_db']:g} dB")
        if "min_sample_cosine" in on and not metrics["sample_cosine_min"] >= on["min_sample_cosine"]:
            failures.append(f"worst per-sample cosine {metrics['sample_cosine_min']:.6f} < {on['min_sample_cosine']:g}")
        if "min_mean_cosine" in on and not metrics["sample_cosine_mean"] >= on["min_mean_cosine"]:
            failures.append(f"mean per-sample cosine {metrics['sample_cosine_mean']:.6f} < {on['min_mean_cosine']:g}")
        rise = metrics.get("eer_increase")
        if "max_eer_increase" in on and rise is not None and not rise <= on["max_eer_increase"]:
            failures.append(f"trial EER up {rise * 100:.2f} points > {on['max_eer_increase'] * 100:.2f}")
        if "max_accuracy_drop" in on and accuracy_drop is not None and not accuracy_drop <= on["max_accuracy_drop"]:
            failures.append(f"accuracy drop {accuracy_drop * 100:.2f} points > {on['max_accuracy_drop'] * 100:.2f}")
        return failures


# Each kind of output is checked against the limits that apply to it (output_kinds.KIND_LIMITS):
# probabilities, logits, frame scores and other outputs by |diff| and decisions, embeddings by cosine.
DEFAULT_GATES: dict[str, Gate] = {
    "fp32": Gate(max_abs=1e-4, min_sample_cosine=0.99999),
    "fp16": Gate(max_abs=1e-2, min_agreement=0.999, min_sample_cosine=0.999),
    "int8": Gate(mean_abs=1e-2, min_agreement=0.995, max_accuracy_drop=0.005,
                 min_sample_cosine=0.95, min_mean_cosine=0.99, max_eer_increase=0.005),
}
GATE_KEYS = tuple(f.name for f in dataclasses.fields(Gate))


def merge_gates(overrides: dict[str, dict[str, Any]] | None, where: str = "gates") -> dict[str, Gate]:
    """Default gates with overrides like {"int8": {"min_agreement": 0.99}} applied."""
    gates = dict(DEFAULT_GATES)
    for precision, values in (overrides or {}).items():
        if precision not in gates:
            raise RecipeError(f"{where}: unknown precision {precision!r}; use {', '.join(gates)}")
        if not isinstance(values, dict):
            raise RecipeError(f"{where}.{precision}: expected a mapping of limits")
        unknown = sorted(set(values) - set(GATE_KEYS))
        if unknown:
            raise RecipeError(f"{where}.{precision}: unknown limit {', '.join(unknown)}; known: {', '.join(GATE_KEYS)}")
        clean = {}
        for k, v in values.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise RecipeError(f"{where}.{precision}.{k}: expected a number or null, got {v!r}")
            clean[k] = None if v is None else float(v)
            if v is not None:
                check_gate_value(k, clean[k], f"{where}.{precision}.{k}")
        gates[precision] = dataclasses.replace(gates[precision], **clean)
    return gates


def output_gates(per_output: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]] | None = None,
                 where: str = "outputs.{name}.gates") -> dict[str, dict[str, Gate]]:
    """Each output's own gates {name: {precision: Gate}}: the defaults, then ``base`` (the
    command's or recipe's gate overrides), then that output's limits; only the precisions the
    output sets (the others use the common gate). Recipes' ``verify.outputs`` and ``--output-gate``
    (``where``: a template with ``{name}`` for the errors)."""
    gates: dict[str, dict[str, Gate]] = {}
    for name, g in per_output.items():
        merged = {p: {**((base or {}).get(p) or {}), **(v or {})} for p, v in g.items()}
        gates[name] = {p: gate for p, gate in merge_gates(merged, where=where.format(name=name)).items()
                       if p in merged}
    return gates


# The range of each limit: errors and drops are >= 0, agreement is a share, cosine a cosine.
GATE_RANGES: dict[str, tuple[float, float]] = {
    "max_abs": (0.0, math.inf), "mean_abs": (0.0, math.inf), "min_agreement": (0.0, 1.0),
    "min_cosine": (-1.0, 1.0), "min_snr_db": (-math.inf, math.inf), "max_accuracy_drop": (0.0, 1.0),
    "min_sample_cosine": (-1.0, 1.0), "min_mean_cosine": (-1.0, 1.0), "max_eer_increase": (0.0, 1.0),
}


def check_gate_value(limit: str, value: float, where: str) -> None:
    """A gate limit is finite and in its range: a NaN limit passes or fails everything silently."""
    lo, hi = GATE_RANGES.get(limit, (-math.inf, math.inf))
    if not math.isfinite(value):
        raise RecipeError(f"{where}: {value} is not a finite number (use 'off' to disable a limit)")
    if not lo <= value <= hi:
        shown = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f"at least {lo:g}"
        raise RecipeError(f"{where}: {value:g} is out of range; it must be {shown}"
                          + (" (a share: 0.99 = 99 %)" if hi == 1.0 else ""))


def parse_gate_option(values: Sequence[str]) -> dict[str, dict[str, Any]]:
    """CLI ``--gate int8.min_agreement=0.99`` (repeatable) -> overrides dict."""
    out: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        precision, dot, limit = key.partition(".")
        if not sep or not dot:
            raise InputError(f"--gate {item!r}: expected PRECISION.LIMIT=VALUE, e.g. int8.min_agreement=0.99")
        try:
            value: float | None = None if raw.lower() in ("none", "null", "off") else float(raw)
        except ValueError:
            raise InputError(f"--gate {item!r}: {raw!r} is not a number (or 'off')") from None
        out.setdefault(precision.strip(), {})[limit.strip()] = value
    return out


@dataclass
class ArtifactResult:
    path: str
    precision: str
    runner: dict[str, Any]
    gate: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    task: dict[str, Any] | None
    accuracy_drop: float | None
    failures: list[str]
    seconds: float
    localization: dict[str, Any] | None = None
    # how the artifact's data was treated when it was made (e.g. calibration outliers clipped)
    data_decisions: dict[str, Any] = field(default_factory=dict)
    # True when the result was taken from the verification cache (same artifact, reference,
    # runtime versions and gates as a run that computed it)
    cached: bool = False
    # a mixed-length reference: the gate per length bucket (optkit.verification.lengths)
    per_length: dict[str, Any] | None = None
    # raw outputs of the first output, kept for the plots of the human report (not in JSON)
    values: np.ndarray | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    def applied_gate(self) -> dict[str, float]:
        """The limits of ``gate`` that applied to this result's outputs (by their kinds)."""
        from optkit.verification.output_kinds import KIND_LIMITS

        kinds = {m.get("kind") or "probability" for m in self.outputs.values()} or {"probability"}
        applied = {lim for k in kinds for lim in KIND_LIMITS.get(k, ())}
        return {k: v for k, v in self.gate.items() if v is not None and k in applied}

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "values"}
        d["passed"] = self.passed
        return d


@dataclass
class VerifyReport:
    reference: dict[str, Any]
    threshold: float
    provider: str
    results: list[ArtifactResult]
    created: str = field(default_factory=now_iso)
    versions: dict[str, str] = field(default_factory=lambda: tool_versions("onnx", "onnxruntime", "openvino", "torch"))
    reference_task: dict[str, Any] | None = None
    # steps of a recipe that did not produce an artifact, with the reason (never "passed")
    skipped: list[dict[str, Any]] = field(default_factory=list)
    reference_values: np.ndarray | None = field(default=None, repr=False)
    # each sample's length of a mixed-length reference (None: fixed length); not in JSON
    sample_lengths: np.ndarray | None = field(default=None, repr=False)
    # how the outputs were computed: {"engine": "local"} or the Ray cluster's size
    execution: dict[str, Any] = field(default_factory=lambda: {"engine": "local"})
    # the release view (optkit.release.view.enrich: artifact facts, latency, groups; optkit.release.regression:
    # the comparison with a previous release), empty when not asked for
    release: dict[str, Any] = field(default_factory=dict)
    # what each output is and how it was judged: {name: {kind, why, source}} (output_kinds)
    output_kinds: dict[str, Any] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def passed(self) -> bool:
        """Every gate passed and, when compared with a baseline release, no regression."""
        regression = self.release.get("regression") or {}
        return self.gates_passed and regression.get("passed", True)

    def to_json(self) -> dict[str, Any]:
        from optkit.verification.task_metrics import json_safe

        return json_safe({
            "passed": self.passed,
            "created": self.created,
            "threshold": self.threshold,
            "provider": self.provider,
            "reference": self.reference,
            "reference_task": self.reference_task,
            "output_kinds": self.output_kinds,
            "versions": self.versions,
            "artifacts": [r.to_json() for r in self.results],
            "skipped": self.skipped,
            "execution": self.execution,
        })


def precision_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from optkit.model.artifact import guess_precision

        return guess_precision(path)
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        import json

        try:
            return str(json.loads(sidecar.read_text()).get("precision", "fp32"))
        except ValueError:
            pass
    return "fp32"


def check_artifact_graph(path: Path) -> None:
    """onnx.checker on an artifact before it is run: ONNX Runtime accepts graphs that are not
    valid ONNX (e.g. nodes out of topological order) and would let them PASS, while other tools
    (onnxsim, TensorRT's parser, other runtimes) reject them."""
    from optkit.model.onnx_utils import check_model

    try:
        check_model(path, full=False, what=f"artifact {path.name}")
    except OptkitError as exc:
        raise InputError(f"{path}: not a valid ONNX model ({exc})") from exc


def check_reference_fits(path: Path, reference: Reference, where: str) -> None:
    """The reference's outputs are outputs of the model, with the model's fixed per-sample shape: a
    reference made for another model is an input error (exit 1), not a failed gate (exit 3)."""
    from optkit.model.onnx_utils import io_specs, load_onnx

    _, outs = io_specs(load_onnx(path, load_weights=False))
    shapes = {o.name: o.shape for o in outs}
    for name, arr in reference.outputs.items():
        if name not in shapes:
            raise InputError(f"{where}: output {name!r} is not an output of {path.name} (its outputs: "
                             f"{', '.join(shapes) or 'none'}); was the reference made for another model?")
        dims, got = shapes[name], np.shape(arr)
        if len(dims) == len(got) and any(isinstance(d, int) and d > 0 and d != g
                                          for d, g in zip(dims[1:], got[1:])):
            raise InputError(f"{where}: output {name!r} has per-sample shape {tuple(got[1:])}, but {path.name} "
                             f"gives {tuple(dims[1:])}; was the reference made for another model?")


def run_artifact(runner: Any, reference: Reference, batch_size: int) -> dict[str, np.ndarray]:
    """Run a runner over all reference inputs in batches; returns outputs by name."""
    from optkit.model.feeds import reference_batches

    if getattr(reference, "mixed_length", False):
        from optkit.verification.lengths import run_by_length

        return run_by_length(runner, reference, batch_size)
    label = getattr(runner, "label", runner.path.name)
    chunks: dict[str, list[np.ndarray]] = {}
    for feed, take in reference_batches(runner.inputs, reference.inputs, batch_size, label):
        for k, v in runner.infer(feed).items():
            chunks.setdefault(k, []).append(np.asarray(v)[:take])
    return {k: np.concatenate(v, axis=0) for k, v in chunks.items()}


def verify_artifacts(
    artifacts: Sequence[Path | str | Artifact],
    reference: Reference,
    *,
    reference_path: str = "",
    provider: str = "cpu",
    threshold: float = DECISION_THRESHOLD,
    gates: dict[str, Gate] | None = None,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
    localize: str = "on-failure",
    fp32_model: Path | None = None,
    localize_samples: int = 8,
    progress: Any = None,
    executor: Any = None,
    cache_dir: Path | None = None,
    output_kinds: dict[str, Any] | None = None,
    output_gates: dict[str, dict[str, Gate]] | None = None,
) -> VerifyReport:
    """Verify each artifact against the reference; never raises for a failing gate.

    With ``cache_dir``, a result is stored under a key of everything it depends on (see
    :func:`verification_key`) and reused while that key is unchanged.

    ``executor`` computes the outputs: :class:`LocalExecutor` (default, this process) or
    :class:`optkit.pipeline.distributed.RayExecutor` (shards on a Ray cluster); the metrics and gates are
    computed here on the gathered outputs either way, so the report is the same.

    ``output_kinds``: {output: OutputKind} (:func:`optkit.verification.output_kinds.detect_kinds`), else detected from the
    reference (and ``fp32_model``'s graph); each output is judged by what means something for its
    kind. ``output_gates``: per-output gates by precision, instead of ``gates`` for that output.
    """
    gates = gates or dict(DEFAULT_GATES)
    executor = executor or LocalExecutor()
    if localize not in ("on-failure", "always", "never"):
        raise InputError(f"localize must be on-failure, always or never, not {localize!r}")
    from optkit.verification.reference import validate_reference

    validate_reference(reference, reference_path or "reference")
    from optkit.verification.lengths import bucket_failures, bucket_results, length_summary, sample_lengths

    lengths = sample_lengths(reference)
    if lengths is not None and not isinstance(executor, LocalExecutor):
        raise InputError("a mixed-length reference is verified in this process only (no --ray yet)")
    first_out = next(iter(reference.outputs))
    kinds = output_kinds or detect_kinds(reference.outputs, fp32_model)
    # a value outside [0, 1] in an output taken for a probability (by override): say so
    for note in score_warnings({n: v for n, v in reference.outputs.items() if kinds[n].kind == "probability"},
                               threshold):
        if progress:
            progress(f"WARNING: {note}")
    if progress and output_kinds is None:  # given kinds were said by whoever resolved them
        for k in kinds.values():
            progress(k.line(threshold, reference.labels is not None))
    ref_task = reference_task(reference.outputs, kinds, reference.labels, threshold)
    results: list[ArtifactResult] = []
    for item in artifacts:
        path = Path(item.path if isinstance(item, Artifact) else item)
        precision = item.precision if isinstance(item, Artifact) else precision_of(path)
        if progress:
            progress(f"verifying {path.name} ({precision}) on {len(reference)} samples")
        gate = gates.get(precision, gates["fp32"])
        if path.suffix.lower() == ".onnx":
            check_artifact_graph(path)
            check_reference_fits(path, reference, reference_path or "reference")
        key = None
        if cache_dir is not None and reference.sha256:
            key = verification_key(item, path, reference.sha256, provider, threads, batch_size, threshold, gate,
                                   localize, localize_samples, fp32_model,
                                   {n: [k.kind, dataclasses.asdict((output_gates or {}).get(n, {}).get(precision, gate))]
                                    for n, k in kinds.items()})
            hit = _load_cached(cache_dir, key)
            if hit is not None:
                if progress:
                    progress(f"{path.name}: cached result (artifact, reference, runtime and gates unchanged)")
                results.append(hit)
                continue
        t0 = time.perf_counter()
        outs, runner_info = executor.outputs(path, provider, threads, reference, batch_size)
        seconds = time.perf_counter() - t0
        judged = judge_outputs(reference.outputs, outs, kinds, gate, threshold, reference.labels,
                               ref_task["accuracy"] if ref_task else None,
                               {n: g[precision] for n, g in (output_gates or {}).items() if precision in g})
        failures = list(judged.failures)
        per_length = None
        if lengths is not None and judged.outputs:
            buckets = bucket_results(reference.outputs, outs, reference.labels, lengths, gate, threshold)
            failures += bucket_failures(buckets)
            per_length = {"time_axis": int(reference.meta.get("time_axis", -1)), "buckets": buckets}
        result = ArtifactResult(
            path=str(path), precision=precision, runner=runner_info, gate=dataclasses.asdict(gate),
            outputs=judged.outputs, task=judged.task, accuracy_drop=judged.accuracy_drop, failures=failures,
            seconds=seconds,
            values=outs.get(first_out), per_length=per_length,
            data_decisions={k: v for k, v in (item.extra if isinstance(item, Artifact) else {}).items()
                            if k == "calibration_outliers" and v.get("action") != "none"},
        )
        want_loc = precision == "int8" and path.suffix == ".onnx" and (
            localize == "always" or (localize == "on-failure" and judged.failures))
        if want_loc:
            result.localization = _localize(fp32_model, path, reference, localize_samples)
        if key is not None:
            _store_cached(cache_dir, key, result)
        results.append(result)
    ref_info = {"path": reference_path, "sha256": reference.sha256, "samples": len(reference), "labels": reference.labels is not None,
                "outputs": list(reference.outputs), "meta": reference.meta,
                "identity": reference.identity()}
    if lengths is not None:
        ref_info["lengths"] = length_summary(lengths)
    report = VerifyReport(ref_info, threshold, provider, results, reference_task=ref_task,
                          reference_values=reference.outputs[first_out], sample_lengths=lengths,
                          output_kinds={n: k.to_json() for n, k in kinds.items()})
    report.execution = executor.describe()
    return report


@dataclass
class Judgement:
    """The verdict on one set of outputs against their reference (see :func:`judge_outputs`)."""

    outputs: dict[str, dict[str, Any]]  # per output: output_kinds.kind_metrics
    task: dict[str, Any] | None         # task metrics of the decision output, when labels exist
    accuracy_drop: float | None
    failures: list[str]


def task_output(kinds: dict[str, Any]) -> str | None:
    """The output task metrics are taken on: the first with one decision per sample."""
    from optkit.verification.output_kinds import DECISION_KINDS

    return next((n for n, k in kinds.items() if k.kind in DECISION_KINDS), None)


def reference_task(outputs: dict[str, np.ndarray], kinds: dict[str, Any], labels: np.ndarray | None,
                   threshold: float) -> dict[str, Any] | None:
    """Task metrics (accuracy, EER, ...) of the reference's decision output, when labels exist."""
    from optkit.verification.output_kinds import decision_scores

    name = task_output(kinds)
    if labels is None or name is None:
        return None
    return task_metrics(decision_scores(kinds[name].kind, outputs[name], threshold), labels, threshold)


def judge_outputs(reference: dict[str, np.ndarray], outs: dict[str, np.ndarray], kinds: dict[str, Any], gate: Gate,
                  threshold: float, labels: np.ndarray | None = None, reference_accuracy: float | None = None,
                  output_gates: dict[str, Gate] | None = None) -> Judgement:
    """Judge ``outs`` against ``reference``: every output by what means something for its kind
    (:mod:`optkit.verification.output_kinds`) and the gate (``output_gates``: per output, instead of
    ``gate``); task metrics on the decision output when labels exist. verify and the int8 search's
    validation both judge here."""
    from optkit.verification.output_kinds import decision_scores, kind_metrics

    failures = output_problems(reference, outs)
    per_output = {name: kind_metrics(kinds[name].kind, ref_val, outs[name], threshold, labels)
                  for name, ref_val in reference.items() if name in outs and outs[name].shape == ref_val.shape}
    task = drop = None
    decider = task_output(kinds)
    if labels is not None and decider in per_output:
        task = task_metrics(decision_scores(kinds[decider].kind, outs[decider], threshold), labels, threshold)
        drop = None if reference_accuracy is None else reference_accuracy - task["accuracy"]
    for name, m in per_output.items():
        g = (output_gates or {}).get(name, gate)
        if name in (output_gates or {}):  # the report says which limits judged this output
            m["output_gate"] = g.applied(kinds[name].kind)
        failures += [f"{name}: {f}" if len(per_output) > 1 else f
                     for f in g.check(m, drop if name == decider else None, kinds[name].kind)]
    return Judgement(per_output, task, drop, failures)


def score_warnings(outputs: dict[str, np.ndarray], threshold: float) -> list[str]:
    """Why the decision metrics may not mean what they say: reference outputs outside [0, 1] are
    not probabilities (logits, most likely), yet agreement is judged at ``threshold`` and the fp16/int8
    gates bound |Δp| as if they were. Silent when ``threshold`` is outside (0, 1): set for scores."""
    notes: list[str] = []
    if not 0.0 < threshold < 1.0:  # a threshold no probability can straddle: the user decides on scores
        return notes
    for name, values in outputs.items():
        v = np.asarray(values, np.float64)
        if v.size and np.isfinite(v).all() and (v.min() < 0.0 or v.max() > 1.0):
            notes.append(f"reference output {name} ranges over [{v.min():.4g}, {v.max():.4g}], outside [0, 1]: not "
                         f"probabilities, yet decisions are taken at threshold {threshold:g} and the |Δp| gates read "
                         "them as probabilities; for logits, decide at threshold 0 (--threshold 0, or threshold: 0 under "
                         "a recipe's verify:) and set the gates with --gate (gates:)")
    return notes


class LocalExecutor:
    """Runs an artifact in this process: one runner over all reference inputs."""

    def describe(self) -> dict[str, Any]:
        return {"engine": "local"}

    def outputs(self, path: Path, provider: str, threads: int | None, reference: Reference,
                batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        from optkit.runtime.registry import make_runner

        with make_runner(path, provider=provider, threads=threads) as runner:
            return run_artifact(runner, reference, batch_size), runner.describe()


def verify_on_providers(artifacts: Sequence[Path | str | Artifact], reference: Reference,
                        providers: Sequence[str], progress: Any = None, **options: Any) -> VerifyReport:
    """:func:`verify_artifacts` on each provider in turn, as one report. An .engine runs on
    TensorRT whatever the provider (``runners.registry``): it is verified once, with the first."""
    from optkit.runtime.registry import is_engine

    report = None
    for i, provider in enumerate(providers):
        items = list(artifacts) if i == 0 else [a for a in artifacts
                                                 if not is_engine(a.path if isinstance(a, Artifact) else a)]
        part = verify_artifacts(items, reference, provider=provider,
                                progress=(lambda m, p=provider: progress(p, m)) if progress else None, **options)
        if report is None:
            report = part
        else:
            report.results.extend(part.results)
    if report is None:
        raise InputError("no provider to verify on")
    report.provider = ",".join(providers)
    return report


def verification_key(item: Any, path: Path, reference_sha256: str, provider: str, threads: int | None,
                     batch_size: int, threshold: float, gate: Gate, localize: str, localize_samples: int,
                     fp32_model: Path | None, outputs: dict[str, Any] | None = None) -> str:
    """Hash of everything a verification result depends on: the artifact's and the reference's
    sha256, the runner (provider, the versions of its runtime, threads, batch), the threshold and
    gate, and the localisation settings with the fp32 model's sha256."""
    import hashlib
    import json

    from optkit.model.artifact import artifact_sha256
    from optkit.runtime.registry import runtime_versions

    payload = {
        "artifact": item.sha256 if isinstance(item, Artifact) else artifact_sha256(path),
        "reference": reference_sha256,
        "provider": provider,
        "runtime": runtime_versions(path, provider),
        "threads": threads, "batch_size": batch_size, "threshold": threshold,
        "gate": dataclasses.asdict(gate),
        "localize": [localize, localize_samples, artifact_sha256(fp32_model) if fp32_model else None],
        "outputs": outputs,  # each output's kind and gate
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_cached(cache_dir: Path, key: str) -> ArtifactResult | None:
    import json

    path = Path(cache_dir) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            fields = json.loads(str(z["result"]))
            values = z["values"] if "values" in z.files else None
    except (OSError, ValueError, KeyError):
        return None  # absent or unreadable: verify again
    fields.pop("passed", None)
    fields["cached"] = True
    try:
        return ArtifactResult(**fields, values=values)
    except TypeError:  # written by another optkit version
        return None


def _store_cached(cache_dir: Path, key: str, result: ArtifactResult) -> None:
    import io
    import json

    from optkit.common.fileio import write_bytes_atomically

    # Python's json keeps inf/NaN (SNR of an exact match is inf) as Infinity/NaN and reads them back
    text = json.dumps(result.to_json(), default=lambda o: o.item() if hasattr(o, "item") else str(o))
    arrays = {"result": np.array(text)}
    if result.values is not None:
        arrays["values"] = result.values
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(Path(cache_dir) / f"{key}.npz", buf.getvalue())


def _localize(fp32_model: Path | None, quant_model: Path, reference: Reference, n: int) -> dict[str, Any]:
    if fp32_model is None:
        return {"error": "no fp32 model to compare with; pass --fp32-model (the model the int8 one was made from)"}
    try:
        from optkit.verification.localize import localize_error

        from optkit.verification.lengths import stacked_group

        inputs = stacked_group(reference.inputs, n)  # mixed lengths: n samples of one length
        layers = localize_error(Path(fp32_model), quant_model, inputs)
    except OptkitError as exc:
        return {"error": str(exc)}
    except ImportError as exc:
        return {"error": f"error localisation is unavailable: {exc}"}
    return {"fp32_model": str(fp32_model), "samples": n, "layers": layers}
