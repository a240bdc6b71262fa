"""What a reviewer signing off a release needs beyond "did each gate pass".

Per artifact: size, node count, the share of MACs per precision, its lineage (the passes and
parameters back to the PyTorch model, read from the ``manifest.json`` beside it), and, with
``bench``, its latency on each runtime it was verified on, measured in one interleaved run
(optkit.runtime.bench). Per result: the runtime and precision that actually ran, in words, and the
samples whose decision flipped. Identical results (same runtime, bit-identical outputs) are
grouped so the report shows them once.

:func:`enrich` fills ``VerifyReport.release`` with all of it; report.py renders it and
regression.py compares it with a previous release.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optkit.common.errors import InputError, OptkitError
from optkit.runtime.labels import provider_of, runtime_label, runtime_text

Progress = Callable[[str], None]


def compact_scores(values: np.ndarray | None) -> list[float] | None:
    """Per-sample scores for report.json: the shortest decimal that gives back the same float32,
    so decisions recomputed from the JSON are exactly the ones made here."""
    if values is None:
        return None
    flat = np.asarray(values, dtype=np.float32).ravel()
    return [float(np.format_float_positional(v, unique=True)) if np.isfinite(v) else float(v) for v in flat]


# -- lineage and facts -------------------------------------------------------------------------

def _manifest_entries(path: Path) -> dict[str, dict[str, Any]] | None:
    m = path.parent / "manifest.json"
    if not m.is_file():
        return None
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
        entries = data["artifacts"]
        return entries if isinstance(entries, dict) else None
    except (ValueError, KeyError, TypeError, OSError):
        return None


def _find_step(entries: dict[str, dict[str, Any]], sha: str) -> str | None:
    for step, entry in entries.items():
        art = entry.get("artifact") or {}
        if art.get("sha256") == sha:
            return step
    return None


def lineage(entries: dict[str, dict[str, Any]], step: str) -> list[dict[str, Any]]:
    """The chain of steps that made ``step``, from the PyTorch export down to it."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    current: str | None = step
    while current is not None and current not in seen:
        seen.add(current)
        entry = entries[current]
        art = entry.get("artifact") or {}
        chain.append({"step": current, "pass": art.get("pass"), "precision": art.get("precision"),
                      "sha256": art.get("sha256"), "file": Path(str(art.get("path", ""))).name,
                      "config": _clean_config(art.get("config") or {}),
                      # what an int8 search settled on (the config holds what was asked for)
                      "chosen": (art.get("extra") or {}).get("chosen")})
        parent = art.get("parent")
        current = _find_step(entries, parent) if parent else None
    return list(reversed(chain))


