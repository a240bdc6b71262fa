"""Regression against the last release: compare each artifact with its counterpart in a
previous ``report.json`` on the same reference set, and gate on what changed.

How artifacts are matched to counterparts (first rule that applies, on the same runtime, i.e.
the same ``--provider``; each baseline artifact is used at most once per runtime):

1. the same recipe step name (read from the ``manifest.json`` beside the artifact), e.g. ``int8``;
2. the same file name;
3. among those still unmatched, the only artifact of that precision on that runtime, on both sides.

Anything else is listed as "new" (no counterpart: not gated) or "not in this release".

What is compared per pair: decisions that changed between the two releases (each release's
scores at its own threshold), the metric deltas (agreement with PyTorch, errors, accuracy, EER,
FAR, FRR) and, when both were benchmarked, the latency change. Default gate: at most 0.2 % of
samples change decision and accuracy drops by at most 0.2 points; latency limits are opt-in.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optkit.common.errors import InputError, RecipeError


@dataclass(frozen=True)
class RegressionLimits:
    """What may get worse against the baseline; None = not checked. Fractions (0.002 = 0.2 %)."""

    decision_changes: float | None = 0.002  # share of samples whose decision changed
    accuracy_drop: float | None = 0.002     # task accuracy drop (0.002 = 0.2 points)
    p50_latency: float | None = None        # allowed p50 latency increase (0.10 = +10 %)
    min_latency: float | None = None        # allowed minimum latency increase

    def describe(self) -> str:
        parts = []
        for k, v in dataclasses.asdict(self).items():
            if v is not None:
                if k == "accuracy_drop":
                    parts.append(f"accuracy drop <= {v * 100:g} points")
                elif k == "decision_changes":
                    parts.append(f"decisions changed <= {v * 100:g}% of samples")
                else:
                    parts.append(f"{k.replace('_', ' ')} increase <= {v * 100:g}%")
        return ", ".join(parts) or "nothing (all limits off)"


MATCHING_RULES = (
    "Each artifact is compared with the baseline artifact on the same runtime that has, in this order: "
    "the same recipe step name (from the manifest.json beside it); the same file name; or, failing both, "
    "the same precision when, among the artifacts still unmatched, it is the only one of that precision on that "
    "runtime on both sides. Artifacts without a counterpart are listed as new and not gated.")

LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(RegressionLimits))


def _parse_fraction(raw: Any, where: str) -> float | None:
    """'0.2%' -> 0.002, '0.002' -> 0.002, 'off'/None -> None."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("off", "none", "null")):
        return None
    if isinstance(raw, bool):
        raise InputError(f"{where}: expected a number like 0.2% or 0.002, got {raw!r}")
    text = str(raw).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InputError(f"{where}: {raw!r} is not a number like 0.2% or 0.002 (or 'off')") from None
    if not value >= 0:
        raise InputError(f"{where}: {raw!r} must be 0 or more")
    return value


