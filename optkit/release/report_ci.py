"""Verification results for CI and review: JUnit XML and a short Markdown summary.

JUnit: one test case per artifact × runtime × gate limit (each limit of the precision's gate,
checked alone, so a CI page shows which limit failed), one per regression check against the
baseline, and a skipped test case per recipe step that could not run here. The Markdown summary
is the verdict, the summary table and the failures: short enough for a pull-request comment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from optkit.common.fileio import AtomicFiles, write_text_atomically
from optkit.verification.verify import Gate, VerifyReport

LIMIT_TEXT = {
    "max_abs": "max |diff| <= {:g}", "mean_abs": "mean |diff| <= {:g}", "min_agreement": "decision agreement >= {:.2%}",
    "min_cosine": "cosine >= {:g}", "min_snr_db": "SNR >= {:g} dB", "max_accuracy_drop": "accuracy drop <= {:.2%}",
    "min_sample_cosine": "worst per-sample cosine >= {:g}", "min_mean_cosine": "mean per-sample cosine >= {:g}",
    "max_eer_increase": "trial EER increase <= {:.2%}",
}


def junit_cases(report: VerifyReport) -> list[dict[str, Any]]:
    """Test cases as dicts: classname, name, time, failure (message or None), skipped (reason or None)."""
    from optkit.runtime.labels import runtime_label

    cases: list[dict[str, Any]] = []
    for r in report.results:
        runtime = runtime_label(r.runner)
        cls = Path(r.path).name
        limits = r.applied_gate()  # the limits that mean something for its outputs' kinds
        if not limits:
            limits = {"finite": None}
        per_case_time = r.seconds / max(1, len(limits))
        for key, value in limits.items():
            gate = Gate() if key == "finite" else Gate(**{key: value})
            fails = []
            for out, m in r.outputs.items():
                fails += [f"{out}: {f}" if len(r.outputs) > 1 else f
                          for f in gate.check(m, r.accuracy_drop, m.get("kind") or "probability")]
            # a missing output or shape mismatch is no limit's failure but fails every case
            fails += [f for f in r.failures if f.startswith("output ") and ("missing" in f or "shape" in f)]
            text = "outputs finite" if key == "finite" else LIMIT_TEXT.get(key, f"{key} {{}}").format(value)
            cases.append({"classname": cls, "name": f"{runtime} · {r.precision} gate · {text}",
                          "time": per_case_time, "failure": "; ".join(fails) or None, "skipped": None})
    reg = report.release.get("regression") or {}
    for p in reg.get("pairs", []):
        if p["status"] != "compared":
            continue
        for c in p.get("checks", []):
            cases.append({"classname": p["artifact"], "name": f"{p['runtime']} · vs baseline {p['baseline_artifact']} · {c['gate']}",
                          "time": 0.0, "failure": None if c["passed"] else c["message"], "skipped": None,
                          "output": c["message"]})
    for s in report.skipped:
        cases.append({"classname": str(s["step"]), "name": f"{s['pass']} step", "time": 0.0, "failure": None,
                      "skipped": str(s["reason"])})
    return cases


def junit_xml(report: VerifyReport) -> str:
    cases = junit_cases(report)
    failures = sum(1 for c in cases if c["failure"])
    skipped = sum(1 for c in cases if c["skipped"])
    suite = ET.Element("testsuite", name="optkit verify", tests=str(len(cases)), failures=str(failures), errors="0",
                       skipped=str(skipped), timestamp=report.created,
                       time=f"{sum(c['time'] for c in cases):.3f}")
    props = ET.SubElement(suite, "properties")
    ref = report.reference
    for k, v in (("reference", ref.get("path")), ("samples", ref.get("samples")), ("threshold", report.threshold),
                 ("reference_inputs_sha256", (ref.get("identity") or {}).get("inputs_sha256"))):
        ET.SubElement(props, "property", name=k, value=str(v))
    for c in cases:
        tc = ET.SubElement(suite, "testcase", classname=c["classname"], name=c["name"], time=f"{c['time']:.3f}")
        if c["failure"]:
            f = ET.SubElement(tc, "failure", message=c["failure"], type="gate")
            f.text = c["failure"]
        elif c["skipped"]:
            ET.SubElement(tc, "skipped", message=c["skipped"])
        if c.get("output"):
            ET.SubElement(tc, "system-out").text = c["output"]
    root = ET.Element("testsuites", name="optkit", tests=str(len(cases)), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def summary_markdown(report: VerifyReport) -> str:
    from optkit.release.regression import failures as regression_failures
    from optkit.release.report import SUMMARY_HEADER, summary_rows

    ok = report.passed
    ref = report.reference
    lines = [f"### optkit verification: {'✅ PASSED' if ok else '❌ FAILED'}", ""]
    t = report.reference_task
    lines.append(f"Reference `{Path(str(ref.get('path', ''))).name}`: {ref.get('samples')} samples"
                 f"{' (labelled)' if ref.get('labels') else ''}, threshold {report.threshold:g}"
                 + (f"; PyTorch accuracy {t['accuracy']:.2%}, EER {t['eer']:.2%}." if t else "."))
    lines.append("")

    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines.append("| " + " | ".join(SUMMARY_HEADER) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(SUMMARY_HEADER))) + "|")
    for row in summary_rows(report):
        row = row[:-1] + ["✅" if row[-1] == "PASS" else "❌ FAIL"]
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    fails = [f"{Path(r.path).name} [{r.runner.get('runner', '?')}]: {f}" for r in report.results for f in r.failures]
    reg = report.release.get("regression")
    if reg:
        compared = [p for p in reg["pairs"] if p["status"] == "compared"]
        changed = sum(len(p.get("changed") or []) for p in compared)
        lines += ["", f"**Against the baseline** (`{reg['baseline']}`): {len(compared)} results compared, "
                      f"{changed} decisions changed — {'no regression' if reg['passed'] else '**regression**'} "
                      f"(limits: {reg['limits_text']})."]
        fails += ["regression: " + m for m in regression_failures(reg)]
    if fails:
        lines += ["", "**Failures**", ""] + [f"- {cell(f)}" for f in fails[:20]]
        if len(fails) > 20:
            lines.append(f"- … {len(fails) - 20} more in report.json")
    for s in report.skipped:
        lines.append(f"\nSkipped: {s['step']} ({s['pass']}): {s['reason']}")
    lines += ["", "Full report: report.html (self-contained) and report.json."]
    return "\n".join(lines) + "\n"


def write_junit(report: VerifyReport, path: str | Path, files: AtomicFiles | None = None) -> Path:
    if files is not None:
        return files.write_text(path, junit_xml(report))
    return write_text_atomically(Path(path), junit_xml(report))


def write_summary(report: VerifyReport, path: str | Path, files: AtomicFiles | None = None) -> Path:
    if files is not None:
        return files.write_text(path, summary_markdown(report))
    return write_text_atomically(Path(path), summary_markdown(report))

