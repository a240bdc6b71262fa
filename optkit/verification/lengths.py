"""Verification of a mixed-length reference (variable-length speech), length by length.

A reference exported from mixed-length data (``optkit.data.ragged``) holds its inputs as lists of
samples whose time axis differs. :func:`run_by_length` runs an artifact over them with each length's
samples batched together, never padded (padding changes a pooling model's answer), and puts the
outputs back in the reference's order, so every gate and metric is computed as for a fixed-length
reference. :func:`bucket_results` then judges the same gate on each length bucket: buckets are
chosen from the data (:func:`length_buckets`: one per length when there are few, else ranges of
about equal counts), and a bucket with fewer than :data:`MIN_BUCKET_SAMPLES` samples says so
("too few samples") instead of passing or failing.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from optkit.common.errors import InputError

MIN_BUCKET_SAMPLES = 30
MAX_BUCKETS = 6
TOO_FEW = "too few samples"


def sample_lengths(reference: Any) -> np.ndarray | None:
    """Each sample's length on the time axis of a mixed-length reference; None for a fixed one."""
    if not getattr(reference, "mixed_length", False):
        return None
    samples = next(v for v in reference.inputs.values() if isinstance(v, list))
    return lengths_of(samples, int(reference.meta.get("time_axis", -1)))


def lengths_of(samples: Any, time_axis: int | None = None) -> np.ndarray:
    """Each sample's size on ``time_axis``; None: the axis whose size varies among the samples (the
    last one when none does), for sets that do not record their time axis."""
    shapes = np.array([np.shape(s) for s in samples], dtype=np.int64)
    if time_axis is None:
        varying = [a for a in range(shapes.shape[1]) if len(np.unique(shapes[:, a])) > 1]
        time_axis = varying[0] if varying else -1
    return shapes[:, time_axis]


def length_summary(lengths: np.ndarray) -> dict[str, Any]:
    return {"min": int(lengths.min()), "max": int(lengths.max()), "distinct": int(len(np.unique(lengths)))}


def check_range(specs: Any, lengths: np.ndarray, label: str) -> None:
    """A length outside the artifact's declared range is one line naming the range."""
    for spec in specs:
        for _axis, lo, hi in getattr(spec, "ranges", ()) or ():
            bad = lengths[(lengths < lo) | (lengths > hi)]
            if bad.size:
                raise InputError(f"{label}: the reference has length(s) {', '.join(map(str, np.unique(bad)[:5]))} "
                                 f"outside the model's declared range {lo}..{hi} of input {spec.name}")


def run_by_length(runner: Any, reference: Any, batch_size: int) -> dict[str, np.ndarray]:
    """A runner's outputs over a mixed-length reference, in the reference's sample order: each
    length's samples stacked and run in batches of ``batch_size`` (no padding of the time axis).
    Samples are grouped by their whole shape, so no time axis needs to be known here."""
    from optkit.model.feeds import reference_batches

    label = getattr(runner, "label", runner.path.name)
    samples = next(v for v in reference.inputs.values() if isinstance(v, list))
    shapes = [tuple(s.shape) for s in samples]
    for spec in runner.inputs:
        for axis, _lo, _hi in getattr(spec, "ranges", ()) or ():
            if 0 < axis <= len(shapes[0]):
                check_range([spec], np.array([sh[axis - 1] for sh in shapes]), label)
    n = len(shapes)
    out: dict[str, np.ndarray] = {}
    for shape in sorted(set(shapes)):
        idx = np.array([i for i, sh in enumerate(shapes) if sh == shape])
        group = {k: np.stack([v[i] for i in idx]) if isinstance(v, list) else np.asarray(v)[idx]
                 for k, v in reference.inputs.items()}
        pos = 0
        for feed, take in reference_batches(runner.inputs, group, batch_size, label):
            for k, v in runner.infer(feed).items():
                v = np.asarray(v)[:take]
                if k not in out:
                    out[k] = np.empty((n, *v.shape[1:]), v.dtype)
                elif out[k].shape[1:] != v.shape[1:]:
                    raise InputError(f"{label}: output {k} has shape {v.shape[1:]} per sample for inputs of shape "
                                     f"{shape} but {out[k].shape[1:]} for others; per-length verification needs outputs of "
                                     "one shape")
                out[k][idx[pos : pos + take]] = v
            pos += take
    return out