def make_limits(values: dict[str, Any] | None, where: str = "max_regression") -> RegressionLimits:
    """Defaults with overrides like {"decision_changes": "0.5%", "p50_latency": "10%"}."""
    values = values or {}
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping like {{decision_changes: 0.5%, p50_latency: 10%}}")
    unknown = sorted(set(values) - set(LIMIT_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown limit {unknown[0]!r}; known: {', '.join(LIMIT_KEYS)}")
    return dataclasses.replace(RegressionLimits(), **{k: _parse_fraction(v, f"{where}.{k}") for k, v in values.items()})


def parse_max_regression(items: Sequence[str]) -> dict[str, str]:
    """CLI ``--max-regression decision_changes=0.5%`` (repeatable) -> overrides dict."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise InputError(f"--max-regression {item!r}: expected LIMIT=VALUE, e.g. p50_latency=10% "
                             f"(limits: {', '.join(LIMIT_KEYS)})")
        out[key.strip()] = raw.strip()
    return out


def load_baseline(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """A previous release's report.json, given as the file or the output directory holding it."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"baseline {path}: no report.json there (give a previous report.json or output directory)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise InputError(f"baseline {p} is not a readable report.json (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"baseline {p} is not a readable report.json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("artifacts"), list):
        raise InputError(f"baseline {p} is not an optkit report.json (no artifacts list)")
    ident = (data.get("reference") or {}).get("identity") if isinstance(data.get("reference"), dict) else None
    if not ident or not all(isinstance(a, dict) and "scores" in a for a in data["artifacts"]):
        raise InputError(f"baseline {p} has no reference identity or per-sample scores (written by an older "
                         "optkit); verify that release again to make a baseline")
    check_baseline_schema(data, p)
    return p, data


def _no_constant(name: str) -> Any:
    # optkit writes non-finite numbers as null; NaN/Infinity in a report.json were put there by hand
    raise ValueError(f"{name} is not a number a report.json holds")


# The parts of a report.json that the regression gate reads (everything else is only shown).
BASELINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["artifacts", "reference", "threshold"],
    "properties": {
        "threshold": {"type": "number"},
        "reference": {"type": "object", "required": ["identity"], "properties": {"identity": {
            "type": "object", "required": ["inputs_sha256", "samples"],
            "properties": {"inputs_sha256": {"type": "string"}, "samples": {"type": "integer", "minimum": 1},
                           "labels_sha256": {"type": ["string", "null"]}}}}},
        "artifacts": {"type": "array", "items": {
            "type": "object", "required": ["path", "precision", "runner", "scores"],
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "precision": {"type": "string"},
                "runner": {"type": "object"},
                "step": {"type": ["string", "null"]},
                "sha256": {"type": ["string", "null"]},
                "scores": {"type": "array", "minItems": 1, "items": {"type": ["number", "null"]}},
                "outputs": {"type": "object", "additionalProperties": {"type": "object"}},
                "task": {"type": ["object", "null"], "properties": {
                    k: {"type": ["number", "null"]} for k in ("accuracy", "eer", "far", "frr")}},
                "latency": {"type": ["object", "null"], "properties": {
                    k: {"type": ["number", "null"], "exclusiveMinimum": 0} for k in ("min_ms", "p50_ms")}},
            }}},
    },
}


def check_baseline_schema(data: dict[str, Any], p: Path) -> None:
    """A baseline is schema-checked like a reference: one line naming the first bad field."""
    from optkit.common.lazy import lazy_import

    jsonschema = lazy_import("jsonschema", extra="core")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(BASELINE_SCHEMA).iter_errors(data))
    if error is not None:
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in error.absolute_path).lstrip(".")
        raise InputError(f"baseline {p} is not a valid report.json: {where or 'top level'}: {error.message[:200]}")
    samples = data["reference"]["identity"]["samples"]
    labelled = data["reference"]["identity"].get("labels_sha256") is not None
    for i, a in enumerate(data["artifacts"]):
        if len(a["scores"]) % samples:
            raise InputError(f"baseline {p}: artifacts[{i}] has {len(a['scores'])} scores for {samples} reference "
                             "samples; the file is truncated or edited")
        if labelled and not isinstance((a.get("task") or {}).get("accuracy"), (int, float)):
            raise InputError(f"baseline {p}: artifacts[{i}] has no task accuracy although its reference is labelled")


def check_same_reference(current: dict[str, Any], baseline: dict[str, Any], where: str) -> None:
    """Refuse (one line) when the two reports were verified on different reference sets."""
    a, b = current.get("identity") or {}, baseline.get("identity") or {}
    if a.get("inputs_sha256") != b.get("inputs_sha256") or a.get("samples") != b.get("samples"):
        raise InputError(
            f"baseline {where} was verified on a different reference set ({b.get('samples')} samples, inputs "
            f"sha256 {str(b.get('inputs_sha256'))[:12]}) than this one ({a.get('samples')} samples, "
            f"{str(a.get('inputs_sha256'))[:12]}); releases can only be compared on the same reference")
    if a.get("labels_sha256") != b.get("labels_sha256"):
        raise InputError(f"baseline {where} has different labels for the same reference inputs "
                         f"({str(b.get('labels_sha256'))[:12]} vs {str(a.get('labels_sha256'))[:12]})")


def _provider(runner: dict[str, Any]) -> str:
    from optkit.runtime.labels import provider_of

    return provider_of(runner)


