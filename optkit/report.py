"""report.json (machine-readable) and report.html (one self-contained file for reviewers).

The plots are inline SVG written here rather than with matplotlib: a scatter and a histogram
are a few dozen lines, and the report stays one dependency-free file that opens anywhere.
"""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from optkit.fileio import write_json_atomically, write_text_atomically
from optkit.verify import ArtifactResult, VerifyReport


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if math.isnan(v):
            return "nan"
        if kind == "pct":
            return f"{v * 100:.2f}%"
        if kind == "db":
            return f"{v:.1f}"
        if kind == "cos":  # near 1 for any decent artifact: show the digits that differ
            return f"{v:.6f}"
        return f"{v:.3g}"
    return str(v)


def summary_rows(report: VerifyReport) -> list[list[str]]:
    rows = []
    for r in report.results:
        for name, m in r.outputs.items() or {"-": {}}.items():
            rows.append([
                Path(r.path).name, r.precision, r.runner.get("runner", "?"),
                _fmt(m.get("max_abs")), _fmt(m.get("mean_abs")), _fmt(m.get("cosine"), "cos"),
                _fmt(m.get("snr_db"), "db"), _fmt(m.get("agreement"), "pct"),
                _fmt(r.task["accuracy"], "pct") if r.task else "–",
                "PASS" if r.passed else "FAIL",
            ])
    return rows


HEADER = ["artifact", "prec", "runner", "max|Δ|", "mean|Δ|", "cosine", "SNR dB", "agree", "acc", "gate"]


def format_table(report: VerifyReport) -> str:
    rows = [HEADER] + summary_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if report.reference_task:
        t = report.reference_task
        lines.append(f"PyTorch reference: accuracy {t['accuracy']:.2%}, EER {t['eer']:.2%}, "
                     f"FAR {t['far']:.2%}, FRR {t['frr']:.2%} at threshold {t['threshold']}")
    for s in report.skipped:
        lines.append(f"SKIPPED {s['step']} ({s['pass']}): {s['reason']}")
    for r in report.results:
        for f in r.failures:
            lines.append(f"FAIL {Path(r.path).name}: {f}")
        for what, d in r.data_decisions.items():
            lines.append(f"NOTE {Path(r.path).name}: {what.replace('_', ' ')} {d.get('action')} "
                         f"({d.get('values')} value(s) outside {d.get('bounds')})")
        loc = r.localization or {}
        if loc.get("layers"):
            names = [l.get("node") or l.get("name") for l in loc["layers"][:5]]
            lines.append(f"  error grows first at: {', '.join(str(n) for n in names)} "
                         f"(try --exclude-nodes {','.join(str(n) for n in names[:3])})")
        elif loc.get("error"):
            lines.append(f"  localisation: {loc['error']}")
    return "\n".join(lines)


def write_reports(report: VerifyReport, out_dir: str | Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    j = write_json_atomically(out_dir / "report.json", report.to_json())
    h = write_text_atomically(out_dir / "report.html", render_html(report))
    return j, h


# -- HTML --------------------------------------------------------------------------------------

def _svg_scatter(ref: np.ndarray, got: np.ndarray, threshold: float, size: int = 280) -> str:
    pad = 30
    x = np.clip(ref.astype(float).ravel(), 0, 1)
    y = np.clip(np.nan_to_num(got.astype(float).ravel(), nan=0.0), 0, 1)
    lo = 0.0
    hi = 1.0
    if ref.min() < 0 or ref.max() > 1:  # not probabilities: scale to the data
        lo = float(min(ref.min(), np.nanmin(got)))
        hi = float(max(ref.max(), np.nanmax(got)))
        x, y = ref.astype(float).ravel(), np.nan_to_num(got.astype(float).ravel())

    def sx(v: float) -> float:
        return pad + (v - lo) / (hi - lo or 1) * (size - 2 * pad)

    def sy(v: float) -> float:
        return size - pad - (v - lo) / (hi - lo or 1) * (size - 2 * pad)

    flips = (x >= threshold) != (y >= threshold)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img">',
             f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="#fafafa" stroke="#999"/>',
             f'<line x1="{sx(lo)}" y1="{sy(lo)}" x2="{sx(hi)}" y2="{sy(hi)}" stroke="#bbb" stroke-dasharray="3,3"/>']
    if lo <= threshold <= hi:
        parts += [f'<line x1="{sx(threshold)}" y1="{pad}" x2="{sx(threshold)}" y2="{size - pad}" stroke="#d33" stroke-width="0.8"/>',
                  f'<line x1="{pad}" y1="{sy(threshold)}" x2="{size - pad}" y2="{sy(threshold)}" stroke="#d33" stroke-width="0.8"/>']
    for xi, yi, f in zip(x[:5000], y[:5000], flips[:5000]):
        parts.append(f'<circle cx="{sx(xi):.1f}" cy="{sy(yi):.1f}" r="{2.6 if f else 1.6}" fill="{"#d33" if f else "#36c"}" fill-opacity="0.6"/>')
    parts += [f'<text x="{size / 2}" y="{size - 6}" font-size="11" text-anchor="middle">PyTorch reference</text>',
              f'<text x="10" y="{size / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 10 {size / 2})">artifact</text>',
              f'<text x="{pad}" y="{pad - 8}" font-size="10">{lo:.2g}..{hi:.2g}; red lines: threshold {threshold}; red dots: flipped</text>',
              "</svg>"]
    return "".join(parts)


