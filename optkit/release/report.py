"""report.json (machine-readable) and report.html (one self-contained file for reviewers).

The HTML page answers, in this order: the verdict (banner), the summary table (one row per
distinct result: identical results of several artifacts on one runtime are grouped), then
folding sections: task view (score distributions, DET curves, EER, FAR/FRR, flipped samples),
regression against the baseline release, latency, each artifact (size, MAC share, lineage, int8
search trials), each result (metrics and plots), skipped steps. Plots are inline SVG
(optkit.release.svgplot); nothing is fetched from a network. report.json holds every number shown.
"""
from __future__ import annotations

import contextlib
import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.fileio import AtomicFiles
from optkit.verification.verify import ArtifactResult, VerifyReport

e = html.escape


def _fmt(v: Any, kind: str = "g") -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)) and kind == "g":
        return str(v)
    v = float(v)
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
    if kind == "x":
        return f"{v:.2f}×"
    if kind == "ms":
        return f"{v:.2f}"
    return f"{v:.3g}"


def human_size(n: int | None) -> str:
    if n is None:
        return "–"
    from optkit.model.onnx_utils import human_size as hs

    return hs(int(n))


# -- what the page and the terminal share --------------------------------------------------------

def _rel(report: VerifyReport, i: int) -> dict[str, Any]:
    results = report.release.get("results") or []
    return results[i] if i < len(results) else {}


def _latency(report: VerifyReport, i: int) -> dict[str, Any] | None:
    bench = report.release.get("bench") or {}
    per = bench.get("per_result") or []
    return per[i] if i < len(per) else None


def _facts(report: VerifyReport, r: ArtifactResult) -> dict[str, Any]:
    return (report.release.get("facts") or {}).get(r.path) or {}


def groups(report: VerifyReport) -> list[list[int]]:
    g = report.release.get("groups")
    return g if g else [[i] for i in range(len(report.results))]


def _group_name(report: VerifyReport, idx: list[int]) -> str:
    return " = ".join(Path(report.results[i].path).name for i in idx)


def _regression_pair(report: VerifyReport, i: int) -> dict[str, Any] | None:
    reg = report.release.get("regression") or {}
    for p in reg.get("pairs", []):
        if p["result"] == i:
            return p
    return None


def _first(r: ArtifactResult) -> dict[str, Any]:
    return next(iter(r.outputs.values()), {})


def _int8_share(f: dict[str, Any]) -> float | None:
    share = (f.get("macs") or {}).get("share") or {}
    return share.get("int8")


SUMMARY_HEADER = ["artifact", "precision", "runtime", "size", "int8 MACs", "agreement", "flipped", "accuracy",
                  "EER", "p50 ms", "speed-up", "vs baseline", "gate"]


def summary_rows(report: VerifyReport) -> list[list[str]]:
    """One row per group of identical results (see release.group_results)."""
    rows = []
    for idx in groups(report):
        i = idx[0]
        r = report.results[i]
        f = _facts(report, r)
        m = _first(r)
        lat = _latency(report, i)
        pair = _regression_pair(report, i)
        if pair is None:
            vs = "–"
        elif pair["status"] != "compared":
            vs = "new"
        else:
            n = len(pair.get("changed") or [])
            vs = f"{n} changed" + ("" if pair["passed"] else " ✗")
        runtime = _rel(report, i).get("runtime") or str(r.runner.get("runner", "?"))
        size = " / ".join(dict.fromkeys(human_size(_facts(report, report.results[k]).get("size")) for k in idx))
        rows.append([
            _group_name(report, idx), r.precision, runtime, size,
            _fmt(_int8_share(f), "pct") if f.get("macs") else "–",
            # an embedding has no decisions: its mean per-sample cosine stands in for agreement
            _fmt(m.get("agreement"), "pct") if m.get("agreement") is not None or m.get("kind") != "embedding"
            else "cos " + _fmt(m.get("sample_cosine_mean"), "cos"), _fmt(m.get("flipped")),
            _fmt(r.task["accuracy"], "pct") if r.task else "–",
            _fmt(r.task["eer"], "pct") if r.task else "–",
            _fmt(lat["p50_ms"], "ms") if lat else "–",
            _fmt((lat.get("vs_fp32") or {}).get("p50"), "x") if lat else "–",
            vs,
            "PASS" if r.passed else "FAIL",
        ])
    return rows


