"""The per-length part of the reports of a mixed-length reference (variable-length speech): every
gate per length bucket in the terminal table and report.html, and the plot of error vs length.
The buckets and their verdicts come from :mod:`optkit.verification.lengths`; this module only
presents them."""
from __future__ import annotations

from html import escape as e
from pathlib import Path
from typing import Any

import numpy as np

from optkit.verification.lengths import bucket_cell

HEADER = ["length", "samples", "max |Δ|", "mean |Δ|", "agreement", "flipped", "accuracy drop", "gate"]


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return "–"
    if kind == "pct":
        return f"{v:.2%}"
    if kind == "pt":
        return f"{v * 100:.2f} pt"
    return f"{v:.3g}"


def bucket_rows(result: Any) -> list[list[str]]:
    """One row per length bucket of a result (first output's metrics)."""
    rows = []
    for b in (result.per_length or {}).get("buckets", []):
        m = next(iter(b["outputs"].values()), {})
        rows.append([b["label"], str(b["samples"]), _fmt(m.get("max_abs")), _fmt(m.get("mean_abs")),
                     _fmt(m.get("agreement"), "pct"), str(m.get("flipped", "–")), _fmt(b.get("accuracy_drop"), "pt"),
                     bucket_cell(b)])
    return rows


def length_lines(report: Any) -> list[str]:
    """The terminal's per-length tables (nothing for a fixed-length reference)."""
    lengths = (report.reference or {}).get("lengths")
    if not lengths:
        return []
    lines = [f"per length bucket (reference lengths {lengths['min']}..{lengths['max']}, {lengths['distinct']} "
             "distinct; each length run on its own frames, never padded):"]
    for r in report.results:
        rows = bucket_rows(r)
        if not rows:
            continue
        table = [HEADER] + rows
        widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
        lines.append(f"  {Path(r.path).name} [{r.runner.get('runner', '?')}]")
        lines += ["    " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return lines


def length_section(report: Any, result: Any) -> str:
    """report.html: a result's gate per length bucket and its error-vs-length plot."""
    from optkit.release.svgplot import error_vs_length

    rows = bucket_rows(result)
    if not rows:
        return ""
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
    html = (f"<h4>Per length bucket</h4><table class='lengths'><tr>{head}</tr>{body}</table>"
            "<p class='note'>Buckets are chosen from the data (one per length when there are few, else ranges of "
            "about equal counts); a bucket with too few samples is shown but not judged.</p>")
    lengths, ref = report.sample_lengths, report.reference_values
    if lengths is not None and ref is not None and result.values is not None and result.values.shape == ref.shape:
        err = np.abs(result.values.astype(float) - ref.astype(float)).reshape(len(lengths), -1).max(axis=1)
        html += "<div class='plots'>" + error_vs_length(lengths, err) + "</div>"
    return html
