"""Inline SVG plots for the HTML report: scatter, histograms, score distributions, DET curves.

Written here rather than with matplotlib: each plot is a few dozen lines, and the report stays
one dependency-free file that opens anywhere without a network. Every plot has axis labels and,
where it shows more than one series, a legend; ``data-plot`` names the kind (tests look for it).
"""
from __future__ import annotations

import html
import math
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

PALETTE = ["#222222", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22"]
TARGET_COLOR, IMPOSTOR_COLOR = "#2ca02c", "#d62728"
_FONT = 'font-family="system-ui,sans-serif"'


def _open(kind: str, width: int, height: int, title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" data-plot="{kind}" {_FONT}>',
            f"<title>{html.escape(title)}</title>"]


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "middle", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{html.escape(s)}</text>'


def _legend(items: Sequence[tuple[str, str, str]], x: float, y: float) -> list[str]:
    """items: (label, colour, style) with style 'line', 'dash' or 'box'."""
    parts = []
    for i, (label, color, style) in enumerate(items):
        yy = y + i * 14
        if style == "box":
            parts.append(f'<rect x="{x:.1f}" y="{yy - 8:.1f}" width="12" height="9" fill="{color}" fill-opacity="0.5"/>')
        else:
            dash = ' stroke-dasharray="4,3"' if style == "dash" else ""
            parts.append(f'<line x1="{x:.1f}" y1="{yy - 4:.1f}" x2="{x + 14:.1f}" y2="{yy - 4:.1f}" stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(_text(x + 18, yy, label, 10, "start"))
    return parts


def scatter(ref: np.ndarray, got: np.ndarray, threshold: float, size: int = 280) -> str:
    """Artifact score against the PyTorch score per sample; flipped decisions in red."""
    pad = 36
    r = np.asarray(ref, dtype=float).ravel()
    g = np.nan_to_num(np.asarray(got, dtype=float).ravel(), nan=0.0)
    lo, hi = 0.0, 1.0
    if r.min() < 0 or r.max() > 1:  # not probabilities: scale to the data
        lo, hi = float(min(r.min(), g.min())), float(max(r.max(), g.max()))
    x, y = np.clip(r, lo, hi), np.clip(g, lo, hi)
    span = (hi - lo) or 1.0

    def sx(v: float) -> float:
        return pad + (v - lo) / span * (size - pad - 10)

    def sy(v: float) -> float:
        return size - pad - (v - lo) / span * (size - pad - 20)

    flips = (r >= threshold) != (g >= threshold)
    parts = _open("scatter", size, size, "artifact score against PyTorch score")
    parts += [f'<rect x="{sx(lo):.1f}" y="{sy(hi):.1f}" width="{sx(hi) - sx(lo):.1f}" height="{sy(lo) - sy(hi):.1f}" fill="#fafafa" stroke="#999"/>',
              f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" y2="{sy(hi):.1f}" stroke="#bbb" stroke-dasharray="3,3"/>']
    if lo <= threshold <= hi:
        parts += [f'<line x1="{sx(threshold):.1f}" y1="{sy(hi):.1f}" x2="{sx(threshold):.1f}" y2="{sy(lo):.1f}" stroke="#d33" stroke-width="0.8"/>',
                  f'<line x1="{sx(lo):.1f}" y1="{sy(threshold):.1f}" x2="{sx(hi):.1f}" y2="{sy(threshold):.1f}" stroke="#d33" stroke-width="0.8"/>']
    order = np.argsort(flips, kind="stable")  # flipped samples drawn last, on top
    for i in order[-5000:]:
        f = bool(flips[i])
        parts.append(f'<circle cx="{sx(x[i]):.1f}" cy="{sy(y[i]):.1f}" r="{2.6 if f else 1.6}" '
                     f'fill="{"#d33" if f else "#36c"}" fill-opacity="0.6"/>')
    parts += [_text(sx(lo), size - pad + 12, f"{lo:.2g}", 9), _text(sx(hi), size - pad + 12, f"{hi:.2g}", 9),
              _text(pad - 4, sy(lo) + 3, f"{lo:.2g}", 9, "end"), _text(pad - 4, sy(hi) + 3, f"{hi:.2g}", 9, "end"),
              _text((sx(lo) + sx(hi)) / 2, size - 6, "PyTorch reference score"),
              _text(11, (sy(lo) + sy(hi)) / 2, "artifact score", extra=f' transform="rotate(-90 11 {(sy(lo) + sy(hi)) / 2:.1f})"')]
    parts += _legend([("same decision", "#36c", "box"), (f"flipped at {threshold:g}", "#d33", "box")], sx(lo) + 6, sy(hi) + 14)
    parts.append("</svg>")
    return "".join(parts)


def error_histogram(err: np.ndarray, width: int = 320, height: int = 200, bins: int = 30) -> str:
    """Histogram of |artifact − reference| with a log count scale."""
    pad = 36
    e = np.abs(np.nan_to_num(np.asarray(err, dtype=float).ravel(), nan=np.inf))
    finite = e[np.isfinite(e)]
    if finite.size == 0:
        return "<p>no finite errors</p>"
    top = float(finite.max()) or 1e-12
    counts, _ = np.histogram(finite, bins=bins, range=(0, top))
    cmax = max(int(counts.max()), 1)
    bw = (width - 2 * pad) / bins
    parts = _open("error-histogram", width, height, "histogram of absolute differences")
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * (math.log1p(c) / math.log1p(cmax))
        parts.append(f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}" fill="#36c"/>')
    parts += [f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
              f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
              _text(pad, height - pad + 12, "0", 9), _text(width - pad, height - pad + 12, f"{top:.2g}", 9),
              _text(pad - 4, pad + 4, str(cmax), 9, "end"), _text(pad - 4, height - pad, "0", 9, "end"),
              _text(width / 2, height - 6, "|artifact − PyTorch| per sample"),
              _text(11, height / 2, "samples (log scale)", extra=f' transform="rotate(-90 11 {height / 2})"'),
              "</svg>"]
    return "".join(parts)


def score_distribution(hist: dict[str, Any], title: str, threshold: float, width: int = 300, height: int = 190) -> str:
    """Target and impostor score histograms overlaid (from taskview.score_histogram)."""
    pad_l, pad_r, pad_t, pad_b = 36, 8, 22, 48
    edges = hist["edges"]
    tgt, imp = hist["target"], hist["impostor"]
    lo, hi = edges[0], edges[-1]
    cmax = max(max(tgt, default=0), max(imp, default=0), 1)
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(v: float) -> float:
        return pad_l + (v - lo) / ((hi - lo) or 1) * pw

    parts = _open("score-distribution", width, height, f"score distribution: {title}")
    parts.append(_text(width / 2, 13, title, 11, extra=' font-weight="bold"'))
    for counts, color in ((imp, IMPOSTOR_COLOR), (tgt, TARGET_COLOR)):
        for i, c in enumerate(counts):
            if not c:
                continue
            h = ph * c / cmax
            parts.append(f'<rect x="{sx(edges[i]):.1f}" y="{pad_t + ph - h:.1f}" width="{sx(edges[i + 1]) - sx(edges[i]) - 0.5:.1f}" '
                         f'height="{h:.1f}" fill="{color}" fill-opacity="0.45"/>')
    if lo <= threshold <= hi:
        parts.append(f'<line x1="{sx(threshold):.1f}" y1="{pad_t}" x2="{sx(threshold):.1f}" y2="{pad_t + ph}" stroke="#000" stroke-dasharray="3,2"/>')
    parts += [f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#999"/>',
              f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#999"/>',
              _text(sx(lo), pad_t + ph + 11, f"{lo:g}", 9), _text(sx(hi), pad_t + ph + 11, f"{hi:g}", 9),
              _text(pad_l - 3, pad_t + 8, str(cmax), 9, "end"), _text(pad_l - 3, pad_t + ph, "0", 9, "end"),
              _text(pad_l + pw / 2, pad_t + ph + 24, "score"),
              _text(10, pad_t + ph / 2, "samples", 10, extra=f' transform="rotate(-90 10 {pad_t + ph / 2:.1f})"')]
    for k, item in enumerate([("target", TARGET_COLOR, "box"), ("impostor", IMPOSTOR_COLOR, "box"),
                              (f"threshold {threshold:.3g}", "#000", "dash")]):
        parts += _legend([item], pad_l + k * 82, height - 5)
    parts.append("</svg>")
    return "".join(parts)


# DET axes are on the probit (normal deviate) scale, as is conventional for detection error
# trade-off plots: straight lines for normal score distributions, and the low-error region,
# where a release is judged, gets room.
DET_TICKS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6)


def det_plot(curves: Sequence[dict[str, Any]], width: int = 520, plot_height: int = 380) -> str:
    """FAR/FRR curves on one plot. Each curve: {"label", "far", "frr", "eer", "op": (far, frr)}.

    Rates of exactly 0 or 1 cannot be drawn on a probit axis; they are clamped to the plot edge
    (the axis range covers 0.1 %..70 %)."""
    nd = NormalDist()
    lo_p, hi_p = 0.001, 0.7
    lo, hi = nd.inv_cdf(lo_p), nd.inv_cdf(hi_p)
    pad_l, pad_r, pad_t, pad_b = 46, 12, 14, 40
    height = plot_height + 14 * (len(curves) + 1) + 6
    pw, ph = width - pad_l - pad_r, plot_height - pad_t - pad_b

    def z(p: float) -> float:
        return nd.inv_cdf(min(max(p, lo_p), hi_p))

    def sx(p: float) -> float:
        return pad_l + (z(p) - lo) / (hi - lo) * pw

    def sy(p: float) -> float:
        return pad_t + ph - (z(p) - lo) / (hi - lo) * ph

    parts = _open("det", width, height, "DET curves: false rejection rate against false acceptance rate")
    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#999"/>')
    for t in DET_TICKS:
        label = f"{t * 100:g}"
        parts += [f'<line x1="{sx(t):.1f}" y1="{pad_t}" x2="{sx(t):.1f}" y2="{pad_t + ph}" stroke="#e4e4e4"/>',
                  f'<line x1="{pad_l}" y1="{sy(t):.1f}" x2="{pad_l + pw}" y2="{sy(t):.1f}" stroke="#e4e4e4"/>',
                  _text(sx(t), pad_t + ph + 12, label, 9), _text(pad_l - 4, sy(t) + 3, label, 9, "end")]
    parts.append(f'<line x1="{sx(lo_p):.1f}" y1="{sy(lo_p):.1f}" x2="{sx(hi_p):.1f}" y2="{sy(hi_p):.1f}" stroke="#ccc" stroke-dasharray="2,3"/>')
    legend = []
    # drawn last first, so the reference (curve 0, thin black) lies on top of the artifacts it is compared with
    for i in reversed(range(len(curves))):
        c = curves[i]
        color = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5,3"' if i % 2 == 0 and i else ""
        pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in _thin(c["far"], c["frr"]))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="{1.2 if i == 0 else 2.0}"{dash}/>')
        if c.get("op"):
            a, b = c["op"]
            parts.append(f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="3.5" fill="none" stroke="{color}" stroke-width="1.5"/>')
    for i, c in enumerate(curves):
        color = PALETTE[i % len(PALETTE)]
        dash = i % 2 == 0 and i
        eer = c.get("eer")
        eer_txt = f", EER {eer * 100:.2f}%" if isinstance(eer, float) and math.isfinite(eer) else ""
        legend.append((f"{c['label']}{eer_txt}", color, "dash" if dash else "line"))
    parts += _legend(legend + [("○ operating threshold on each curve", "#fff", "line")], pad_l, plot_height + 8)
    parts += [_text(pad_l + pw / 2, plot_height - 10, "false acceptance rate (%) — impostors accepted"),
              _text(12, pad_t + ph / 2, "false rejection rate (%) — targets rejected",
                    extra=f' transform="rotate(-90 12 {pad_t + ph / 2:.1f})"'),
              "</svg>"]
    return "".join(parts)


def _thin(far: Sequence[float], frr: Sequence[float]) -> list[tuple[float, float]]:
    """Drop points that land on the same pixel-ish spot, keeping the staircase shape."""
    out: list[tuple[float, float]] = []
    for a, b in zip(far, frr):
        if out and abs(out[-1][0] - a) < 1e-4 and abs(out[-1][1] - b) < 1e-4:
            continue
        out.append((a, b))
    return out


def error_vs_length(lengths: np.ndarray, err: np.ndarray, width: int = 420, height: int = 220) -> str:
    """Per-sample max |artifact − PyTorch| against the sample's length (frames), log error scale;
    the line joins each length's largest error."""
    pad, floor = 44, 1e-9
    x = np.asarray(lengths, dtype=float).ravel()
    y = np.asarray(err, dtype=float).ravel()
    finite = np.isfinite(y)
    if not finite.any():
        return "<p>no finite errors</p>"
    ly = np.log10(np.clip(np.where(finite, y, y[finite].max()), floor, None))
    xlo, xhi = float(x.min()), float(x.max())
    ylo, yhi = float(np.floor(ly.min())), float(np.ceil(ly.max()))
    if yhi <= ylo:
        yhi = ylo + 1

    def sx(v: float) -> float:
        return pad + (v - xlo) / ((xhi - xlo) or 1.0) * (width - pad - 12)

    def sy(v: float) -> float:
        return height - pad - (v - ylo) / (yhi - ylo) * (height - pad - 12)

    parts = _open("error-vs-length", width, height, "absolute difference against length")
    parts += [f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="2" fill="#36c" fill-opacity="0.6"/>' for a, b in zip(x, ly)]
    top = [(float(n), float(ly[x == n].max())) for n in np.unique(x)]
    parts.append('<polyline fill="none" stroke="#d62728" stroke-width="1.2" points="'
                 + " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in top) + '"/>')
    parts += [f'<line x1="{pad}" y1="{height - pad}" x2="{width - 12}" y2="{height - pad}" stroke="#999"/>',
              f'<line x1="{pad}" y1="12" x2="{pad}" y2="{height - pad}" stroke="#999"/>',
              _text(pad, height - pad + 12, f"{xlo:g}", 9), _text(width - 12, height - pad + 12, f"{xhi:g}", 9),
              _text(pad - 4, 16, f"1e{yhi:.0f}", 9, "end"), _text(pad - 4, height - pad, f"1e{ylo:.0f}", 9, "end"),
              _text(width / 2, height - 6, "length (frames)"),
              _text(11, height / 2, "max |Δ| (log)", extra=f' transform="rotate(-90 11 {height / 2})"'),
              *_legend([("largest per length", "#d62728", "line")], width - 150, 24), "</svg>"]
    return "".join(parts)
