from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from conftest import invoke
from optkit.verification.reference import Reference, load_reference, save_reference


def _perturbed_copy(src, dst, delta):
    """The model with ``delta`` added to its output (an extra Add node)."""
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    out = m.graph.output[0].name
    m.graph.node[-1].output[0] = out + "_pre"
    m.graph.initializer.append(numpy_helper.from_array(np.array(delta, dtype=np.float32), "delta"))
    m.graph.node.append(helper.make_node("Add", [out + "_pre", "delta"], [out]))
    onnx.save(m, dst)
    return dst


def test_verify_fp32_passes_and_writes_reports(cli_runner, tiny_onnx, tmp_path):
    ref = tiny_onnx.with_name("tiny.reference.npz")
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--report-dir", tmp_path / "rep"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["passed"] is True
    a = data["artifacts"][0]
    assert a["precision"] == "fp32"
    m = a["outputs"]["output_wvp"]
    assert m["max_abs"] < 1e-5 and m["agreement"] == 1.0
    for key in ("mean_abs", "max_rel", "cosine", "snr_db", "flipped"):
        assert key in m
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<svg" in html and "PASSED" in html


def test_verify_gate_failure_exits_3(cli_runner, tiny_onnx, tmp_path):
    bad = _perturbed_copy(tiny_onnx, tmp_path / "bad.onnx", 0.01)
    ref = tiny_onnx.with_name("tiny.reference.npz")
    res = invoke(cli_runner, ["verify", tiny_onnx, bad, "--reference", ref, "--report-dir", tmp_path / "rep"])
    assert res.exit_code == 3, res.output
    assert "verification failed for bad.onnx" in res.output
    assert "max |diff| 0.01 > 0.0001" in res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["passed"] is False
    assert [a["passed"] for a in data["artifacts"]] == [True, False]


def test_gate_override_from_cli(cli_runner, tiny_onnx, tmp_path):
    bad = _perturbed_copy(tiny_onnx, tmp_path / "bad.onnx", 0.01)
    ref = tiny_onnx.with_name("tiny.reference.npz")
    res = invoke(cli_runner, ["verify", bad, "--reference", ref, "--gate", "fp32.max_abs=0.02"])
    assert res.exit_code == 0, res.output
    res = invoke(cli_runner, ["verify", bad, "--reference", ref, "--gate", "fp32.min_snr_db=200"])
    assert res.exit_code == 3
    res = invoke(cli_runner, ["verify", bad, "--reference", ref, "--gate", "fp32.bogus=1"])
    assert res.exit_code == 1 and "unknown limit bogus" in res.output
    res = invoke(cli_runner, ["verify", bad, "--reference", ref, "--gate", "nonsense"])
    assert res.exit_code == 1 and "PRECISION.LIMIT=VALUE" in res.output


def test_decision_flips_are_counted_and_gated(cli_runner, tiny_onnx, tmp_path):
    ref_path = tiny_onnx.with_name("tiny.reference.npz")
    ref = load_reference(ref_path)
    p = ref.outputs["output_wvp"]
    # Move the threshold into the middle of the outputs so a small shift flips some decisions.
    thr = float(np.median(p))
    shifted = _perturbed_copy(tiny_onnx, tmp_path / "s.onnx", float(p.max() - p.min()) / 4)
    res = invoke(cli_runner, ["verify", shifted, "--reference", ref_path, "--threshold", str(thr),
                              "--gate", "fp32.max_abs=1", "--gate", "fp32.min_agreement=1.0",
                              "--report-dir", tmp_path / "r"])
    assert res.exit_code == 3
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    m = data["artifacts"][0]["outputs"]["output_wvp"]
    expected_flips = int(np.sum((p >= thr) != (p + float(p.max() - p.min()) / 4 >= thr)))
    assert m["flipped"] == expected_flips > 0


def test_task_metrics_when_labels_exist(cli_runner, tiny_onnx, tmp_path):
    ref = load_reference(tiny_onnx.with_name("tiny.reference.npz"))
    labels = (ref.outputs["output_wvp"].ravel() >= np.median(ref.outputs["output_wvp"])).astype(np.int64)
    save_reference(tmp_path / "lab.npz", Reference(ref.inputs, ref.outputs, labels))
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tmp_path / "lab.npz", "--report-dir", tmp_path / "r",
                              "--threshold", str(float(np.median(ref.outputs["output_wvp"])))])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["reference_task"]["accuracy"] == 1.0
    assert data["artifacts"][0]["task"]["accuracy"] == 1.0
    assert "accuracy" in res.output


