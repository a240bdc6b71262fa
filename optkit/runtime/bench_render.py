"""How ``optkit bench`` results are shown to people: one table, as terminal text or Markdown.

:mod:`optkit.runtime.bench` measures and builds the :class:`~optkit.runtime.bench.BenchReport`; this module only
renders it (the JSON form is ``BenchReport.to_json``).
"""
from __future__ import annotations

from typing import Any

from optkit.runtime.labels import runner_summary

SPINNING_NOTE = (
    "ONNX Runtime sessions run with session.intra_op.allow_spinning=0: spinning worker threads "
    "would keep the cores busy after each call and slow down the artifact timed next in this "
    "interleaved run."
)
INTERLEAVING_NOTE = (
    "Artifacts are called round-robin, one call of each per round, in the listed order; speed-ups "
    "are ratios within this one run (first artifact = 1.00)."
)

# the start of the note that says why a row has no speed-up (its inputs differ from the first's)
NO_RATIO_NOTE_START = "No speed-up for "


def request_pattern(idle_ms: float) -> str:
    """The request pattern of a bench run, in words."""
    if idle_ms > 0:
        return (f"one request at a time, each timed call preceded by an untimed {idle_ms:g} ms idle "
                "gap (thread pools wake up for every call, as in a lightly loaded service)")
    return "back-to-back calls, no idle gap between them (a saturated single-stream pattern)"


# (header, BenchResult -> value) of the numeric columns, shared by both renderers
_COLUMNS = [
    ("min ms", lambda r: r.stats.min_ms), ("p50 ms", lambda r: r.stats.p50_ms),
    ("p90 ms", lambda r: r.stats.p90_ms), ("p99 ms", lambda r: r.stats.p99_ms),
    ("mean ms", lambda r: r.stats.mean_ms),
]


def _ratio(r: Any, key: str, width: int = 0) -> str:
    """``1.23x``, or ``-`` where the artifact's inputs differ from the first's (no fair ratio)."""
    return (f"{r.speedup[key]:.2f}x" if r.speedup is not None else "-").rjust(width)


def _interface_notes(report: Any) -> list[str]:
    return [n for n in report.notes if n.startswith(NO_RATIO_NOTE_START)]


def _rows(report: Any, batch: int) -> list[Any]:
    return [r for r in report.results if r.batch == batch]


def table_lines(report: Any) -> list[str]:
    """The result table for people: one block per batch size."""
    cfg = report.config
    first = report.items[0]["label"] if report.items else ""
    lines = [
        f"Request pattern: {request_pattern(cfg.idle_ms)}.",
        f"Interleaved round-robin, {cfg.iterations} timed rounds after {cfg.warmup} "
        f"warm-up rounds; speed-up relative to {first}.",
    ]
    if any(str(i.get("runner", {}).get("runner", "")).startswith("onnxruntime") for i in report.items):
        lines.append("ONNX Runtime intra-op spinning: off (so it does not steal cores from the next artifact).")
    width = max([len("artifact")] + [len(i["label"]) for i in report.items])
    by_length = bool(getattr(cfg, "lengths", ()))
    head = (f"{'artifact':<{width}}  {'batch':>5}  " + ("length  " if by_length else "")
            + "  ".join(f"{h:>9}" for h, _ in _COLUMNS) + f"  {'samples/s':>10}  {'x min':>6}  {'x p50':>6}")
    for batch in cfg.batches:
        lines += ["", head]
        for r in _rows(report, batch):
            lines.append(f"{r.label:<{width}}  {batch:>5}  " + (f"{r.length:>6}  " if by_length else "")
                         + "  ".join(f"{get(r):>9.3f}" for _, get in _COLUMNS)
                         + f"  {r.stats.throughput_sps:>10.1f}  {_ratio(r, 'min', 6)}  {_ratio(r, 'p50', 6)}")
    lines.append("")
    if by_length:
        from optkit.runtime.bench_lengths import fit_lines

        lines += ["Speed-ups compare artifacts at the same length. Latency against length (least squares through "
                  "the p50s):", *fit_lines(report), ""]
    notes = _interface_notes(report)
    lines += [f"Note: {n}" for n in notes] + ([""] if notes else [])
    for item in report.items:
        lines.append(f"{item['label']}: {runner_summary(item.get('runner', {}))}")
    return lines


def markdown_lines(report: Any) -> list[str]:
    cfg = report.config
    first = report.items[0]["label"] if report.items else ""
    lines = [
        f"Request pattern: {request_pattern(cfg.idle_ms)}. Interleaved round-robin, "
        f"{cfg.iterations} timed rounds after {cfg.warmup} warm-up rounds; "
        f"speed-up relative to **{first}** in the same run.",
        "",
        "| artifact | runner | batch | " + " | ".join(h for h, _ in _COLUMNS) + " | samples/s | x (min) | x (p50) |",
        "|---|---|---:|" + "---:|" * len(_COLUMNS) + "---:|---:|---:|",
    ]
    runners = {i["label"]: runner_summary(i.get("runner", {})) for i in report.items}
    for batch in cfg.batches:
        for r in _rows(report, batch):
            lines.append(f"| {r.label} | {runners.get(r.label, '')} | {batch} | "
                         + " | ".join(f"{get(r):.2f}" for _, get in _COLUMNS)
                         + f" | {r.stats.throughput_sps:.1f} | {_ratio(r, 'min')} | {_ratio(r, 'p50')} |")
    notes = _interface_notes(report)
    return lines + (["", *notes] if notes else [])