def format_table(report: VerifyReport) -> str:
    """The terminal view: the summary table and the lines a reviewer must not miss."""
    from optkit.release.regression import failures as regression_failures

    rows = [SUMMARY_HEADER] + summary_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(SUMMARY_HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if report.reference_task:
        t = report.reference_task
        lines.append(f"PyTorch reference: accuracy {t['accuracy']:.2%}, EER {t['eer']:.2%}, "
                     f"FAR {t['far']:.2%}, FRR {t['frr']:.2%} at threshold {t['threshold']}")
    bench = report.release.get("bench") or {}
    if bench.get("error"):
        lines.append(f"latency not measured: {bench['error']}")
    elif bench:
        lines.append("speed-up: p50 of the first fp32 artifact on the same runtime / p50 of this one "
                     "(one interleaved run)")
    for s in report.skipped:
        lines.append(f"SKIPPED {s['step']} ({s['pass']}): {s['reason']}")
    for r in report.results:
        for f in r.failures:
            lines.append(f"FAIL {Path(r.path).name} [{r.runner.get('runner', '?')}]: {f}")
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
    from optkit.release.report_lengths import length_lines

    lines += length_lines(report)
    reg = report.release.get("regression")
    if reg:
        compared = [p for p in reg["pairs"] if p["status"] == "compared"]
        changed = sum(len(p.get("changed") or []) for p in compared)
        lines.append(f"vs baseline {reg['baseline']}: {len(compared)} result(s) compared, {changed} decision(s) "
                     f"changed in total; {'no regression' if reg['passed'] else 'REGRESSION'} "
                     f"(limits: {reg['limits_text']})")
        lines += [f"REGRESSION {m}" for m in regression_failures(reg)]
        lines += [f"  note: {n}" for n in reg.get("notes", [])]
    if report.release.get("capacity"):
        from optkit.release.capacity import lines as capacity_lines

        lines += capacity_lines(report.release["capacity"])
    return "\n".join(lines)


# -- report.json -------------------------------------------------------------------------------

def report_json(report: VerifyReport) -> dict[str, Any]:
    """Everything the HTML shows, plus per-sample scores (what a later release compares with)."""
    from optkit.verification.task_metrics import json_safe
    from optkit.release.view import compact_scores

    d = report.to_json()
    rel = report.release
    d["gates_passed"] = report.gates_passed
    d["reference"]["scores"] = compact_scores(report.reference_values)
    d["reference"]["labels"] = rel.get("reference_labels")
    if report.sample_lengths is not None:  # a mixed-length reference: each sample's length, in order
        d["reference"]["sample_lengths"] = report.sample_lengths.tolist()
    bench = rel.get("bench") or {}
    # facts once per artifact file (not per runtime), without absolute paths: an artifact's "facts"
    # is its index in this list, so two reports of the same files in different directories agree
    fact_paths = list(rel.get("facts") or {})
    d["facts"] = [{k: v for k, v in rel["facts"][p].items() if k != "path"} for p in fact_paths]
    for i, (a, r) in enumerate(zip(d["artifacts"], report.results)):
        per = _rel(report, i)
        a["facts"] = fact_paths.index(r.path) if r.path in fact_paths else None
        a["step"] = per.get("step")
        a["sha256"] = _facts(report, r).get("sha256")
        a["runtime"] = per.get("runtime")
        a["runtime_text"] = per.get("runtime_text")
        a["precision_text"] = per.get("precision_text")
        a["flipped_samples"] = per.get("flipped_samples")
        a["latency"] = _latency(report, i)
        a["scores"] = compact_scores(r.values)
    d["groups"] = rel.get("groups")
    d["bench"] = bench.get("run") if bench and "run" in bench else (bench or None)
    d["regression"] = rel.get("regression")
    d["capacity"] = rel.get("capacity")
    return json_safe(d)


def write_reports(report: VerifyReport, out_dir: str | Path, files: AtomicFiles | None = None) -> tuple[Path, Path]:
    """report.json and report.html, which appear together or not at all (with ``files``: when the
    caller commits them, with its other outputs)."""
    out_dir = Path(out_dir)
    with contextlib.nullcontext(files) if files is not None else AtomicFiles() as f:
        j = f.write_json(out_dir / "report.json", report_json(report))
        h = f.write_text(out_dir / "report.html", render_html(report))
    return j, h


# -- HTML --------------------------------------------------------------------------------------

_NUMERIC = re.compile(r"^[-+]?[\d.,]+( ?(%|×|ms|KiB|MiB|GiB|B|pt))?( |$)|^–$")


def _table(head: list[str], rows: list[list[str]], cls: str = "", raw: bool = False, tid: str = "") -> str:
    """rows are escaped unless ``raw`` (cells already HTML)."""
    h = f"<thead><tr>{''.join(f'<th>{e(c)}</th>' for c in head)}</tr></thead>" if head else ""
    body = "".join("<tr>" + "".join(f"<td{' class=n' if _NUMERIC.match(c) else ''}>{c if raw else e(c)}</td>" for c in row)
                   + "</tr>" for row in rows)
    attrs = (f' class="{cls}"' if cls else "") + (f' id="{tid}"' if tid else "")
    return f"<table{attrs}>{h}<tbody>{body}</tbody></table>"


def _details(title: str, body: str, open_: bool = False, sid: str = "") -> str:
    return (f"<details{' open' if open_ else ''}{f' id={chr(34)}{sid}{chr(34)}' if sid else ''}>"
            f"<summary>{title}</summary><div class='inner'>{body}</div></details>")


def _banner(report: VerifyReport) -> str:
    from optkit.release.regression import failures as regression_failures

    n_art = len({r.path for r in report.results})
    runtimes = sorted({_rel(report, i).get("runtime") or str(r.runner.get("runner")) for i, r in enumerate(report.results)})
    failed = [r for r in report.results if not r.passed]
    lines = []
    if failed:
        for r in failed[:6]:
            lines.append(f"{Path(r.path).name} [{r.runner.get('runner', '?')}]: {'; '.join(r.failures)}")
    reg = report.release.get("regression")
    reg_text = ""
    if reg:
        compared = [p for p in reg["pairs"] if p["status"] == "compared"]
        changed = sum(len(p.get("changed") or []) for p in compared)
        where = Path(str(reg["baseline"]))
        reg_text = (f" Against the baseline ({e(str(Path(*where.parts[-2:])))}): "
                    f"{len(compared)} results compared, {changed} decisions changed, "
                    f"{'no regression' if reg['passed'] else '<b>regression</b>'}.")
        lines += ["regression: " + m for m in regression_failures(reg)[:6]]
    verdict = "PASSED" if report.passed else "FAILED"
    gates = ("all gates passed" if report.gates_passed
             else f"{len(failed)} of {len(report.results)} results failed their gate")
    skipped = f", {len(report.skipped)} step(s) skipped" if report.skipped else ""
    items = "".join(f"<li>{e(x)}</li>" for x in lines)
    cls = "ok" if report.passed else "bad"
    return (f'<div id="verdict" class="banner {cls}"><b>{verdict}</b> — '
            f"{n_art} artifact(s) × {len(runtimes)} runtime(s) ({e(', '.join(runtimes))}): {gates}{skipped}.{reg_text}"
            f"{f'<ul>{items}</ul>' if items else ''}</div>")


def _reference_line(report: VerifyReport) -> str:
    ref = report.reference
    ident = ref.get("identity") or {}
    t = report.reference_task
    task = (f"PyTorch on it: accuracy {_fmt(t['accuracy'], 'pct')}, EER {_fmt(t['eer'], 'pct')} "
            f"(at {_fmt(t['eer_threshold'])}), FAR {_fmt(t['far'], 'pct')} / FRR {_fmt(t['frr'], 'pct')} at {report.threshold:g}; "
            f"{t['targets']} targets, {t['impostors']} impostors." if t else "No labels: no task metrics.")
    return (f"<p class='ref'>Reference: <code>{e(Path(str(ref.get('path', ''))).name)}</code>, {ref.get('samples')} samples"
            f"{', labelled' if ref.get('labels') else ''} (inputs sha256 <code>{e(str(ident.get('inputs_sha256', ''))[:16])}</code>); "
            f"decision threshold {report.threshold:g}. {task}</p>")


def _task_section(report: VerifyReport) -> str:
    from optkit.release.svgplot import det_plot, score_distribution
    from optkit.verification.taskview import score_histogram

    labels = report.release.get("reference_labels")
    if labels is None or report.reference_values is None:
        return ""
    y = np.asarray(labels)
    ref = report.reference_values
    lo, hi = (0.0, 1.0) if ref.min() >= 0 and ref.max() <= 1 else (float(ref.min()), float(ref.max()))
    t = report.reference_task or {}
    rows = [["PyTorch (reference)", "–", _fmt(t.get("accuracy"), "pct"), _fmt(t.get("eer"), "pct"),
             _fmt(t.get("eer_threshold")), _fmt(t.get("far"), "pct"), _fmt(t.get("frr"), "pct"), "–"]]
    curves = [{"label": "PyTorch", "far": report.release["reference_det"]["far"],
               "frr": report.release["reference_det"]["frr"], "eer": t.get("eer"),
               "op": (t.get("far"), t.get("frr"))}]
    dists = [score_distribution(score_histogram(ref, y, lo=lo, hi=hi), "PyTorch reference", report.threshold)]
    flips_html = []
    for idx in groups(report):
        i = idx[0]
        r = report.results[i]
        per = _rel(report, i)
        if r.task is None or r.values is None:
            continue
        name = f"{_group_name(report, idx)} · {per.get('runtime', '')}"
        tk = r.task
        rows.append([name, r.precision, _fmt(tk["accuracy"], "pct"), _fmt(tk["eer"], "pct"), _fmt(tk["eer_threshold"]),
                     _fmt(tk["far"], "pct"), _fmt(tk["frr"], "pct"), str(len(per.get("flipped_samples") or []))])
        if per.get("det"):
            curves.append({"label": f"{r.precision} {Path(r.path).name} · {per.get('runtime', '')}",
                           "far": per["det"]["far"], "frr": per["det"]["frr"], "eer": tk["eer"],
                           "op": (tk["far"], tk["frr"])})
        dists.append(score_distribution(score_histogram(r.values, y, lo=lo, hi=hi), f"{r.precision} · {per.get('runtime', '')}",
                                        report.threshold))
        flips = per.get("flipped_samples") or []
        if flips:
            frows = [[str(f["index"]), *([str(f["length"])] if "length" in f else []), f.get("label", "–"),
                      _fmt(f["reference_score"], "cos"), _fmt(f["score"], "cos"),
                      "accept" if f["accepts"] else "reject", ("yes" if f.get("correct") else "no") if "correct" in f else "–"]
                     for f in flips[:100]]
            fhead = ["sample", *(["length"] if "length" in flips[0] else []), "label", "PyTorch score",
                     "artifact score", "artifact decides", "correct now"]
            more = f"<p>… and {len(flips) - 100} more (all in report.json)</p>" if len(flips) > 100 else ""
            flips_html.append(f"<h4>{e(name)}: {len(flips)} flipped</h4>"
                              + _table(fhead, frows, "flips") + more)
    body = (_table(["artifact · runtime", "precision", "accuracy", "EER", "EER threshold", f"FAR at {report.threshold:g}",
                    f"FRR at {report.threshold:g}", "flipped vs PyTorch"], rows, tid="task-table")
            + "<div class='plots'>" + det_plot(curves) + "<p class='note'>DET: each curve sweeps the threshold over "
            "the scores; axes on the normal-deviate (probit) scale; circles mark the operating threshold "
            f"{report.threshold:g}. Identical results are drawn once.</p></div>"
            + "<h3>Score distributions</h3><div class='plots wrap'>" + "".join(dists) + "</div>"
            + "<h3>Samples whose decision flipped (vs PyTorch)</h3>"
            + ("".join(flips_html) or "<p>None: every artifact takes PyTorch's decision on every sample.</p>"))
    return _details("Task view: scores, DET curves, EER, FAR/FRR, flipped samples", body, open_=True, sid="task")


def _regression_section(report: VerifyReport) -> str:
    reg = report.release.get("regression")
    if not reg:
        return ""
    rows = []
    changed_html = []
    for p in reg["pairs"]:
        if p["status"] != "compared":
            rows.append([e(p["artifact"]), e(str(p["runtime"])), "–", "new (no counterpart)", "–", "–", "–", "–", "–"])
            continue
        d = p.get("deltas") or {}
        lat = (p.get("latency") or {}).get("p50_ms")

        def delta(k: str, kind: str = "pct") -> str:
            if k not in d:
                return "–"
            dv = d[k]["delta"]
            return f"{_fmt(d[k]['now'], kind)} ({'+' if dv >= 0 else ''}{dv * 100:.2f} pt)" if kind == "pct" else _fmt(dv)

        ok = "<span class='pass'>ok</span>" if p["passed"] else "<span class='fail'>REGRESSION</span>"
        rows.append([e(p["artifact"]), e(str(p["runtime"])), e(f"{p['baseline_artifact']} ({p['matched_by']})"),
                     str(len(p.get("changed") or [])), delta("accuracy"), delta("eer"), delta("agreement"),
                     f"{lat['baseline']:.2f} → {lat['now']:.2f} ms ({(lat['ratio'] - 1) * 100:+.1f}%)" if lat else "–", ok])
        if p.get("changed"):
            crow = [[str(c["index"]), c.get("label", "–"), _fmt(c.get("pytorch_score"), "cos"), _fmt(c["reference_score"], "cos"),
                     _fmt(c["score"], "cos"), "accept" if c["accepts"] else "reject",
                     ("yes" if c.get("correct") else "no") if "correct" in c else "–"] for c in p["changed"][:100]]
            more = f"<p>… and {len(p['changed']) - 100} more (all in report.json)</p>" if len(p["changed"]) > 100 else ""
            changed_html.append(f"<h4>{e(p['artifact'])} [{e(str(p['runtime']))}]: {len(p['changed'])} decision(s) changed</h4>"
                                + _table(["sample", "label", "PyTorch score", "baseline score", "score now", "decides now",
                                          "correct now"], crow, "flips") + more)
        fails = [c["message"] for c in p.get("checks", []) if not c["passed"]]
        if fails:
            changed_html.append("<ul class='failures'>" + "".join(f"<li>{e(p['artifact'])}: {e(m)}</li>" for m in fails) + "</ul>")
    dropped = ", ".join(f"{e(x['artifact'])} [{e(str(x['runtime']))}]" for x in reg.get("not_in_this_release", []))
    body = (f"<p>Baseline: <code>{e(str(reg['baseline']))}</code> (created {e(str(reg.get('baseline_created')))}). "
            f"Limits: {e(reg['limits_text'])}.<br>{e(reg['matching'])}</p>"
            + _table(["artifact", "runtime", "counterpart (matched by)", "decisions changed", "accuracy",
                      "EER (Δ)", "agreement w/ PyTorch", "p50 latency", "verdict"], rows, raw=True, tid="regression-table")
            + "".join(changed_html)
            + (f"<p>In the baseline but not compared here: {dropped}.</p>" if dropped else "")
            + "".join(f"<p class='note'>{e(n)}</p>" for n in reg.get("notes", [])))
    title = "Regression against the baseline release: " + ("no regression" if reg["passed"] else "REGRESSION")
    return _details(e(title), body, open_=True, sid="regression")


def _latency_section(report: VerifyReport) -> str:
    bench = report.release.get("bench")
    if not bench:
        return ""
    if bench.get("error"):
        return _details("Latency: not measured", f"<p>{e(bench['error'])}</p>", sid="latency")
    run = bench.get("run") or {}
    rows, seen = [], set()
    for i, r in enumerate(report.results):
        lat = _latency(report, i)
        if not lat or lat["label"] in seen:
            continue
        seen.add(lat["label"])
        vf, vo = lat.get("vs_fp32") or {}, lat.get("vs_ort_fp32") or {}
        rows.append([Path(r.path).name, r.precision, _rel(report, i).get("runtime", ""), _fmt(lat["min_ms"], "ms"),
                     _fmt(lat["p50_ms"], "ms"), _fmt(lat["p90_ms"], "ms"),
                     f"{_fmt(vf.get('min'), 'x')} / {_fmt(vf.get('p50'), 'x')}" if vf else "–",
                     f"{_fmt(vo.get('min'), 'x')} / {_fmt(vo.get('p50'), 'x')}" if vo else "–"])
    cfg = run.get("config") or {}
    env = run.get("environment") or {}
    cpu = env.get("cpu") or {}
    cpu = cpu if isinstance(cpu, dict) else {"model": str(cpu)}
    feats = ", ".join(x for x in (f"{cpu['logical_cpus']} logical CPUs" if cpu.get("logical_cpus") else "",
                                  f"int8 acceleration: {cpu['int8_acceleration']}" if cpu.get("int8_acceleration") else "",
                                  " ".join(cpu.get("flags") or [])) if x)
    fp32_of = next((lat.get("vs_fp32", {}).get("of") for i in range(len(report.results)) if (lat := _latency(report, i))), "")
    body = (_table(["artifact", "precision", "runtime", "min ms", "p50 ms", "p90 ms", "× vs fp32, same runtime (min / p50)",
                    "× vs ONNX Runtime CPU fp32 (min / p50)"], rows, tid="latency-table")
            + f"<p class='note'>Batch {cfg.get('batches', [1])[0]}, {cfg.get('iterations')} timed rounds after "
              f"{cfg.get('warmup')} warm-up rounds, every artifact/runtime pair called round-robin in one process "
              f"(ratios are fair on a busy machine; absolute times are not). fp32 baseline: {e(str(fp32_of))}. "
              f"{e((run.get('request_pattern') or {}).get('description', ''))}. "
              f"CPU: {e(str(cpu.get('model', '?')))}"
              f"{f' ({e(feats)})' if feats else ''}.</p>")
    return _details("Latency (interleaved benchmark)", body, open_=False, sid="latency")


def _capacity_section(report: VerifyReport) -> str:
    cap = report.release.get("capacity")
    if not cap:
        return ""
    from optkit.release.capacity import heading, table

    head, rows = table(cap)
    body = (_table(head, rows, tid="capacity-table")
            + "<p class='note'>Highest request rate whose p99 kept the SLO (open-loop fixed-rate steps, bisection, "
              "confirmed by a repeat; '?' not confirmed, '+' a lower bound); nodes = ceil(target / rate × (1 + "
              f"headroom)); 'this release': the served artifact's sha256 is one of this report's. "
              f"{e(cap.get('machine_text') or '')}</p>")
    return _details(e(heading(cap)), body, open_=True, sid="capacity")


def _mac_bar(share: dict[str, float], width: int = 300) -> str:
    colors = {"int8": "#2ca02c", "fp16": "#1f77b4", "fp32": "#999"}
    x = 0.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="34" role="img" data-plot="mac-share" '
             'font-family="system-ui,sans-serif"><title>share of MACs per precision</title>']
    for k in ("int8", "fp16", "fp32"):
        w = float(share.get(k) or 0) * width
        if w > 0:
            parts.append(f'<rect x="{x:.1f}" y="2" width="{w:.1f}" height="14" fill="{colors[k]}"/>')
        x += w
    lx = 0
    for k in ("int8", "fp16", "fp32"):
        parts.append(f'<rect x="{lx}" y="22" width="10" height="9" fill="{colors[k]}"/>'
                     f'<text x="{lx + 13}" y="31" font-size="10">{k} {float(share.get(k) or 0) * 100:.1f}%</text>')
        lx += 95
    parts.append("</svg>")
    return "".join(parts)