def test_verify_bad_inputs(cli_runner, tiny_onnx, tmp_path):
    ref = tiny_onnx.with_name("tiny.reference.npz")
    res = invoke(cli_runner, ["verify", tmp_path / "nope.onnx", "--reference", ref])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tmp_path / "nope.npz"])
    assert res.exit_code == 1 and "does not exist" in res.output
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", junk])
    assert res.exit_code == 1 and "not a readable reference" in res.output
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tmp_path / "other.npz"])
    assert res.exit_code == 1 and "not an optkit reference" in res.output
    # wrong input shape in the reference
    save_reference(tmp_path / "shape.npz", Reference({"input_mfcc": np.zeros((2, 1, 40, 240), np.float32)},
                                                     {"output_wvp": np.zeros((2, 1), np.float32)}))
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tmp_path / "shape.npz"])
    assert res.exit_code == 1 and "expects shape" in res.output
    # wrong input name
    save_reference(tmp_path / "name.npz", Reference({"x": np.zeros((2, 1, 40, 241), np.float32)},
                                                    {"output_wvp": np.zeros((2, 1), np.float32)}))
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tmp_path / "name.npz"])
    assert res.exit_code == 1 and "needs input" in res.output
    corrupt = tmp_path / "c.onnx"
    corrupt.write_bytes(b"\x08\x07garbage")
    res = invoke(cli_runner, ["verify", corrupt, "--reference", ref])
    assert res.exit_code == 1 and "Traceback" not in res.output
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--provider", "cuda"])
    assert res.exit_code == 1 and "CUDAExecutionProvider" in res.output
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--provider", "bogus"])
    assert res.exit_code == 2
    (tmp_path / "afile").write_text("x")
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--report-dir", tmp_path / "afile"])
    assert res.exit_code == 2 and "is a file" in res.output


def test_reference_roundtrip(tmp_path):
    x = np.ones((3, 2), np.float32)
    r = Reference({"a": x}, {"b": x * 2}, np.array([0, 1, 1]), {"k": "v"})
    save_reference(tmp_path / "r.npz", r)
    back = load_reference(tmp_path / "r.npz")
    assert back.meta == {"k": "v"} and back.labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(back.outputs["b"], x * 2)


@pytest.mark.parametrize("spec", ["int8.max_abs=0.5", "fp16.min_agreement=off"])
def test_parse_gate_option(spec):
    from optkit.verification.verify import merge_gates, parse_gate_option

    gates = merge_gates(parse_gate_option([spec]))
    prec, _, rest = spec.partition(".")
    key, _, val = rest.partition("=")
    assert getattr(gates[prec], key) == (None if val == "off" else float(val))


def test_verify_judges_a_logit_output_at_zero_and_warns_when_it_is_taken_for_a_probability(cli_runner, tmp_path):
    """A logits model: detected as logits and decided at 0 (|Δp| of the sigmoid); taken for a
    probability by override, agreement at 0.5 and the |Δp| gates would read raw scores as
    probabilities: verify says so. A probability output: nothing to warn about."""
    import onnxruntime as ort

    from serve_models import build_user_model

    for head, kind in (("logit", "logit"), ("sigmoid", "probability")):
        path = build_user_model(tmp_path / f"{head}.onnx", head=head)
        xs = np.random.default_rng(5).standard_normal((16, 3, 8, 8)).astype(np.float32)
        ys = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xs})[0]
        ref = tmp_path / f"{head}.reference.npz"
        save_reference(ref, Reference({"image": xs}, {"score": ys}))
        res = invoke(cli_runner, ["verify", path, "--reference", ref])
        assert res.exit_code == 0, res.output
        assert not [ln for ln in res.output.splitlines() if ln.startswith("WARNING:")], res.output
        assert f"output score: {kind} (" in res.output, res.output
    res = invoke(cli_runner, ["verify", tmp_path / "logit.onnx", "--reference", tmp_path / "logit.reference.npz"])
    assert "output score: logit (one value per sample over [" in res.output
    assert "judged by decisions at 0 (sigmoid >= 0.5), |Δp| of sigmoid(logit)" in res.output, res.output
    res = invoke(cli_runner, ["verify", tmp_path / "logit.onnx", "--reference", tmp_path / "logit.reference.npz",
                              "--output-kind", "score=probability"])
    warning = [ln for ln in res.output.splitlines() if ln.startswith("WARNING:")]
    assert len(warning) == 1 and "outside [0, 1]" in warning[0] and "--threshold 0" in warning[0], res.output


def test_verify_takes_a_comma_separated_provider_list_like_bench(cli_runner, tiny_onnx, tmp_path):
    """bench, lut, loadtest and recipes take `--provider cpu,openvino`; verify refused it (exit 2)."""
    ref = tiny_onnx.with_name("tiny.reference.npz")
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--provider", "cpu,openvino",
                              "--report-dir", tmp_path / "rep"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    runners = [a["runner"]["runner"] for a in data["artifacts"]]
    assert len(runners) == 2 and runners[0].startswith("onnxruntime") and runners[1] == "openvino"
    assert "[openvino] verifying tiny.onnx" in res.output
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--provider", "cpu,cpu"])
    assert res.exit_code == 2
