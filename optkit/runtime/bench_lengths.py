"""``optkit bench --lengths``: latency per input length of a model with a dynamic time axis.

The lengths (:func:`parse_lengths`: ``100,241,500,1000`` or ``MIN:MAX:COUNT``, COUNT lengths evenly
spaced from MIN to MAX) must lie inside every artifact's declared length range
(:func:`check_lengths`, one line naming the range otherwise). :func:`optkit.runtime.bench.benchmark`
times every (artifact, length) pair interleaved in one run, so load from other processes hits every
length alike; :func:`length_fits` then fits a least-squares line through each artifact's median
latencies: its slope in ms per second of audio (``frames_per_second`` frames = 1 s, 100 for the
voice model's MFCCs) and the largest deviation of a median from the line, relative to it (how far
latency is from linear in length).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from optkit.common.errors import InputError

FRAMES_PER_SECOND = 100  # the voice model's MFCCs: 10 ms hop


def parse_lengths(text: str) -> tuple[int, ...]:
    """``100,241,500`` or ``MIN:MAX:COUNT`` -> sorted distinct positive lengths."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi, count = (int(p) for p in text.split(":"))
            if lo < 1 or hi < lo or count < 2:
                raise ValueError
            lengths = [int(round(v)) for v in np.linspace(lo, hi, count)]
        else:
            lengths = [int(p) for p in text.split(",") if p.strip()]
            if not lengths or min(lengths) < 1:
                raise ValueError
    except ValueError:
        raise InputError(f"--lengths {text!r}: expected positive lengths like 100,241,500,1000 or MIN:MAX:COUNT "
                         "like 100:1000:5 (MIN <= MAX, COUNT >= 2)") from None
    return tuple(sorted(set(lengths)))


def check_lengths(label: str, specs: Sequence[Any], lengths: Sequence[int]) -> None:
    """Every length inside the artifact's declared range; one line naming the range otherwise."""
    ranged = [(s.name, lo, hi) for s in specs for _axis, lo, hi in (getattr(s, "ranges", ()) or ())]
    if not ranged:
        raise InputError(f"{label} declares no length range: --lengths needs a model exported with a dynamic time "
                         "axis (optkit export --dynamic-axis NAME:AXIS --length-range MIN:MAX)")
    for name, lo, hi in ranged:
        bad = [n for n in lengths if not lo <= n <= hi]
        if bad:
            raise InputError(f"length {', '.join(map(str, bad))} outside the declared range {lo}..{hi} of {label} "
                             f"(input {name})")


def fit_line(lengths: Sequence[int], ms: Sequence[float], frames_per_second: float = FRAMES_PER_SECOND) -> dict[str, Any]:
    """Least-squares line through (length, ms): slope per second of audio, intercept, and the
    largest relative deviation of a point from the line."""
    x = np.asarray(lengths, dtype=float)
    y = np.asarray(ms, dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    fit = slope * x + intercept
    dev = np.abs(y - fit) / np.where(fit > 0, fit, np.inf)
    worst = int(np.argmax(dev))
    return {"slope_ms_per_s_audio": round(float(slope) * frames_per_second, 4), "intercept_ms": round(float(intercept), 4),
            "max_deviation_from_line": round(float(dev[worst]), 4), "worst_length": int(x[worst])}


def length_fits(report: Any) -> list[dict[str, Any]]:
    """One line fit per (artifact, batch) of a run with lengths (at least two): through the p50s."""
    cfg = report.config
    if len(getattr(cfg, "lengths", ()) or ()) < 2:
        return []
    out = []
    for item in report.items:
        for batch in cfg.batches:
            rows = sorted((r.length, r.stats.p50_ms) for r in report.results
                          if r.label == item["label"] and r.batch == batch and r.length is not None)
            if len(rows) >= 2:
                out.append({"artifact": item["label"], "batch": batch, "of": "p50",
                            **fit_line([n for n, _ in rows], [m for _, m in rows], cfg.frames_per_second)})
    return out


def fit_lines(report: Any) -> list[str]:
    """The fits in words, for the table."""
    fps = report.config.frames_per_second
    return [f"{f['artifact']} batch {f['batch']}: {f['slope_ms_per_s_audio']:.3f} ms per second of audio "
            f"({fps:g} frames = 1 s; p50 = {f['intercept_ms']:.3f} ms + slope x length); largest deviation from the "
            f"line {f['max_deviation_from_line']:.1%} (at {f['worst_length']})" for f in length_fits(report)]