def _svg_histogram(err: np.ndarray, width: int = 320, height: int = 200, bins: int = 30) -> str:
    pad = 30
    err = np.abs(np.nan_to_num(err.astype(float).ravel(), nan=np.inf))
    finite = err[np.isfinite(err)]
    if finite.size == 0:
        return "<p>no finite errors</p>"
    top = float(finite.max()) or 1e-12
    counts, edges = np.histogram(finite, bins=bins, range=(0, top))
    cmax = max(int(counts.max()), 1)
    bw = (width - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * (math.log1p(c) / math.log1p(cmax))
        parts.append(f'<rect x="{pad + i * bw:.1f}" y="{height - pad - h:.1f}" width="{bw - 1:.1f}" height="{h:.1f}" fill="#36c"/>')
    parts += [f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
              f'<text x="{pad}" y="{height - 10}" font-size="10">0</text>',
              f'<text x="{width - pad}" y="{height - 10}" font-size="10" text-anchor="end">{top:.2g}</text>',
              f'<text x="{width / 2}" y="{pad - 10}" font-size="11" text-anchor="middle">|artifact − reference| (count, log scale)</text>',
              "</svg>"]
    return "".join(parts)


def _task_html(t: dict[str, Any] | None) -> str:
    if not t:
        return "–"
    return (f"accuracy {_fmt(t['accuracy'], 'pct')}, EER {_fmt(t['eer'], 'pct')}, "
            f"FAR {_fmt(t['far'], 'pct')}, FRR {_fmt(t['frr'], 'pct')}")


def _artifact_section(r: ArtifactResult, report: VerifyReport) -> str:
    e = html.escape
    status = '<span class="pass">PASS</span>' if r.passed else '<span class="fail">FAIL</span>'
    gate = ", ".join(f"{k}={v:g}" for k, v in r.gate.items() if v is not None) or "none"
    rows = "".join(
        f"<tr><td>{e(name)}</td><td>{_fmt(m['max_abs'])}</td><td>{_fmt(m['mean_abs'])}</td><td>{_fmt(m['max_rel'])}</td>"
        f"<td>{_fmt(m['cosine'], 'cos')}</td><td>{_fmt(m['snr_db'], 'db')}</td><td>{_fmt(m['agreement'], 'pct')}</td><td>{m['flipped']}</td></tr>"
        for name, m in r.outputs.items())
    parts = [f"<section><h2>{e(Path(r.path).name)} — {e(r.precision)} {status}</h2>",
             f"<p>runner: <code>{e(str(r.runner))}</code><br>gate ({e(r.precision)}): {e(gate)}<br>"
             f"task: {_task_html(r.task)}{'' if r.accuracy_drop is None else f' (drop {r.accuracy_drop * 100:.2f} points)'}</p>",
             "<table><tr><th>output</th><th>max |Δ|</th><th>mean |Δ|</th><th>max rel</th><th>cosine</th><th>SNR dB</th>"
             f"<th>agreement</th><th>flipped</th></tr>{rows}</table>"]
    if r.failures:
        parts.append("<ul class='failures'>" + "".join(f"<li>{e(f)}</li>" for f in r.failures) + "</ul>")
    for what, d in r.data_decisions.items():
        parts.append(f"<p class='note'>{e(what.replace('_', ' '))}: {e(str(d.get('action')))} "
                     f"{e(str(d.get('values')))} value(s) outside {e(str(d.get('bounds')))} "
                     f"in {e(', '.join(map(str, d.get('samples', []))))}</p>")
    if r.values is not None and report.reference_values is not None and r.values.shape == report.reference_values.shape:
        parts.append("<div class='plots'>" + _svg_scatter(report.reference_values, r.values, report.threshold)
                     + _svg_histogram(r.values.astype(float) - report.reference_values.astype(float)) + "</div>")
    loc = r.localization
    if loc:
        if loc.get("layers"):
            keys = [k for k in loc["layers"][0].keys()][:6]
            head = "".join(f"<th>{e(k)}</th>" for k in keys)
            body = "".join("<tr>" + "".join(f"<td>{e(_fmt(l.get(k)))}</td>" for k in keys) + "</tr>" for l in loc["layers"][:15])
            parts.append(f"<h3>Where the error first grows</h3><table><tr>{head}</tr>{body}</table>")
        elif loc.get("error"):
            parts.append(f"<p>Error localisation: {e(loc['error'])}</p>")
    parts.append("</section>")
    return "".join(parts)


def render_html(report: VerifyReport) -> str:
    e = html.escape
    verdict = "PASSED" if report.passed else "FAILED"
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in summary_rows(report))
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    ref = report.reference
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optkit verification report — {verdict}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}}
th{{background:#f0f0f0}} td:first-child{{text-align:left}} .pass{{color:#080;font-weight:bold}} .fail{{color:#c00;font-weight:bold}}
.plots{{display:flex;gap:2em;align-items:flex-start}} code{{font-size:12px}} section{{border-top:1px solid #ddd;margin-top:1.5em}}
</style></head><body>
<h1>optkit verification: <span class="{'pass' if report.passed else 'fail'}">{verdict}</span></h1>
<p>Reference: <code>{e(str(ref.get('path', '')))}</code>, {ref.get('samples')} samples{', labelled' if ref.get('labels') else ''};
threshold {report.threshold}; provider {e(report.provider)}; created {e(report.created)}.<br>
PyTorch reference task metrics: {_task_html(report.reference_task)}<br>
Versions: {e(', '.join(f'{k} {v}' for k, v in report.versions.items()))}</p>
<table><tr>{head}</tr>{rows}</table>
{''.join(f"<p><b>SKIPPED</b> {e(s['step'])} ({e(s['pass'])}): {e(str(s['reason']))}</p>" for s in report.skipped)}
{''.join(_artifact_section(r, report) for r in report.results)}
</body></html>
"""