def match_counterparts(current: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> list[tuple[int | None, str]]:
    """For each current artifact entry (with runner, step, path, precision): the index of its
    baseline counterpart (or None) and the rule that matched."""
    used: set[int] = set()
    out: list[tuple[int | None, str]] = [(None, "") for _ in current]

    def by(rule: str, same: Any) -> None:
        for i, c in enumerate(current):
            if out[i][0] is not None:
                continue
            cands = [j for j, b in enumerate(baseline) if j not in used
                     and _provider(b["runner"]) == _provider(c["runner"]) and same(c, b)]
            if len(cands) == 1 or (cands and rule != "precision"):
                out[i] = (cands[0], rule)
                used.add(cands[0])

    by("step name", lambda c, b: c.get("step") and c.get("step") == b.get("step"))
    by("file name", lambda c, b: Path(c["path"]).name == Path(b["path"]).name)

    def only_precision(c: dict[str, Any], b: dict[str, Any]) -> bool:
        if b["precision"] != c["precision"]:
            return False
        same_here = [x for k, x in enumerate(current) if out[k][0] is None
                     and x["precision"] == c["precision"] and _provider(x["runner"]) == _provider(c["runner"])]
        return len(same_here) == 1

    by("precision", only_precision)
    return [(j, f"only {current[i]['precision']} artifact on this runtime" if rule == "precision" else rule)
            for i, (j, rule) in enumerate(out)]


DELTA_OUTPUT_KEYS = ("agreement", "flipped", "mean_abs", "max_abs", "cosine", "snr_db")
DELTA_TASK_KEYS = ("accuracy", "eer", "eer_threshold", "far", "frr")


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def compare_with_baseline(report: Any, baseline: dict[str, Any], baseline_path: str, limits: RegressionLimits) -> dict[str, Any]:
    """The comparison of ``report`` (a VerifyReport with ``release`` filled) with ``baseline``."""
    from optkit.runtime.labels import runtime_label
    from optkit.verification.taskview import flipped_samples

    check_same_reference(report.reference, baseline.get("reference") or {}, baseline_path)
    rel = report.release
    current = [{"runner": r.runner, "path": r.path, "precision": r.precision,
                "step": (rel.get("results") or [{}] * len(report.results))[i].get("step")}
               for i, r in enumerate(report.results)]
    base_arts = baseline["artifacts"]
    matches = match_counterparts(current, base_arts)
    if report.results and all(j is None for j, _ in matches):
        raise InputError(f"baseline {baseline_path}: no artifact here has a counterpart there (same step name, "
                         "file name, or only artifact of its precision on the same runtime)")
    labels = rel.get("reference_labels")
    thr_new, thr_old = float(report.threshold), float(baseline.get("threshold", report.threshold))
    first_out = report.reference.get("outputs", [None])[0]
    latency_new = (rel.get("bench") or {}).get("per_result")
    pairs = []
    for i, (r, (j, rule)) in enumerate(zip(report.results, matches)):
        entry: dict[str, Any] = {"result": i, "artifact": Path(r.path).name, "runtime": runtime_label(r.runner),
                                 "precision": r.precision}
        if j is None:
            entry.update(status="new", note="no counterpart in the baseline: not compared")
            pairs.append(entry)
            continue
        b = base_arts[j]
        entry.update(status="compared", matched_by=rule, baseline_artifact=Path(b["path"]).name,
                     baseline_sha256=b.get("sha256"))
        new_scores = np.asarray(r.values, dtype=np.float64).ravel() if r.values is not None else None
        old_scores = np.asarray([_num(v) if _num(v) is not None else np.nan for v in b["scores"]], dtype=np.float64)
        checks: list[dict[str, Any]] = []
        if new_scores is None or new_scores.shape != old_scores.shape:
            entry["changed"] = None
            checks.append({"gate": "decision_changes", "passed": False,
                           "message": "cannot compare decisions: no scores of the same length on both sides"})
        else:
            changed = flipped_samples(old_scores, new_scores, thr_new, labels, other_threshold=thr_old)
            if report.reference_values is not None:
                torch_scores = np.asarray(report.reference_values, dtype=np.float64).ravel()
                for c in changed:
                    c["pytorch_score"] = float(torch_scores[c["index"]])
            entry["changed"] = changed
            share = len(changed) / max(1, new_scores.size)
            entry["changed_share"] = share
            if limits.decision_changes is not None:
                ok = share <= limits.decision_changes
                checks.append({"gate": "decision_changes", "limit": limits.decision_changes, "value": share, "passed": ok,
                               "message": f"{len(changed)} of {new_scores.size} decisions changed ({share:.2%}; "
                                          f"limit {limits.decision_changes:.2%})"})
        # metric deltas (new - old)
        deltas: dict[str, Any] = {}
        new_m = r.outputs.get(first_out) or {}
        old_m = (b.get("outputs") or {}).get(first_out) or {}
        for k in DELTA_OUTPUT_KEYS:
            a, o = _num(new_m.get(k)), _num(old_m.get(k))
            if a is not None and o is not None:
                deltas[k] = {"baseline": o, "now": a, "delta": a - o}
        for k in DELTA_TASK_KEYS:
            a, o = _num((r.task or {}).get(k)), _num((b.get("task") or {}).get(k))
            if a is not None and o is not None:
                deltas[k] = {"baseline": o, "now": a, "delta": a - o}
        entry["deltas"] = deltas
        if limits.accuracy_drop is not None and "accuracy" in deltas:
            drop = -deltas["accuracy"]["delta"]
            checks.append({"gate": "accuracy_drop", "limit": limits.accuracy_drop, "value": drop,
                           "passed": drop <= limits.accuracy_drop + 1e-12,
                           "message": f"accuracy {deltas['accuracy']['baseline']:.2%} -> {deltas['accuracy']['now']:.2%} "
                                      f"({-drop * 100:+.2f} points; limit -{limits.accuracy_drop * 100:.2f})"})
        # latency
        new_lat = latency_new[i] if latency_new and i < len(latency_new) else None
        old_lat = b.get("latency")
        if new_lat and old_lat:
            entry["latency"] = {k: {"baseline": old_lat[k], "now": new_lat[k], "ratio": new_lat[k] / old_lat[k]}
                                for k in ("min_ms", "p50_ms") if old_lat.get(k) and new_lat.get(k)}
        for key, stat in (("p50_latency", "p50_ms"), ("min_latency", "min_ms")):
            limit = getattr(limits, key)
            if limit is None:
                continue
            lat = (entry.get("latency") or {}).get(stat)
            if lat is None:
                checks.append({"gate": key, "limit": limit, "passed": False,
                               "message": f"cannot check {stat[:-3]} latency: not measured in "
                                          f"{'this release' if not new_lat else 'the baseline'} (verify with --bench)"})
            else:
                ok = lat["ratio"] <= 1 + limit
                checks.append({"gate": key, "limit": limit, "value": lat["ratio"] - 1, "passed": ok,
                               "message": f"{stat[:-3]} latency {lat['baseline']:.2f} -> {lat['now']:.2f} ms "
                                          f"({(lat['ratio'] - 1) * 100:+.1f}%; limit +{limit * 100:g}%)"})
        entry["checks"] = checks
        entry["passed"] = all(c["passed"] for c in checks)
        pairs.append(entry)
    used = {j for j, _ in matches if j is not None}
    dropped = [{"artifact": Path(b["path"]).name, "runtime": runtime_label(b.get("runner") or {})}
               for j, b in enumerate(base_arts) if j not in used]
    cpu_new = ((rel.get("bench") or {}).get("run") or {}).get("environment", {}).get("cpu", {})
    cpu_old = (baseline.get("bench") or {}).get("environment", {}).get("cpu", {}) if isinstance(baseline.get("bench"), dict) else {}
    notes = []
    if thr_new != thr_old:
        notes.append(f"the operating threshold changed: {thr_old:g} in the baseline, {thr_new:g} now "
                     "(each release's decisions are taken at its own threshold)")
    if cpu_new and cpu_old and cpu_new.get("model") != cpu_old.get("model"):
        notes.append(f"latency was measured on different CPUs ({cpu_old.get('model')} then, {cpu_new.get('model')} now)")
    if any(p.get("latency") for p in pairs):
        notes.append("latency across releases comes from two separate runs: ratios within one run "
                     "(the speed-up columns) are fairer than this change")
    return {
        "baseline": baseline_path,
        "baseline_created": baseline.get("created"),
        "baseline_versions": baseline.get("versions"),
        "limits": dataclasses.asdict(limits),
        "limits_text": limits.describe(),
        "matching": MATCHING_RULES,
        "pairs": pairs,
        "not_in_this_release": dropped,
        "notes": notes,
        "passed": all(p.get("passed", True) for p in pairs),
    }


def failures(regression: dict[str, Any]) -> list[str]:
    """One line per failed regression check, for the terminal and the CI summary."""
    out = []
    for p in regression.get("pairs", []):
        for c in p.get("checks", []):
            if not c["passed"]:
                out.append(f"{p['artifact']} [{p['runtime']}] vs {p['baseline_artifact']}: {c['message']}")
    return out


def prepare_baseline(path: str | Path, reference: Any) -> tuple[str, dict[str, Any]]:
    """Load a baseline and check it was verified on ``reference`` (an optkit.verification.reference.Reference)
    before any work is done."""
    p, data = load_baseline(path)
    check_same_reference({"identity": reference.identity()}, data.get("reference") or {}, str(p))
    return str(p), data
