"""Numerical comparison and task metrics (pure numpy)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def compare_outputs(ref: np.ndarray, out: np.ndarray, threshold: float) -> dict[str, Any]:
    """How far ``out`` is from the reference ``ref`` (same shape), element-wise."""
    if ref.shape != out.shape:
        raise ValueError(f"shape {out.shape} differs from the reference {ref.shape}")
    r = ref.astype(np.float64).ravel()
    o = out.astype(np.float64).ravel()
    if not np.isfinite(r).all():
        # A reference with NaN/Inf compares as "equal" under nan-skipping reductions and used to
        # PASS; it is an input error (load_reference refuses it), never a result.
        raise ValueError(f"the reference contains {int((~np.isfinite(r)).sum())} NaN/Inf values")
    finite = bool(np.isfinite(o).all())
    d = np.abs(o - r)
    denom = np.maximum(np.abs(r), 1e-6)
    noise = float(np.sum((o - r) ** 2))
    signal = float(np.sum(r**2))
    if not finite:
        snr = -math.inf
    elif noise == 0.0:
        snr = math.inf
    else:
        snr = 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
    nr, no = float(np.linalg.norm(r)), float(np.linalg.norm(o))
    cosine = float(np.dot(r, o) / (nr * no)) if nr > 0 and no > 0 and finite else (1.0 if nr == no == 0 else 0.0)
    ref_dec = r >= threshold
    out_dec = o >= threshold
    flips = int(np.sum(ref_dec != out_dec))
    return {
        "n": int(r.size),
        "finite": finite,
        # plain max/mean: a NaN in the artifact's output must make the error NaN (which fails
        # every "<=" gate), not disappear as it would with nanmax/nanmean.
        "max_abs": float(np.max(d)) if d.size else 0.0,
        "mean_abs": float(np.mean(d)) if d.size else 0.0,
        "max_rel": float(np.max(d / denom)) if d.size else 0.0,
        "cosine": cosine,
        "snr_db": snr,
        "agreement": 1.0 - flips / max(1, r.size),
        "flipped": flips,
    }


def eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs (scores: higher = target)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan"), float("nan")
    thresholds = np.unique(scores)
    # FAR(t) = P(neg >= t), FRR(t) = P(pos < t); searchsorted keeps it O(n log n).
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    far = 1.0 - np.searchsorted(neg_sorted, thresholds, side="left") / len(neg)
    frr = np.searchsorted(pos_sorted, thresholds, side="left") / len(pos)
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0), float(thresholds[i])


def task_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Verification metrics for probabilities ``scores`` of the target class."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    accept = s >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    e, t = eer(s, y)
    return {
        "samples": int(y.size),
        "targets": n_pos,
        "impostors": n_neg,
        "accuracy": float(np.mean(accept == y)),
        "far": float(np.sum(accept & ~y) / n_neg) if n_neg else float("nan"),
        "frr": float(np.sum(~accept & y) / n_pos) if n_pos else float("nan"),
        "eer": e,
        "eer_threshold": t,
        "threshold": threshold,
    }


def json_safe(value: Any) -> Any:
    """Replace inf/nan (not valid JSON) by strings, recursively."""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value
