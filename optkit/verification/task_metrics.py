"""Numerical comparison and task metrics (pure numpy)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from optkit.verification.comparator import output_metrics as compare_outputs  # noqa: F401 - the name verify used


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