def _lineage_table(facts: dict[str, dict[str, Any]]) -> str:
    """Every step that made any reported artifact, once, with its parameters (from manifest.json)."""
    steps: dict[str, dict[str, Any]] = {}
    parent_of: dict[str, str] = {}
    for f in facts.values():
        chain = f.get("lineage") or []
        for k, st in enumerate(chain):
            steps.setdefault(st["step"], st)
            if k:
                parent_of[st["step"]] = chain[k - 1]["step"]
    if not steps:
        return ""
    rows = []
    for name, st in steps.items():
        cfg = dict(st.get("config") or {})
        src = parent_of.get(name) or (f"PyTorch {cfg.get('model')}" if cfg.get("model") else "–")
        params = e(_config_text(cfg))
        if st.get("chosen"):
            params += f"<br><b>search chose:</b> {e(_config_text(st['chosen']))}"
        rows.append([e(name), e(str(st.get("pass"))), e(str(st.get("precision"))), e(src),
                     f"<code>{e(st['file'])}</code>", f"<span class='cfg'>{params}</span>"])
    return ("<p>Lineage, from the manifest.json beside the artifacts: each step, what it was made from, "
            "and its parameters.</p>" + _table(["step", "pass", "precision", "made from", "file", "parameters"],
                                               rows, "lineage", raw=True, tid="lineage"))


