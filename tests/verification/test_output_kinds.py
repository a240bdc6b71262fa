"""Output kinds: detection, the figures and gate limits per kind, overrides; verify on models whose
output is an embedding or per-frame scores."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import invoke
from optkit.verification.output_kinds import (KIND_LIMITS, decisions, detect_kind, detect_kinds, kind_metrics,
                                              parse_output_kind_option, parse_output_settings, sample_cosines,
                                              trial_eer)
from optkit.verification.verify import DEFAULT_GATES, judge_outputs

RNG = np.random.default_rng(0)


def _l2(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("values, head, shape, kind", [
    (RNG.uniform(0, 1, (10, 1)), None, None, "probability"),
    (RNG.uniform(0, 1, (10,)), "Sigmoid", None, "probability"),
    (RNG.normal(0, 3, (10, 1)), None, None, "logit"),
    (RNG.normal(0, 3, (10, 1)), "Sigmoid", None, "probability"),   # the op decides over the values
    (RNG.normal(0, 1, (10, 64)), "MatMul", ("batch", 64), "embedding"),
    (RNG.normal(0, 1, (10, 30, 1)), None, None, "frames"),
    # L2-normalised and all positive (a briefly trained encoder): an embedding, not frames
    (_l2(np.abs(RNG.normal(0, 1, (10, 32)))), "Div", ("batch", 32), "embedding"),
    (_l2(np.abs(RNG.normal(0, 1, (10, 32)))) * 0.9, "Div", ("batch", 32), "frames"),   # norm 0.9: not normalised
    (_l2(RNG.normal(0, 1, (10, 32))), "Div", ("batch", "Divoutput_dim_1"), "embedding"),  # torch's unresolved dim
    (RNG.uniform(0, 1, (10, 30)), None, None, "frames"),
    (RNG.normal(0, 1, (10, 30)), "Add", ("batch", "frames"), "frames"),   # a dynamic frame axis
    (RNG.normal(0, 1, (10, 30)), "Sigmoid", None, "frames"),
    (RNG.uniform(0, 1, (10, 3)), "Softmax", None, "other"),       # class probabilities
    (RNG.normal(0, 1, (10, 3)), None, None, "other"),             # too few values for an embedding
    (RNG.normal(0, 1, (10, 5, 7)), None, None, "other"),
])
def test_detect_kind(values, head, shape, kind):
    k = detect_kind("out", values, head, shape)
    assert k.kind == kind, k
    assert k.line(0.5).startswith(f"output out: {kind} (")


def test_overrides_win_and_an_unknown_output_or_kind_is_an_input_error():
    from optkit.common.errors import InputError

    outs = {"a": RNG.normal(0, 1, (4, 32)), "b": RNG.uniform(0, 1, (4, 1))}
    kinds = detect_kinds(outs, None, {"a": "other"})
    assert kinds["a"].kind == "other" and kinds["a"].source == "override" and kinds["b"].kind == "probability"
    with pytest.raises(InputError, match="no output 'c'.*its outputs: a, b"):
        detect_kinds(outs, None, {"c": "embedding"})
    with pytest.raises(InputError, match="unknown output kind 'vector'"):
        parse_output_kind_option(["a=vector"])
    with pytest.raises(InputError, match="expected NAME=KIND"):
        parse_output_kind_option(["a"])
    assert parse_output_kind_option(["a=embedding", "b = logit"]) == {"a": "embedding", "b": "logit"}


def test_recipe_output_settings_are_checked():
    from optkit.common.errors import RecipeError

    kinds, gates = parse_output_settings({"emb": {"kind": "embedding", "gates": {"int8": {"min_sample_cosine": 0.9}}}},
                                         "verify.outputs")
    assert kinds == {"emb": "embedding"} and gates == {"emb": {"int8": {"min_sample_cosine": 0.9}}}
    for bad, match in (({"emb": {"kind": "vector"}}, "unknown output kind"), ({"emb": {"knd": "logit"}}, "unknown key"),
                       ({"emb": "embedding"}, "expected a mapping"), ([1], "expected a mapping")):
        with pytest.raises(RecipeError, match=match):
            parse_output_settings(bad, "verify.outputs")
    with pytest.raises(RecipeError, match="only int8"):
        parse_output_settings({"emb": {"gates": {"fp16": {}}}}, "outputs", precisions=("int8",))


def test_embedding_is_judged_by_per_sample_cosine_not_by_abs_error():
    """Embeddings of scale 100: an element-wise |Δ| of 0.05 is nothing (cosine ~1) and passes; one
    sample turned around fails on the worst cosine though the mean |Δ| gate would not see it."""
    ref = RNG.normal(0, 100, (20, 32))
    kinds = {"emb": detect_kind("emb", ref, "MatMul")}
    assert kinds["emb"].kind == "embedding"
    near = ref + RNG.normal(0, 0.05, ref.shape)
    j = judge_outputs({"emb": ref}, {"emb": near}, kinds, DEFAULT_GATES["int8"], 0.5)
    assert not j.failures and j.outputs["emb"]["mean_abs"] > DEFAULT_GATES["int8"].mean_abs  # |Δ| not gated
    assert j.outputs["emb"]["agreement"] is None
    bad = near.copy()
    bad[3] = -bad[3]
    j = judge_outputs({"emb": ref}, {"emb": bad}, kinds, DEFAULT_GATES["int8"], 0.5)
    assert any("worst per-sample cosine" in f for f in j.failures), j.failures
    assert j.outputs["emb"]["sample_cosine_min"] == pytest.approx(-1.0, abs=1e-6)
    # the same output taken for a probability is judged element-wise and fails on |Δ|
    j = judge_outputs({"emb": ref}, {"emb": near}, {"emb": detect_kinds({"emb": ref}, None, {"emb": "other"})["emb"]},
                      DEFAULT_GATES["int8"], 0.5)
    assert any("mean |diff|" in f for f in j.failures)


def test_embedding_eer_of_same_and_different_label_trials():
    labels = np.repeat(np.arange(4), 6)
    centres = RNG.normal(0, 1, (4, 16))
    emb = centres[labels] + RNG.normal(0, 0.05, (24, 16))
    assert trial_eer(emb, labels) == pytest.approx(0.0)
    noisy = emb + RNG.normal(0, 3, emb.shape)
    m = kind_metrics("embedding", emb, noisy, 0.5, labels)
    assert m["trial_eer_reference"] == pytest.approx(0.0) and m["eer_increase"] > 0.05
    fails = DEFAULT_GATES["int8"].check(m, None, "embedding")
    assert any("trial EER up" in f for f in fails), fails
    assert np.allclose(sample_cosines(emb, emb), 1.0)


def test_logits_are_decided_at_zero_and_compared_as_probabilities():
    z = np.array([[-2.0], [-0.01], [0.01], [3.0]])
    out = z + np.array([[0.0], [0.02], [0.0], [0.0]])  # sample 1 crosses 0
    m = kind_metrics("logit", z, out, 0.5)
    assert m["decision_threshold"] == 0.0 and m["flipped"] == 1 and m["compared_as"] == "sigmoid(logit)"
    assert m["max_abs"] == pytest.approx(0.005, abs=1e-4)  # |Δp| of the sigmoid, not the 0.02 of the logit
    assert decisions("logit", z, 0.5).tolist() == [False, False, True, True]
    assert decisions("embedding", z, 0.5) is None


def test_frames_are_judged_per_frame():
    ref = RNG.uniform(0, 1, (5, 40))
    out = ref.copy()
    out[0, :3] = 1 - out[0, :3]
    out[0, :3] = np.where(ref[0, :3] >= 0.5, 0.1, 0.9)  # 3 frames flip
    m = kind_metrics("frames", ref, out, 0.5)
    assert m["flipped"] == 3 and m["n"] == 200
    assert set(KIND_LIMITS["frames"]) >= {"min_agreement", "mean_abs"} and "max_accuracy_drop" not in KIND_LIMITS["frames"]


def test_the_bundled_kind_of_output_keeps_its_gate_and_numbers(tiny_onnx):
    """A probability output: the figures are output_metrics' and the gate checks the same limits."""
    from optkit.verification.comparator import output_metrics
    from optkit.verification.reference import load_reference, reference_path_for

    ref = load_reference(reference_path_for(tiny_onnx))
    kinds = detect_kinds(ref.outputs, tiny_onnx)
    assert kinds["output_wvp"].kind == "probability" and "Sigmoid" in kinds["output_wvp"].why
    y = ref.outputs["output_wvp"]
    out = np.clip(y + 0.003, 0, 1)
    m = kind_metrics("probability", y, out, 0.5)
    base = output_metrics(y, out, 0.5)
    assert {k: m[k] for k in base} == base
    g = DEFAULT_GATES["int8"]
    assert set(g.applied("probability")) == {"mean_abs", "min_agreement", "max_accuracy_drop"}