def _clean_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Parameters worth reading: unset ones dropped, absolute paths shown by their last two parts
    (the full path stays in manifest.json)."""
    out = {}
    for k, v in cfg.items():
        if v is None or v == [] or v == {}:
            continue
        if isinstance(v, str) and v.startswith("/"):
            v = str(Path(*Path(v).parts[-2:]))
        out[k] = v
    return out


def artifact_facts(path: Path, precision: str, sha256: str | None = None) -> dict[str, Any]:
    """Size, node count, MAC share per precision, lineage and the int8 search of one artifact."""
    from optkit.model.artifact import artifact_identity, artifact_size

    if sha256 is None:  # as the manifest identifies it: external weights files included
        ident = artifact_identity(path)
        sha256, size = ident["sha256"], ident["size"]
    else:
        size = artifact_size(path)
    facts: dict[str, Any] = {"file": path.name, "path": str(path), "sha256": sha256, "size": size,
                             "precision": precision, "nodes": None, "macs": None, "step": None,
                             "lineage": None, "lineage_note": None, "int8_search": None}
    if path.suffix.lower() == ".onnx":
        from optkit.model.onnx_utils import load_onnx

        model = load_onnx(path)
        facts["nodes"] = len(model.graph.node)
        facts["op_counts"] = _op_counts(model)
        facts["macs"] = _macs(model)
    entries = _manifest_entries(path)
    if entries is None:
        facts["lineage_note"] = "no manifest.json beside the artifact: lineage unknown (made outside a recipe)"
        return facts
    step = _find_step(entries, sha256)
    if step is None:
        facts["lineage_note"] = "not listed in the manifest.json beside it (sha256 differs): lineage unknown"
        return facts
    facts["step"] = step
    facts["lineage"] = lineage(entries, step)
    info = entries[step].get("info") or {}
    if isinstance(info.get("int8_search"), dict):
        facts["int8_search"] = info["int8_search"]
    return facts


def _op_counts(model: Any) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def _macs(model: Any) -> dict[str, Any]:
    from optkit.model.macs import mac_breakdown

    try:
        return mac_breakdown(model)
    except OptkitError as exc:
        return {"error": str(exc)}


def precision_text(precision: str, runner: dict[str, Any], facts: dict[str, Any] | None) -> str:
    """The precision the arithmetic actually ran in, as far as the artifact and runtime say."""
    macs = (facts or {}).get("macs") or {}
    share = macs.get("share") or {}
    parts = []
    if share:
        parts.append(" / ".join(f"{k} {share[k] * 100:.1f}%" for k in ("int8", "fp16", "fp32") if share.get(k)) + " of MACs")
    if str(runner.get("runner")) == "openvino":
        hint = (runner.get("in_effect") or {}).get("precision_hint")
        if hint:
            rest = "non-int8 layers" if precision == "int8" else "all layers"
            parts.append(f"OpenVINO computes {rest} in {hint}")
    elif precision == "fp16" and provider_of(runner) == "cpu":
        parts.append("fp16 model on the CPU provider (no fp16 speed-up on CPUs)")
    head = {"int8": "int8 (QDQ)", "fp16": "fp16", "fp32": "fp32"}.get(precision, precision)
    return head + (": " + "; ".join(parts) if parts else "")


# -- grouping ----------------------------------------------------------------------------------

def group_results(results: Sequence[Any]) -> list[list[int]]:
    """Indices of results that are the same result: same runtime, same precision, bit-identical
    outputs and the same gate verdict. Order follows the first member."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        digest = hashlib.sha256(np.ascontiguousarray(r.values).tobytes()).hexdigest() if r.values is not None else f"none{i}"
        key = (str(r.runner.get("runner")), r.precision, digest, r.passed, tuple(r.failures))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


# -- latency -----------------------------------------------------------------------------------