def _config_text(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in cfg.items()) or "defaults"


def _artifact_section(f: dict[str, Any]) -> str:
    if f.get("error"):
        return f"<h3>{e(f.get('file', '?'))}</h3><p>{e(f['error'])}</p>"
    macs = f.get("macs") or {}
    rows = [["file", f"<code>{e(f['file'])}</code>"], ["precision", e(f["precision"])], ["size", e(human_size(f["size"]))],
            ["nodes", e(_fmt(f.get("nodes")))], ["sha256", f"<code>{e(f['sha256'][:16])}…</code>"]]
    if f.get("step"):
        rows.insert(1, ["recipe step", e(f["step"])])
    if macs.get("error"):
        rows.append(["MACs", e(macs["error"])])
    elif macs:
        from optkit.model.macs import describe_share

        rows.append(["MACs per sample", e(describe_share(macs)) + "<br>" + _mac_bar(macs.get("share") or {})])
        heavy = macs.get("unquantized_heavy_nodes") or []
        if heavy and f["precision"] == "int8":
            names = [h.get("name", str(h)) if isinstance(h, dict) else str(h) for h in heavy[:8]]
            rows.append(["heavy nodes not in int8", e(", ".join(names)) + (" …" if len(heavy) > 8 else "")])
    if f.get("lineage"):
        root = (f["lineage"][0].get("config") or {}).get("model")
        chain = ([f"PyTorch <code>{e(str(root))}</code>"] if root else []) + [
            f"<b>{e(str(st['pass']))}</b> ({e(st['step'])})" for st in f["lineage"]]
        rows.append(["lineage", " → ".join(chain) + " <span class='note'>(parameters in the lineage table above)</span>"])
    elif f.get("lineage_note"):
        rows.append(["lineage", e(f["lineage_note"])])
    parts = [f"<h3>{e(f['file'])}</h3>", _table([], rows, "facts", raw=True)]
    search = f.get("int8_search")
    if search:
        parts.append(_trials_table(search))
    return "".join(parts)


