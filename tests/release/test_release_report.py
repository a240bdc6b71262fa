"""The release report: artifact facts, task view, regression against a baseline, CI outputs, and
the HTML page as a browser renders it."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest

from browser import CHROMIUM, assert_rendered_report, dump_dom
from conftest import invoke
from optkit.verification.reference import Reference, load_reference, save_reference

N_REF = 48


def _shifted_copy(src: Path, dst: Path, delta: float) -> Path:
    """The model with ``delta`` added to its output (an extra Add node): moves every score."""
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = out + "_pre"
    m.graph.initializer.append(numpy_helper.from_array(np.array(delta, dtype=np.float32), "delta"))
    m.graph.node.append(helper.make_node("Add", [out + "_pre", "delta"], [out]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, dst)
    return dst


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_onnx_session):
    """The tiny model, a labelled reference of N_REF samples (threshold = median score; the
    reference outputs come from ONNX Runtime, which is all a report needs) and the score spread."""
    import onnxruntime as ort

    from conftest import TINY_SHAPE

    d = tmp_path_factory.mktemp("rel")
    model = d / "tiny.onnx"
    shutil.copy(tiny_onnx_session, model)
    x = np.random.default_rng(3).standard_normal((N_REF, *TINY_SHAPE)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input_mfcc": x})[0]
    ref = Reference({"input_mfcc": x}, {"output_wvp": y})
    p = y.ravel()
    thr = float(np.median(p))
    rng = np.random.default_rng(0)
    labels = ((p - thr) + rng.normal(0, p.std() * 0.7, p.shape) >= 0).astype(np.int64)
    save_reference(d / "lab.npz", Reference(ref.inputs, ref.outputs, labels))
    return {"dir": d, "model": model, "ref": d / "lab.npz", "thr": thr, "scores": p, "labels": labels,
            "spread": float(p.max() - p.min())}


def _verify(cli_runner, labelled, artifacts, out: Path, *extra):
    return invoke(cli_runner, ["verify", *artifacts, "--reference", labelled["ref"], "--threshold", repr(labelled["thr"]),
                               "--gate", "fp32.max_abs=off", "--gate", "fp32.min_agreement=0.5",
                               "--report-dir", out, *extra])


# -- task view ---------------------------------------------------------------------------------

def test_det_curve_and_flips_by_hand():
    from optkit.verification.task_metrics import eer
    from optkit.verification.taskview import det_curve, flipped_samples

    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    labels = np.array([0, 0, 1, 1, 1, 0])
    det = det_curve(scores, labels)
    t = det["threshold"]
    # at t=0.35 impostors accepted: 0.4 -> FAR 1/3; targets rejected: none -> FRR 0
    k = t.index(0.35)
    assert det["far"][k] == pytest.approx(1 / 3) and det["frr"][k] == 0.0
    assert (det["far"][0], det["frr"][0], det["far"][-1], det["frr"][-1]) == (1.0, 0.0, 0.0, 1.0)
    e, et = eer(scores, labels)
    k = t.index(et)
    assert e == pytest.approx((det["far"][k] + det["frr"][k]) / 2)
    flips = flipped_samples(scores, scores + np.array([0, 0.2, 0, -0.35, 0, 0]), 0.5, labels)
    assert [(f["index"], f["label"], f["accepts"], f["correct"]) for f in flips] == [
        (1, "impostor", True, False), (3, "target", False, False)]
    assert flips[0]["reference_score"] == 0.4 and flips[0]["score"] == pytest.approx(0.6)


def test_report_has_facts_task_view_scores_and_ci_files(cli_runner, labelled, tmp_path):
    shifted = _shifted_copy(labelled["model"], tmp_path / "shifted.onnx", labelled["spread"] / 6)
    out = tmp_path / "rep"
    res = _verify(cli_runner, labelled, [labelled["model"], shifted], out,
                  "--junit", tmp_path / "junit.xml", "--summary", tmp_path / "summary.md")
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    ref = load_reference(labelled["ref"])
    # the reference is identified by its inputs and labels, and its scores are kept exactly
    assert data["reference"]["identity"]["samples"] == N_REF
    h = hashlib.sha256(b"input_mfcc|" + f"{ref.inputs['input_mfcc'].dtype.str}|{ref.inputs['input_mfcc'].shape}|".encode()
                       + ref.inputs["input_mfcc"].tobytes()).hexdigest()
    assert data["reference"]["identity"]["inputs_sha256"] == h
    assert np.array_equal(np.float32(data["reference"]["scores"]), labelled["scores"].astype(np.float32))
    assert data["reference"]["labels"] == labelled["labels"].tolist()
    a0, a1 = data["artifacts"]
    # per-sample scores round-trip to the exact float32 outputs, so decisions are reproducible
    expected = (labelled["scores"] + np.float32(labelled["spread"] / 6)).astype(np.float32)
    assert np.allclose(np.float32(a1["scores"]), expected, atol=1e-6)
    flips = [i for i, (r, s) in enumerate(zip(data["reference"]["scores"], a1["scores"]))
             if (r >= labelled["thr"]) != (s >= labelled["thr"])]
    assert flips and [f["index"] for f in a1["flipped_samples"]] == flips
    assert a1["outputs"]["output_wvp"]["flipped"] == len(flips)
    assert a0["flipped_samples"] == []
    # facts: size and node count of the file, MAC share of an fp32 model
    f0 = data["facts"][a0["facts"]]
    assert f0["size"] == labelled["model"].stat().st_size
    assert f0["nodes"] == len(onnx.load(labelled["model"]).graph.node)
    assert f0["macs"]["share"]["fp32"] == 1.0 and f0["macs"]["total_macs"] > 0
    # runtime in words, not a Python dict
    assert a0["runtime_text"].startswith("ONNX Runtime ") and "CPU execution provider" in a0["runtime_text"]
    assert "{" not in a0["runtime_text"]
    # the page: banner, summary first, task view with a DET plot and one score distribution each
    page = (out / "report.html").read_text()
    assert page.index('id="verdict"') < page.index('id="summary"') < page.index('id="task"')
    assert page.count('data-plot="det"') == 1
    assert page.count('data-plot="score-distribution"') == 3  # reference + two results
    assert "<details" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    # JUnit: one case per artifact x runtime x gate limit in use
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 2 * 1  # fp32 gate: only min_agreement left on
    assert all(c.find("failure") is None for c in cases)
    summary = (tmp_path / "summary.md").read_text()
    assert "✅ PASSED" in summary and "| tiny.onnx |" in summary and "| shifted.onnx |" in summary


def test_junit_names_the_failing_limit(cli_runner, labelled, tmp_path):
    shifted = _shifted_copy(labelled["model"], tmp_path / "shifted.onnx", labelled["spread"] / 6)
    res = invoke(cli_runner, ["verify", shifted, "--reference", labelled["ref"], "--threshold", repr(labelled["thr"]),
                              "--junit", tmp_path / "j.xml", "--summary", tmp_path / "s.md"])
    assert res.exit_code == 3
    cases = ET.parse(tmp_path / "j.xml").getroot().find("testsuite").findall("testcase")
    assert len(cases) == 1 and "max |diff| <= 0.0001" in cases[0].get("name")
    assert "max |diff|" in cases[0].find("failure").get("message")
    assert "❌ FAILED" in (tmp_path / "s.md").read_text()


def test_identical_results_are_grouped(cli_runner, labelled, tmp_path):
    twin = tmp_path / "twin.onnx"
    shutil.copy(labelled["model"], twin)
    res = _verify(cli_runner, labelled, [labelled["model"], twin], tmp_path / "rep")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["groups"] == [[0, 1]]
    assert "tiny.onnx = twin.onnx" in res.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count('data-plot="scatter"') == 1


def test_bench_adds_latency_and_speedup(cli_runner, labelled, tmp_path):
    shifted = _shifted_copy(labelled["model"], tmp_path / "shifted.onnx", 0.0)
    res = _verify(cli_runner, labelled, [labelled["model"], shifted], tmp_path / "rep", "--bench", "--bench-iterations", "3")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    l0, l1 = (a["latency"] for a in data["artifacts"])
    assert l0["vs_fp32"] == {"of": "tiny.onnx", "min": 1.0, "p50": 1.0}  # the first fp32 is its own baseline
    assert l1["vs_fp32"]["p50"] == pytest.approx(l0["p50_ms"] / l1["p50_ms"], rel=1e-3)  # ms are rounded
    assert 0 < l1["min_ms"] <= l1["p50_ms"]
    assert data["bench"]["config"]["iterations"] == 3
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="latency-table"' in page and "logical CPUs" in page


# -- lineage and the int8 search, from a manifest ------------------------------------------------

def test_lineage_and_int8_trials_from_the_manifest(cli_runner, labelled, tmp_path):
    from optkit.model.artifact import Artifact, Manifest

    d = tmp_path / "out"
    d.mkdir()
    export = d / "export.onnx"
    shutil.copy(labelled["model"], export)
    q = _shifted_copy(export, d / "int8.int8.onnx", 0.0)
    m = Manifest(d / "manifest.json")
    ea = Artifact.from_file(export, made_by="export", config={"model": "voice-resnet", "opset": 17})
    qa = Artifact.from_file(q, made_by="quantize-int8", parent=ea.sha256,
                            config={"method": "percentile", "exclude_nodes": ["/conv1/Conv"], "calibration_limit": None})
    # what the int8 search settled on differs from what was asked for: the lineage must say so
    qa.extra["chosen"] = {"method": "entropy", "excluded_nodes": ["/conv1/Conv", "/layer1/Add"], "equalized": True}
    search = {"validation": "val.npz[:64]", "chosen": 1, "trials": [
        {"name": "t0", "change": "baseline", "method": "minmax", "excluded_nodes": [], "equalized": False,
         "agreement": 0.981, "mean_abs_dp": 0.02, "accuracy": 0.95, "int8_mac_share": 1.0, "passed": False},
        {"name": "t1", "change": "keep first conv fp32", "method": "percentile", "excluded_nodes": ["/conv1/Conv"],
         "equalized": True, "agreement": 0.998, "mean_abs_dp": 0.005, "accuracy": 0.96, "int8_mac_share": 0.997,
         "fp16_mac_share": 0.003, "passed": True}],
        # the search's own latency check (fp32, plain int8 = trial 0, chosen = trial 1), as the pass records it
        "latency": {"runtime": "onnxruntime CPU", "batch": 1, "warmup": 5, "rounds": 30, "chosen_is_plain": False,
                    "models": [{"model": "fp32", "trial": None, "file": "export.onnx", "min_ms": 8.0, "p50_ms": 9.0},
                               {"model": "plain int8", "trial": 0, "file": "t0.onnx", "min_ms": 2.0, "p50_ms": 3.0},
                               {"model": "chosen", "trial": 1, "file": "t1.onnx", "min_ms": 2.5, "p50_ms": 3.6}],
                    "speedup": {"chosen_vs_fp32": {"min": 3.2, "p50": 2.5}, "plain_vs_fp32": {"min": 4.0, "p50": 3.0},
                                "chosen_kept_of_plain": {"min": 0.8, "p50": 0.8333}}}}
    m.record("export", ea, "k1")
    m.record("int8", qa, "k2", info={"int8_search": search})
    m.save()
    res = _verify(cli_runner, labelled, [export, q], tmp_path / "rep")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    facts = data["facts"][data["artifacts"][1]["facts"]]
    assert facts["step"] == "int8"
    assert [s["step"] for s in facts["lineage"]] == ["export", "int8"]
    assert facts["lineage"][1]["config"] == {"method": "percentile", "exclude_nodes": ["/conv1/Conv"]}
    assert facts["int8_search"]["chosen"] == 1
    assert facts["lineage"][1]["chosen"]["method"] == "entropy" and facts["lineage"][0]["chosen"] is None
    assert [a["step"] for a in data["artifacts"]] == ["export", "int8"]
    page = (tmp_path / "rep" / "report.html").read_text()
    trials = page[page.index("int8 search: 2 trial(s)"):]
    trials = trials[:trials.index("</table>")]
    assert trials.count("<tr>") == 3 and "keep first conv fp32" in trials and "✔ chosen" in trials
    assert "99.80%" in trials and "minmax" in trials
    # fp16 MAC share: a row of an older manifest has none ("–"), a newer one its value
    assert "fp16 mac share" in trials and "0.30%" in trials
    assert facts["int8_search"]["latency"]["speedup"]["chosen_kept_of_plain"]["min"] == 0.8
    latency = page[page.index("Latency of the search's result"):]
    latency = latency[:latency.index("</table>")]
    assert latency.count("<tr>") == 4 and "chosen (trial 1)" in latency and "plain int8 (trial 0)" in latency
    assert "3.20×" in latency and "80 % / 83 %" in latency and "2.50" in latency
    lineage = page[page.index('id="lineage"'):]
    lineage = lineage[:lineage.index("</table>")]
    assert lineage.count("<tr>") == 3 and "PyTorch voice-resnet" in lineage and "percentile" in lineage
    assert "search chose:</b> method=entropy" in lineage and "/layer1/Add" in lineage
    assert "PyTorch <code>voice-resnet</code> → <b>export</b> (export) → <b>quantize-int8</b> (int8)" in page
    # without a manifest the report says so instead of inventing a lineage
    lone = tmp_path / "lone" / "m.onnx"
    lone.parent.mkdir()
    shutil.copy(export, lone)
    res = _verify(cli_runner, labelled, [lone], tmp_path / "rep2")
    data = json.loads((tmp_path / "rep2" / "report.json").read_text())
    f = data["facts"][data["artifacts"][0]["facts"]]
    assert f["lineage"] is None and "no manifest.json" in f["lineage_note"]


# -- regression against a baseline --------------------------------------------------------------

def test_same_release_as_baseline_changes_nothing(cli_runner, labelled, tmp_path):
    res = _verify(cli_runner, labelled, [labelled["model"]], tmp_path / "r1")
    assert res.exit_code == 0, res.output
    res = _verify(cli_runner, labelled, [labelled["model"]], tmp_path / "r2", "--baseline", tmp_path / "r1",
                  "--junit", tmp_path / "j.xml")
    assert res.exit_code == 0, res.output
    reg = json.loads((tmp_path / "r2" / "report.json").read_text())["regression"]
    (pair,) = reg["pairs"]
    assert pair["status"] == "compared" and pair["matched_by"] == "file name" and pair["changed"] == []
    assert pair["deltas"]["accuracy"]["delta"] == 0.0 and reg["passed"] is True
    assert "0 decision(s) changed" in res.output
    names = [c.get("name") for c in ET.parse(tmp_path / "j.xml").getroot().iter("testcase")]
    assert any("vs baseline tiny.onnx · decision_changes" in n for n in names)


def test_worse_release_is_a_regression(cli_runner, labelled, tmp_path):
    # the baseline release is the good model; this release shifts every score
    res = _verify(cli_runner, labelled, [labelled["model"]], tmp_path / "r1")
    assert res.exit_code == 0
    worse = _shifted_copy(labelled["model"], tmp_path / "new" / "tiny.onnx", labelled["spread"] / 5)
    res = _verify(cli_runner, labelled, [worse], tmp_path / "r2", "--baseline", tmp_path / "r1" / "report.json",
                  "--summary", tmp_path / "s.md")
    assert res.exit_code == 3, res.output
    assert "regression against the baseline for tiny.onnx" in res.output
    data = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert data["gates_passed"] is True and data["passed"] is False
    pair = data["regression"]["pairs"][0]
    old = np.float32(json.loads((tmp_path / "r1" / "report.json").read_text())["artifacts"][0]["scores"])
    new = np.float32(data["artifacts"][0]["scores"])
    changed = np.flatnonzero((old >= labelled["thr"]) != (new >= labelled["thr"])).tolist()
    assert [c["index"] for c in pair["changed"]] == changed and len(changed) > 0.002 * N_REF
    failed = {c["gate"] for c in pair["checks"] if not c["passed"]}
    assert "decision_changes" in failed
    assert "REGRESSION" in (tmp_path / "r2" / "report.html").read_text()
    assert "**regression**" in (tmp_path / "s.md").read_text()
    # looser limits let it through; an opt-in latency limit without timings fails loudly
    res = _verify(cli_runner, labelled, [worse], tmp_path / "r3", "--baseline", tmp_path / "r1",
                  "--max-regression", "decision_changes=100%", "--max-regression", "accuracy_drop=off")
    assert res.exit_code == 0, res.output
    res = _verify(cli_runner, labelled, [worse], tmp_path / "r4", "--baseline", tmp_path / "r1",
                  "--max-regression", "decision_changes=off", "--max-regression", "accuracy_drop=off",
                  "--max-regression", "p50_latency=10%")
    assert res.exit_code == 3 and "cannot check p50 latency" in res.output


def test_baseline_on_another_reference_is_refused(cli_runner, labelled, tmp_path):
    res = _verify(cli_runner, labelled, [labelled["model"]], tmp_path / "r1")
    assert res.exit_code == 0
    ref = load_reference(labelled["ref"])
    other = tmp_path / "other.npz"
    save_reference(other, Reference({"input_mfcc": ref.inputs["input_mfcc"] * 1.01}, ref.outputs, ref.labels))
    res = invoke(cli_runner, ["verify", labelled["model"], "--reference", other, "--baseline", tmp_path / "r1",
                              "--report-dir", tmp_path / "r2"])
    assert res.exit_code == 1
    assert "different reference set" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r2" / "report.json").exists()  # refused before any work


def test_baseline_and_limit_errors(cli_runner, labelled, tmp_path):
    base = [labelled["model"], "--reference", labelled["ref"]]
    res = invoke(cli_runner, ["verify", *base, "--baseline", tmp_path / "nowhere"])
    assert res.exit_code == 1 and "no report.json there" in res.output
    (tmp_path / "old.json").write_text(json.dumps({"artifacts": [{"path": "a.onnx"}], "reference": {}}))
    res = invoke(cli_runner, ["verify", *base, "--baseline", tmp_path / "old.json"])
    assert res.exit_code == 1 and "older optkit" in res.output
    (tmp_path / "junk.json").write_text("{not json")
    res = invoke(cli_runner, ["verify", *base, "--baseline", tmp_path / "junk.json"])
    assert res.exit_code == 1 and "not a readable report.json" in res.output
    res = invoke(cli_runner, ["verify", *base, "--max-regression", "decision_changes=1%"])
    assert res.exit_code == 2 and "needs --baseline" in res.output
    _verify(cli_runner, labelled, [labelled["model"]], tmp_path / "r1")
    res = invoke(cli_runner, ["verify", *base, "--baseline", tmp_path / "r1", "--max-regression", "speed=1"])
    assert res.exit_code == 1 and "unknown limit 'speed'" in res.output
    res = invoke(cli_runner, ["verify", *base, "--baseline", tmp_path / "r1", "--max-regression", "p50_latency=fast"])
    assert res.exit_code == 1 and "not a number" in res.output


def test_counterpart_matching_rules():
    from optkit.release.regression import match_counterparts

    ort, ov = {"runner": "onnxruntime[cpu]"}, {"runner": "openvino"}

    def art(path, precision, runner, step=None):
        return {"path": path, "precision": precision, "runner": runner, "step": step}

    baseline = [art("a/export.onnx", "fp32", ort, "export"), art("a/int8.onnx", "int8", ort, "int8"),
                art("a/int8.onnx", "int8", ov, "int8"), art("a/model.fp16.onnx", "fp16", ort)]
    current = [art("b/export.onnx", "fp32", ort, "export"),      # same step
               art("b/q.onnx", "int8", ov, "int8"),               # same step, other runtime than [1]
               art("b/mm.onnx", "int8", ort),                     # no step, other name: only int8 on ORT
               art("b/model.fp16.onnx", "fp16", ort),             # same file name
               art("b/extra.onnx", "fp32", ov)]                   # nothing fits: new
    got = match_counterparts(current, baseline)
    assert got == [(0, "step name"), (2, "step name"), (1, "only int8 artifact on this runtime"), (3, "file name"),
                   (None, "")]


# -- recipe keys -------------------------------------------------------------------------------

def test_recipe_release_keys_are_checked(tmp_path):
    from optkit.common.errors import RecipeError
    from optkit.pipeline.recipe import load_recipe

    head = "name: t\nmodel: voice-resnet\nsteps:\n  - pass: export\nverify:\n"
    p = tmp_path / "r.yaml"
    p.write_text(head + "  bench: {iterations: 20}\n  baseline: ../rel1\n  max_regression: {p50_latency: 10%}\n")
    r = load_recipe(p)
    assert r.verify["baseline"] == str((tmp_path.parent / "rel1").resolve())
    p.write_text(head + "  bench: {loops: 3}\n")
    with pytest.raises(RecipeError, match=r"line 6: .*unknown key 'loops'"):
        load_recipe(p)
    p.write_text(head + "  max_regression: {flips: 1%}\n")
    with pytest.raises(RecipeError, match=r"line 6: .*unknown limit 'flips'"):
        load_recipe(p)


def test_runtime_in_words():
    from optkit.release.view import precision_text
    from optkit.runtime.labels import runtime_text

    ort = {"runner": "onnxruntime[cpu]", "onnxruntime": "1.23.2", "providers_in_use": ["CPUExecutionProvider"],
           "threads": 2}
    assert runtime_text(ort) == "ONNX Runtime 1.23.2, CPU execution provider, 2 threads"
    ov = {"runner": "openvino", "openvino": "2025.3.0", "device": "CPU", "device_name": "Some CPU",
          "in_effect": {"precision_hint": "f32", "performance_hint": "LATENCY", "num_streams": 1}}
    assert runtime_text(ov).startswith("OpenVINO 2025.3.0 on CPU (Some CPU), inference precision f32, LATENCY hint")
    facts = {"macs": {"share": {"int8": 0.99, "fp16": 0.0, "fp32": 0.01}}}
    assert precision_text("int8", ov, facts) == ("int8 (QDQ): int8 99.0% / fp32 1.0% of MACs; "
                                                 "OpenVINO computes non-int8 layers in f32")


# -- the page in a real browser ------------------------------------------------------------------

@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(cli_runner, labelled, tmp_path):
    shifted = _shifted_copy(labelled["model"], tmp_path / "shifted.onnx", labelled["spread"] / 6)
    twin = tmp_path / "twin.onnx"
    shutil.copy(labelled["model"], twin)
    res = _verify(cli_runner, labelled, [labelled["model"], twin, shifted], tmp_path / "rep")
    assert res.exit_code == 0, res.output
    dom = dump_dom(tmp_path / "rep" / "report.html")
    assert_rendered_report(dom, results=3, groups=2)
    assert dom.count('data-plot="mac-share"') == 3


def test_recipe_bench_baseline_and_ci_files(cli_runner, tmp_path):
    """The recipe path: verify: bench / baseline keys, run --baseline/--junit/--summary."""
    models = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
    text = (f"name: tiny\nmodel: {models}:tiny_voice\nsteps:\n  - pass: export\n    params:\n      reference_samples: 8\n"
            "  - pass: simplify\n    params:\n      check_runs: 1\nverify:\n  bench: {warmup: 0, iterations: 2}\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out, "--junit", tmp_path / "j.xml", "--summary", tmp_path / "s.md"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert [a["step"] for a in data["artifacts"]] == ["export", "simplify"]
    assert all(a["latency"]["p50_ms"] > 0 for a in data["artifacts"]) and data["regression"] is None
    assert len(ET.parse(tmp_path / "j.xml").getroot().find("testsuite").findall("testcase")) == 2
    assert "✅ PASSED" in (tmp_path / "s.md").read_text()
    # the recipe names its baseline (relative to the recipe file); the run compares with it
    (tmp_path / "rel1").mkdir()
    shutil.copy(out / "report.json", tmp_path / "rel1" / "report.json")
    recipe.write_text(text + "  baseline: rel1\n")
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    reg = json.loads((out / "report.json").read_text())["regression"]
    assert reg["passed"] and [p["matched_by"] for p in reg["pairs"]] == ["step name", "step name"]
    res = invoke(cli_runner, ["run", recipe, "-o", out, "--no-verify", "--junit", tmp_path / "j2.xml"])
    assert res.exit_code == 2 and "need verification" in res.output