def bench_results(results: Sequence[Any], cfg: Any, threads: int | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Time every (artifact, runtime) that was verified, all in one interleaved run.

    Speed-ups: against the first fp32 ONNX artifact on the same runtime, and against that
    artifact on ONNX Runtime CPU (the usual production starting point)."""
    from optkit.runtime.bench import BenchItem, benchmark
    from optkit.runtime.registry import make_runner

    items, keys = [], []
    for r in results:
        key = (r.path, provider_of(r.runner))
        if key in keys:
            continue
        keys.append(key)
        label = f"{Path(r.path).name} [{runtime_label(r.runner)}]"
        items.append(BenchItem(label, make_runner(Path(r.path), provider=key[1], threads=threads), Path(r.path)))
    rep = benchmark(items, cfg, progress=progress)
    batch = cfg.batches[0]
    stats = {k: rep.result(item.label, batch).stats for k, item in zip(keys, items)}
    fp32_by_provider: dict[str, tuple[str, str]] = {}
    for r in results:
        p = provider_of(r.runner)
        if r.precision == "fp32" and r.path.endswith(".onnx") and p not in fp32_by_provider:
            fp32_by_provider[p] = (r.path, p)
    ort_fp32 = fp32_by_provider.get("cpu")
    per_result = []
    for r in results:
        k = (r.path, provider_of(r.runner))
        s = stats[k]
        entry: dict[str, Any] = {"min_ms": round(s.min_ms, 4), "p50_ms": round(s.p50_ms, 4),
                                 "p90_ms": round(s.p90_ms, 4), "label": items[keys.index(k)].label}
        base = fp32_by_provider.get(k[1])
        if base:
            b = stats[base]
            entry["vs_fp32"] = {"of": Path(base[0]).name, "min": b.min_ms / s.min_ms, "p50": b.p50_ms / s.p50_ms}
        if ort_fp32:
            b = stats[ort_fp32]
            entry["vs_ort_fp32"] = {"of": Path(ort_fp32[0]).name, "min": b.min_ms / s.min_ms, "p50": b.p50_ms / s.p50_ms}
        per_result.append(entry)
    data = rep.to_json()
    return {"per_result": per_result, "run": data}


# -- the whole thing ---------------------------------------------------------------------------

def enrich(report: Any, reference: Any, *, bench: Any = None, threads: int | None = None,
           progress: Progress | None = None) -> None:
    """Fill ``report.release`` (facts, runtimes in words, flipped samples, groups, latency)."""
    from optkit.verification.taskview import det_curve, flipped_samples

    say = progress or (lambda m: None)
    first_out = next(iter(reference.outputs))
    ref_scores = reference.outputs[first_out]
    facts: dict[str, dict[str, Any]] = {}
    for r in report.results:
        if r.path not in facts and Path(r.path).is_file():
            try:
                facts[r.path] = artifact_facts(Path(r.path), r.precision)
            except (OptkitError, OSError) as exc:
                facts[r.path] = {"file": Path(r.path).name, "error": str(exc)}
    per_result = []
    labels = reference.labels
    for r in report.results:
        entry: dict[str, Any] = {"runtime": runtime_label(r.runner), "runtime_text": runtime_text(r.runner),
                                 "precision_text": precision_text(r.precision, r.runner, facts.get(r.path)),
                                 "step": (facts.get(r.path) or {}).get("step"), "flipped_samples": [], "det": None}
        if r.values is not None and r.values.shape == ref_scores.shape:
            entry["flipped_samples"] = flipped_samples(ref_scores, r.values, report.threshold, labels)
            lengths = getattr(report, "sample_lengths", None)
            if lengths is not None:  # a mixed-length reference: each flipped sample's length
                for row in entry["flipped_samples"]:
                    row["length"] = int(lengths[row["index"]])
            if labels is not None:
                entry["det"] = det_curve(r.values, labels)
        per_result.append(entry)
    release: dict[str, Any] = {
        "facts": facts, "results": per_result, "groups": group_results(report.results),
        "reference_det": det_curve(ref_scores, labels) if labels is not None else None,
        "reference_labels": np.asarray(labels).astype(int).ravel().tolist() if labels is not None else None,
        "bench": None,
    }
    if bench is not None and report.results:
        say(f"timing {len(report.results)} artifact/runtime pairs interleaved "
            f"({bench.warmup} warm-up + {bench.iterations} timed rounds)")
        try:
            release["bench"] = bench_results(report.results, bench, threads, progress)
        except OptkitError as exc:
            release["bench"] = {"error": str(exc)}
    report.release.update(release)


def bench_config(value: Any, where: str = "bench") -> Any:
    """``verify: bench:`` of a recipe (true, or a mapping of BenchConfig fields) -> BenchConfig."""
    from optkit.runtime.bench import BenchConfig
    from optkit.common.errors import RecipeError

    if value in (None, False):
        return None
    if value is True:
        return BenchConfig(warmup=5, iterations=50)
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: expected true/false or a mapping like {{iterations: 50}}, got {value!r}")
    allowed = {"warmup", "iterations", "idle_ms", "seed"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(allowed))}")
    try:
        return BenchConfig(warmup=int(value.get("warmup", 5)), iterations=int(value.get("iterations", 50)),
                           idle_ms=float(value.get("idle_ms", 0.0)), seed=int(value.get("seed", 0)))
    except (TypeError, ValueError, InputError) as exc:
        raise RecipeError(f"{where}: {exc}") from None


def release_view(report: Any, reference: Any, *, bench: Any = None, threads: int | None = None,
                 baseline: tuple[str, dict[str, Any]] | None = None, limits: Any = None,
                 progress: Progress | None = None) -> None:
    """:func:`enrich`, then the comparison with ``baseline`` (from regression.prepare_baseline)."""
    enrich(report, reference, bench=bench, threads=threads, progress=progress)
    if baseline is not None:
        from optkit.release.regression import RegressionLimits, compare_with_baseline

        path, data = baseline
        report.release["regression"] = compare_with_baseline(report, data, path, limits or RegressionLimits())