TRIAL_COLUMNS = ("name", "change", "method", "excluded_nodes", "equalized", "agreement", "mean_abs_dp", "accuracy",
                 "int8_mac_share", "fp16_mac_share", "passed")


def _trials_table(search: dict[str, Any]) -> str:
    trials = search.get("trials") or []
    chosen = search.get("chosen")
    rows = []
    for k, t in enumerate(trials):
        cells = []
        for c in TRIAL_COLUMNS:
            v = t.get(c)
            if c in ("agreement", "accuracy", "int8_mac_share", "fp16_mac_share"):
                cells.append(e(_fmt(v, "pct")))
            elif c == "excluded_nodes":
                cells.append(e(", ".join(map(str, v)) if isinstance(v, list) and v else ("none" if isinstance(v, list) else _fmt(v))))
            elif c == "passed":
                cells.append("<span class='pass'>pass</span>" if v else ("<span class='fail'>fail</span>" if v is not None else "–"))
            else:
                cells.append(e(_fmt(v)))
        mark = "✔ chosen" if chosen == k else ""
        rows.append([e(str(k)), *cells, mark])
    val = search.get("validation_description") or search.get("validation")
    val_text = val if isinstance(val, str) else json.dumps(val) if val is not None else "–"
    return (f"<p>int8 search: {len(trials)} trial(s), validated on {e(str(val_text))}.</p>" + _split_text(search)
            + _table(["#", *[c.replace("_", " ") for c in TRIAL_COLUMNS], ""], rows, "trials", raw=True)
            + _search_latency(search.get("latency")) + _recommendation(search.get("recommendation")))


