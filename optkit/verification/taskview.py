"""The task view of a verification: what a reviewer of a verification model asks about scores.

Where the reference has labels (target = 1, impostor = 0): FAR/FRR across every threshold (the
DET curve), the operating point, and the samples whose decision an artifact flipped. Pure numpy;
metrics.py keeps the scalar metrics, this module the per-threshold and per-sample views.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def det_curve(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]]:
    """FAR and FRR at every distinct score used as the threshold (accept when score >= t).

    Returned in increasing threshold order, with the end points t = -inf (accept everything:
    FAR 1, FRR 0) and t = +inf (reject everything: FAR 0, FRR 1) so the curve spans the plot.
    Same convention as metrics.eer, so the EER read off this curve is the one reported.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    finite = np.isfinite(s)
    s, y = s[finite], y[finite]
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if len(pos) == 0 or len(neg) == 0:
        return {"threshold": [], "far": [], "frr": []}
    t = np.unique(s)
    far = 1.0 - np.searchsorted(neg, t, side="left") / len(neg)
    frr = np.searchsorted(pos, t, side="left") / len(pos)
    return {
        "threshold": [float("-inf")] + t.tolist() + [float("inf")],
        "far": [1.0] + far.tolist() + [0.0],
        "frr": [0.0] + frr.tolist() + [1.0],
    }


def flipped_samples(ref_scores: np.ndarray, scores: np.ndarray, threshold: float,
                    labels: np.ndarray | None = None, other_threshold: float | None = None) -> list[dict[str, Any]]:
    """Samples decided differently by ``scores`` than by ``ref_scores``, with both scores.

    ``other_threshold`` is the threshold ``ref_scores`` were decided at, when it differs (two
    releases with different operating points). ``correct`` says whether the new decision matches
    the label: a flip that fixes an error is not the same news as one that makes one.
    """
    r = np.asarray(ref_scores, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    rt = threshold if other_threshold is None else other_threshold
    ref_dec, dec = r >= rt, s >= threshold
    out = []
    for i in np.flatnonzero(ref_dec != dec):
        row: dict[str, Any] = {"index": int(i), "reference_score": float(r[i]), "score": float(s[i]),
                               "reference_accepts": bool(ref_dec[i]), "accepts": bool(dec[i])}
        if labels is not None:
            lab = bool(np.asarray(labels).ravel()[i])
            row["label"] = "target" if lab else "impostor"
            row["correct"] = bool(dec[i]) == lab
        out.append(row)
    return out


def score_histogram(scores: np.ndarray, labels: np.ndarray, bins: int = 20,
                    lo: float = 0.0, hi: float = 1.0) -> dict[str, Any]:
    """Counts of target and impostor scores in ``bins`` equal bins over [lo, hi] (clipped)."""
    s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64).ravel(), nan=lo), lo, hi)
    y = np.asarray(labels).ravel().astype(bool)
    edges = np.linspace(lo, hi, bins + 1)
    return {
        "edges": edges.tolist(),
        "target": np.histogram(s[y], bins=edges)[0].tolist(),
        "impostor": np.histogram(s[~y], bins=edges)[0].tolist(),
    }