def stacked_group(inputs: dict[str, Any], n: int) -> dict[str, np.ndarray]:
    """Up to ``n`` samples of the most frequent shape of mixed-length ``inputs`` (lists of samples),
    stacked (for tools that need one shape: localisation, sensitivity ranking); arrays: the first n."""
    lists = [v for v in inputs.values() if isinstance(v, list)]
    if not lists:
        return {k: v[:n] for k, v in inputs.items()}
    shapes = [tuple(s.shape) for s in lists[0]]
    common = max(set(shapes), key=shapes.count)
    idx = [i for i, sh in enumerate(shapes) if sh == common][:n]
    return {k: np.stack([v[i] for i in idx]) if isinstance(v, list) else np.asarray(v)[idx]
            for k, v in inputs.items()}


def length_buckets(lengths: np.ndarray, max_buckets: int = MAX_BUCKETS,
                   min_samples: int = MIN_BUCKET_SAMPLES) -> list[tuple[int, int]]:
    """(first, last) length of each bucket, from the data: one bucket per distinct length when
    there are at most ``max_buckets``, else ranges holding about equal numbers of samples, as many
    as keep ``min_samples`` (:data:`MIN_BUCKET_SAMPLES`) in each (at most ``max_buckets``; a length
    never straddles two buckets)."""
    s = np.sort(np.asarray(lengths, dtype=np.int64))
    distinct = np.unique(s)
    if len(distinct) <= max_buckets:
        return [(int(d), int(d)) for d in distinct]
    # ranges: no more than leave each bucket min_samples samples when the set allows it
    max_buckets = max(1, min(max_buckets, len(s) // max(1, min_samples)))
    ends = sorted({int(c[-1]) for c in np.array_split(s, max_buckets) if len(c)})
    buckets, lo = [], int(s[0])
    for hi in ends:
        buckets.append((lo, hi))
        above = distinct[distinct > hi]
        if not above.size:
            break
        lo = int(above[0])
    return buckets


def bucket_label(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def bucket_results(ref_outputs: dict[str, np.ndarray], outs: dict[str, np.ndarray], labels: np.ndarray | None,
                   lengths: np.ndarray, gate: Any, threshold: float,
                   min_samples: int = MIN_BUCKET_SAMPLES) -> list[dict[str, Any]]:
    """The gate judged on each length bucket: samples, per-output metrics, accuracy drop (labels),
    failures and a status: passed, failed, or too few samples (< ``min_samples``: neither)."""
    from optkit.verification.comparator import output_metrics

    first = next(iter(ref_outputs))
    rows = []
    for lo, hi in length_buckets(lengths):
        mask = (lengths >= lo) & (lengths <= hi)
        n = int(mask.sum())
        metrics = {name: output_metrics(ref[mask], outs[name][mask], threshold)
                   for name, ref in ref_outputs.items() if name in outs and outs[name].shape == ref.shape}
        drop = None
        if labels is not None and first in metrics:
            y = np.asarray(labels).ravel()[mask].astype(bool)

            def accuracy(v: np.ndarray) -> float:
                return float(np.mean((np.asarray(v, np.float64).ravel() >= threshold) == y))

            drop = accuracy(ref_outputs[first][mask]) - accuracy(outs[first][mask])
        failures = [f"{name}: {f}" if len(metrics) > 1 else f
                    for name, m in metrics.items() for f in gate.check(m, drop)]
        status = TOO_FEW if n < min_samples else ("failed" if failures else "passed")
        rows.append({"lengths": [lo, hi], "label": bucket_label(lo, hi), "samples": n, "outputs": metrics,
                     "accuracy_drop": drop, "failures": failures, "status": status})
    return rows


def bucket_failures(buckets: list[dict[str, Any]]) -> list[str]:
    """The artifact's failure lines of the buckets that failed their gate (enough samples)."""
    return [f"length {b['label']} ({b['samples']} samples): {f}" for b in buckets if b["status"] == "failed"
            for f in b["failures"]]


def bucket_cell(b: dict[str, Any], min_samples: int = MIN_BUCKET_SAMPLES) -> str:
    """A bucket's verdict in words (terminal and HTML)."""
    if b["status"] == TOO_FEW:
        return f"{TOO_FEW} ({b['samples']} < {min_samples}): not judged"
    return "PASS" if b["status"] == "passed" else "FAIL"