def _recommendation(rec: Any) -> str:
    """The int8 search's plain answer (optkit.quantization.answer): what to ship, measured."""
    if not isinstance(rec, dict) or not rec.get("line"):
        return ""
    cls = "pass" if rec.get("ship") == "int8" else "fail"
    return f"<p>recommendation: <span class='{cls}'>{e(str(rec['line']))}</span></p>"


def _split_text(search: dict[str, Any]) -> str:
    """The search's validation split (classes per part, warnings) and its outputs' kinds."""
    from optkit.quantization.split import class_line

    parts = []
    split = search.get("split")
    if isinstance(split, dict):
        by = split.get("stratified_by")
        seed = split.get("seed")
        classes = split.get("classes") or {}
        parts.append(f"Split: samples in content order (sha256), "
                     + (f"validation drawn at random (seed {seed}), " if seed is not None else "")
                     + (f"classes by {by}: {class_line(classes)}" if by and classes else "not stratified") + ".")
        parts += [f"⚠ {w}" for w in split.get("warnings") or []]
    kinds = search.get("output_kinds")
    if isinstance(kinds, dict) and kinds:
        parts.append("Outputs: " + "; ".join(f"{n}: {k.get('kind')} ({k.get('why')})" for n, k in kinds.items()) + ".")
    return "".join(f"<p class='note'>{e(p)}</p>" for p in parts)