def _ref(tmp_path, name, build, out_name):
    from kind_models import build_embedding_model, build_frame_model, feats, ort_outputs  # noqa: F401

    from optkit.verification.reference import Reference, save_reference

    path = build(tmp_path / f"{name}.onnx")
    x = feats(12, 3)
    ref = tmp_path / f"{name}.reference.npz"
    save_reference(ref, Reference({"feats": x}, {out_name: ort_outputs(path, x)}))
    return path, ref


def test_verify_an_embedding_and_a_frame_model(cli_runner, tmp_path):
    from kind_models import build_embedding_model, build_frame_model

    emb, emb_ref = _ref(tmp_path, "emb", build_embedding_model, "emb")
    res = invoke(cli_runner, ["verify", emb, "--reference", emb_ref, "--report-dir", tmp_path / "r1"])
    assert res.exit_code == 0, res.output
    assert "output emb: embedding (16 unbounded values per sample, computed by MatMul); judged by per-sample cosine" \
        in res.output
    data = json.loads((tmp_path / "r1" / "report.json").read_text())
    assert data["output_kinds"]["emb"]["kind"] == "embedding"
    m = data["artifacts"][0]["outputs"]["emb"]
    assert m["kind"] == "embedding" and m["sample_cosine_min"] > 0.99999
    assert "per-sample cosine (min / mean)" in (tmp_path / "r1" / "report.html").read_text()

    vad, vad_ref = _ref(tmp_path, "vad", build_frame_model, "vad")
    res = invoke(cli_runner, ["verify", vad, "--reference", vad_ref, "--report-dir", tmp_path / "r2"])
    assert res.exit_code == 0, res.output
    assert "output vad: frames (16 values per sample, computed by Sigmoid: one per frame)" in res.output
    data = json.loads((tmp_path / "r2" / "report.json").read_text())
    assert data["artifacts"][0]["outputs"]["vad"]["kind"] == "frames"