def _search_latency(lat: Any) -> str:
    """The int8 search's own latency check: fp32 vs plain int8 vs the chosen model (one interleaved run)."""
    if not isinstance(lat, dict):
        return ""
    if lat.get("error"):
        return f"<p class='note'>int8 search latency: not measured ({e(str(lat['error']))}).</p>"
    models = lat.get("models") or []
    sp = lat.get("speedup") or {}
    if not models:
        return ""

    def x(d: Any, k: str) -> str:
        return _fmt(d.get(k), "x") if isinstance(d, dict) else "–"

    rows = []
    for r in models:
        name = str(r.get("model"))
        if r.get("trial") is not None:
            name += f" (trial {r['trial']})"
        if name.startswith("plain int8") and lat.get("chosen_is_plain"):
            name += " = chosen"
        vs = sp.get("plain_vs_fp32") if r.get("model") == "plain int8" else (
            sp.get("chosen_vs_fp32") if r.get("model") == "chosen" else None)
        kept = sp.get("chosen_kept_of_plain") if r.get("model") == "chosen" else None
        rows.append([name, str(r.get("file")), _fmt(r.get("min_ms"), "ms"), _fmt(r.get("p50_ms"), "ms"),
                     x(vs, "min") if vs else "1.00×", x(vs, "p50") if vs else "1.00×",
                     (f"{100 * kept['min']:.0f} % / {100 * kept['p50']:.0f} %" if kept else "–")])
    return (f"<p>Latency of the search's result ({e(str(lat.get('runtime')))}, batch {e(str(lat.get('batch')))}, "
            f"{e(str(lat.get('warmup')))} warm-up + {e(str(lat.get('rounds')))} timed rounds, all models interleaved "
            "in one run when the model was made):</p>"
            + _table(["model", "file", "min ms", "p50 ms", "vs fp32 (min)", "vs fp32 (p50)",
                      "share of plain int8's speed-up kept (min / p50)"], rows, "trials"))


def _gate_text(r: ArtifactResult) -> str:
    """The limits of ``r``'s gate that applied to its outputs' kinds (output_kinds.KIND_LIMITS)."""
    return ", ".join(f"{k}={v:g}" for k, v in r.applied_gate().items()) or "none"


def _result_section(report: VerifyReport, idx: list[int]) -> str:
    from optkit.release.svgplot import error_histogram, scatter

    i = idx[0]
    r = report.results[i]
    per = _rel(report, i)
    status = '<span class="pass">PASS</span>' if r.passed else '<span class="fail">FAIL</span>'
    gate = _gate_text(r)
    same = (f"<p class='note'>{len(idx)} artifacts give bit-identical outputs on this runtime; shown once.</p>"
            if len(idx) > 1 else "")
    rows = [[name, e(str(m.get("kind", "–"))), _fmt(m["max_abs"]), _fmt(m["mean_abs"]), _fmt(m["max_rel"]),
             _fmt(m["cosine"], "cos"),
             _fmt(m.get("sample_cosine_min"), "cos") + " / " + _fmt(m.get("sample_cosine_mean"), "cos")
             if m.get("kind") == "embedding" else "–",
             _fmt(m["snr_db"], "db"), _fmt(m["agreement"], "pct"), _fmt(m["flipped"])] for name, m in r.outputs.items()]
    parts = [f"<h3>{e(_group_name(report, idx))} on {e(per.get('runtime') or str(r.runner.get('runner')))} — {status}</h3>", same,
             f"<p>Ran on: {e(per.get('runtime_text') or str(r.runner))}.<br>Precision: {e(per.get('precision_text') or r.precision)}."
             f"<br>Gate ({e(r.precision)}): {e(gate)}."
             f"{'' if r.accuracy_drop is None else f' Accuracy drop vs PyTorch: {r.accuracy_drop * 100:.2f} points.'}</p>",
             _table(["output", "kind", "max |Δ|", "mean |Δ|", "max rel", "cosine", "per-sample cosine (min / mean)",
                     "SNR dB", "agreement", "flipped"], rows)]
    if r.failures:
        parts.append("<ul class='failures'>" + "".join(f"<li>{e(f)}</li>" for f in r.failures) + "</ul>")
    for what, d in r.data_decisions.items():
        parts.append(f"<p class='note'>{e(what.replace('_', ' '))}: {e(str(d.get('action')))} "
                     f"{e(str(d.get('values')))} value(s) outside {e(str(d.get('bounds')))} "
                     f"in {e(', '.join(map(str, d.get('samples', []))))}</p>")
    if r.values is not None and report.reference_values is not None and r.values.shape == report.reference_values.shape:
        parts.append("<div class='plots'>" + scatter(report.reference_values, r.values, report.threshold)
                     + error_histogram(r.values.astype(float) - report.reference_values.astype(float)) + "</div>")
    from optkit.release.report_lengths import length_section

    parts.append(length_section(report, r))
    loc = r.localization
    if loc:
        if loc.get("layers"):
            keys = list(loc["layers"][0].keys())[:6]
            body = [[_fmt(l.get(k)) for k in keys] for l in loc["layers"][:15]]
            parts.append("<h4>Where the error first grows</h4>" + _table(keys, body))
        elif loc.get("error"):
            parts.append(f"<p>Error localisation: {e(loc['error'])}</p>")
    return "<section class='result'>" + "".join(parts) + "</section>"


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1180px;color:#222;padding:0 1em}
h1{font-size:1.4em;margin:.2em 0} h3{margin:.9em 0 .3em} h4{margin:.8em 0 .2em;font-size:.95em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#080;font-weight:bold} .fail{color:#c00;font-weight:bold}
.banner{padding:.8em 1em;border-radius:6px;font-size:15px;margin:.6em 0} .banner ul{margin:.4em 0 0;font-size:13px}
.banner.ok{background:#e6f4e6;border:2px solid #3a3} .banner.bad{background:#fbe9e9;border:2px solid #c33}
.banner b{font-size:1.15em}
details{border:1px solid #ddd;border-radius:5px;margin:.8em 0;padding:.3em .8em}
summary{font-weight:bold;cursor:pointer;padding:.2em 0;font-size:1.05em}
.plots{display:flex;gap:1.2em;align-items:flex-start;flex-wrap:wrap} .note{color:#555;font-size:12px;max-width:60em}
code{font-size:12px} .cfg{color:#555;font-size:12px} section.result{border-top:1px solid #eee;margin-top:1em}
table.facts td:first-child{color:#555;white-space:nowrap} table.facts td.n{text-align:left} .ref{font-size:13px}
td.n{white-space:nowrap} #summary td:not(:first-child){white-space:nowrap} p.skipped{font-size:13px;color:#444} section.result p,details p,details li{font-size:13px}
"""


def render_html(report: VerifyReport) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    summary = _table(SUMMARY_HEADER, summary_rows(report), "summary", tid="summary")
    facts = report.release.get("facts") or {}
    art_sections = _lineage_table(facts) + "".join(_artifact_section(f) for f in facts.values())
    results = "".join(_result_section(report, idx) for idx in groups(report))
    skipped = "".join(f"<p class='skipped'><b>Skipped</b> step {e(s['step'])} ({e(s['pass'])}): {e(str(s['reason']))}</p>" for s in report.skipped)
    grouped = sum(len(g) - 1 for g in groups(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optkit release report — {verdict}</title>
<style>{CSS}</style></head><body>
<h1>optkit release report</h1>
{_banner(report)}
<h2>Summary</h2>
{summary}
<p class='note'>One row per distinct result{f' ({grouped} identical result(s) grouped: bit-identical outputs on the same runtime)' if grouped else ''}.
agreement/flipped: decisions at threshold {report.threshold:g} compared with PyTorch; speed-up: p50 of the first fp32 artifact on the same runtime / this p50.</p>
{_reference_line(report)}
{skipped}
{_task_section(report)}
{_regression_section(report)}
{_latency_section(report)}
{_capacity_section(report)}
{_details(f"Artifacts: size, MACs, lineage ({len(facts)})", art_sections, sid="artifacts") if facts else ""}
{_details(f"Results per artifact and runtime ({len(groups(report))})", results, sid="results")}
<p class='note'>Created {e(report.created)}; provider(s) {e(report.provider)}; versions: {e(', '.join(f'{k} {v}' for k, v in report.versions.items()))}.</p>
</body></html>
"""