def test_verify_fails_an_embedding_that_points_elsewhere(cli_runner, tmp_path):
    """Another seed's encoder: outputs of the same scale (the element-wise gates of fp32 would be the
    only ones failing) - the cosine gate names what is wrong."""
    from kind_models import build_embedding_model

    _, ref = _ref(tmp_path, "emb", build_embedding_model, "emb")
    other = build_embedding_model(tmp_path / "other.onnx", seed=5)
    res = invoke(cli_runner, ["verify", other, "--reference", ref])
    assert res.exit_code == 3, res.output
    assert "worst per-sample cosine" in res.output and "max |diff|" not in res.output


def test_verify_output_kind_override_and_a_bad_one(cli_runner, tmp_path):
    from kind_models import build_embedding_model

    emb, ref = _ref(tmp_path, "emb", build_embedding_model, "emb")
    res = invoke(cli_runner, ["verify", emb, "--reference", ref, "--output-kind", "emb=other"])
    assert res.exit_code == 0 and "output emb: other (set by override); judged by element-wise" in res.output, res.output
    for bad, msg in (("nope=embedding", "the model has no output 'nope' (its outputs: emb)"),
                     ("emb=vector", "unknown output kind 'vector'")):
        res = invoke(cli_runner, ["verify", emb, "--reference", ref, "--output-kind", bad])
        assert res.exit_code == 1, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert lines[-1].startswith("Error: ") and msg in lines[-1] and "Traceback" not in res.output, res.output


def test_verify_output_gate_sets_one_outputs_limits(cli_runner, tmp_path):
    """--output-gate NAME:PREC.LIMIT=VALUE: the per-output gate of a recipe's verify: outputs, on the
    CLI. Another seed's encoder fails the fp32 cosine gate; that output's own limits let it pass."""
    from kind_models import build_embedding_model

    _, ref = _ref(tmp_path, "emb", build_embedding_model, "emb")
    other = build_embedding_model(tmp_path / "other.onnx", seed=5)
    res = invoke(cli_runner, ["verify", other, "--reference", ref, "--report-dir", tmp_path / "r",
                              "--output-gate", "emb:fp32.min_sample_cosine=-1"])
    assert res.exit_code == 0, res.output
    art = json.loads((tmp_path / "r" / "report.json").read_text())["artifacts"][0]
    assert art["outputs"]["emb"]["output_gate"] == {"min_sample_cosine": -1.0}  # only the limits an embedding has
    assert art["gate"]["min_sample_cosine"] == 0.99999  # the common gate is unchanged
    # on top of --gate: the command's limit still holds where the output sets none
    res = invoke(cli_runner, ["verify", other, "--reference", ref, "--output-gate", "emb:fp32.max_abs=1",
                              "--gate", "fp32.min_sample_cosine=0.999"])
    assert res.exit_code == 3 and "worst per-sample cosine" in res.output, res.output


@pytest.mark.parametrize("bad, msg", [
    ("nope:fp32.min_sample_cosine=0.5", "--output-gate nope: the model has no output 'nope' (its outputs: emb)"),
    ("emb:fp32.min_cosinus=0.5", "unknown limit min_cosinus"),
    ("emb:fp64.max_abs=1", "unknown precision 'fp64'"),
    ("emb:fp32.max_abs=big", "'big' is not a number"),
    ("emb:fp32.min_agreement=2", "out of range"),
    ("emb=fp32.max_abs=1", "expected NAME:PRECISION.LIMIT=VALUE"),
    ("emb:max_abs=1", "expected NAME:PRECISION.LIMIT=VALUE"),
])
def test_verify_a_bad_output_gate_is_one_line_exit_1(cli_runner, tmp_path, bad, msg):
    from kind_models import build_embedding_model

    emb, ref = _ref(tmp_path, "emb", build_embedding_model, "emb")
    res = invoke(cli_runner, ["verify", emb, "--reference", ref, "--output-gate", bad])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and msg in lines[-1] and "Traceback" not in res.output, res.output


def test_parse_output_gate_option_keeps_colons_in_names():
    from optkit.verification.output_kinds import parse_output_gate_option

    assert parse_output_gate_option(["out:0:int8.min_agreement=0.99", "out:0:int8.mean_abs=off",
                                     "emb:fp16.min_sample_cosine=0.9"]) == {
        "out:0": {"int8": {"min_agreement": 0.99, "mean_abs": None}}, "emb": {"fp16": {"min_sample_cosine": 0.9}}}
