"""quantize --int8: the validation split does not depend on file names or order (same model bytes),
is stratified and reported; each output kind gets its own gate in the search."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke

pytest.importorskip("onnx")

FAST = ("--latency-rounds", "0", "--budget", "2")


def _quantize(cli_runner, model: Path, out: Path, calib: Path, *extra: str):
    return invoke(cli_runner, ["quantize", model, "-o", out, "--int8", "--calibration", calib, *FAST, *extra])


def _copy(calib: Path, dst: Path, names: list[str]) -> Path:
    """The same files under other names (``names[i]`` for the i-th file in sorted order)."""
    dst.mkdir()
    for src, name in zip(sorted(calib.glob("*.npy")), names):
        shutil.copy(src, dst / name)
    return dst


def test_the_same_samples_in_any_file_order_give_the_same_model_bytes(cli_runner, tiny_onnx, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(1)
    for i in range(16):
        np.save(calib / f"s{i:03d}.npy", rng.standard_normal(TINY_SHAPE).astype(np.float32))
    n = 16
    copies = {
        "sorted": calib,
        "reversed": _copy(calib, tmp_path / "reversed", [f"s{n - 1 - i:03d}.npy" for i in range(n)]),
        "renamed": _copy(calib, tmp_path / "renamed", [f"speaker_{chr(122 - i)}.npy" for i in range(n)]),
        "shuffled": _copy(calib, tmp_path / "shuffled",
                          [f"f{j:03d}.npy" for j in np.random.default_rng(7).permutation(n)]),
    }
    models, infos = {}, {}
    for name, d in copies.items():
        out = tmp_path / f"{name}.int8.onnx"
        res = _quantize(cli_runner, tiny_onnx, out, d)
        assert res.exit_code in (0, 3), res.output
        assert "split: 4 of 16 samples held out for validation at random (seed 0), stratified by fp32 decision" \
            in res.output, res.output
        model = out if out.exists() else out.with_name(f"{name}.int8.failed.onnx")
        models[name] = model.read_bytes()
        infos[name] = [ln for ln in res.output.splitlines() if ln.lstrip().startswith("trial ")]
    assert len(set(models.values())) == 1, "the int8 model depends on the calibration files' names or order"
    assert all(v == infos["sorted"] for v in infos.values()), infos


def test_labelled_npz_is_stratified_by_label_and_order_does_not_matter(cli_runner, tiny_onnx, tmp_path):
    """The issue's folder sorted by class: all 6 targets last. The tail split held all of them; the
    stratified split holds targets on both sides, in the output, the info and the report."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((24, *TINY_SHAPE)).astype(np.float32)
    y = np.array([0] * 18 + [1] * 6)
    np.savez(tmp_path / "sorted.npz", x=x, y=y)
    perm = np.random.default_rng(3).permutation(24)
    np.savez(tmp_path / "shuffled.npz", x=x[perm], y=y[perm])
    outs = {}
    for name in ("sorted", "shuffled"):
        out = tmp_path / f"{name}.int8.onnx"
        res = _quantize(cli_runner, tiny_onnx, out, tmp_path / f"{name}.npz")
        assert res.exit_code in (0, 3), res.output
        assert ("stratified by label: calibration 13 label 0 / 5 label 1; validation 5 label 0 / 1 label 1"
                in res.output), res.output
        outs[name] = (out if out.exists() else out.with_name(f"{name}.int8.failed.onnx")).read_bytes()
    assert outs["sorted"] == outs["shuffled"]


def test_split_in_the_pass_info_and_one_class_is_a_warning(tiny_onnx, tmp_path):
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass

    x = np.random.default_rng(4).standard_normal((12, *TINY_SHAPE)).astype(np.float32)
    np.savez(tmp_path / "one.npz", x=x, y=np.zeros(12, np.int64))
    step = get_pass("quantize-int8")
    cfg = step.make_config({"calibration": str(tmp_path / "one.npz"), "latency_rounds": 0, "budget": 1})
    try:
        result = step(Artifact.from_file(tiny_onnx), cfg, tmp_path / "m.int8.onnx")
    except Exception as exc:  # a failed gate still carries the result
        result = exc.result
    info = result.info
    assert info["split"]["stratified_by"] == "label" and info["split"]["seed"] == 0
    assert info["split"]["classes"] == {"calibration": {"label 0": 9}, "validation": {"label 0": 3}}
    assert info["int8_search"]["split"] == info["split"]
    assert info["output_kinds"]["output_wvp"]["kind"] == "probability"
    warnings = [m for m in result.messages if m.startswith("WARNING:") and "one class only" in m]
    assert len(warnings) == 2, result.messages


def test_the_report_shows_the_split_and_the_kinds():
    from optkit.release.report import _split_text

    html = _split_text({"split": {"seed": 0, "stratified_by": "label", "classes": {
        "calibration": {"label 0": 9, "label 1": 3}, "validation": {"label 0": 3, "label 1": 1}}, "warnings": []},
        "output_kinds": {"emb": {"kind": "embedding", "why": "16 unbounded values per sample"}}})
    assert "classes by label: calibration 9 label 0 / 3 label 1; validation 3 label 0 / 1 label 1" in html
    assert "emb: embedding (16 unbounded values per sample)" in html


@pytest.mark.parametrize("builder, output, kind, figure", [
    ("build_embedding_model", "emb", "embedding", "cosine min"),
    ("build_frame_model", "vad", "frames", "agreement"),
])
def test_each_output_kind_gets_its_gate_in_the_search(cli_runner, tmp_path, builder, output, kind, figure):
    import kind_models

    model = getattr(kind_models, builder)(tmp_path / "m.onnx")
    calib = kind_models.write_calibration(tmp_path / "calib", 24)
    res = _quantize(cli_runner, model, tmp_path / "m.int8.onnx", calib)
    # what is tested is the gate each kind gets, not whether this CPU's int8 kernels pass it
    # (a tiny frame model flips 1 of 96 frame decisions with u8 weights on an AVX2-only CPU)
    assert res.exit_code in (0, 3), res.output
    assert f"output {output}: {kind} (" in res.output
    trial = next(ln for ln in res.output.splitlines() if ln.lstrip().startswith("trial 0:"))
    assert figure in trial, trial
    if res.exit_code == 0:
        settings = json.loads((tmp_path / "m.int8.search.json").read_text())
        assert settings["key"]["outputs"][output][0] == kind
        assert settings["trials"][0]["kind"] == kind
    else:  # judged by the kind's own figure: frames by per-frame decisions, embeddings by cosine
        assert ("decision agreement" if kind == "frames" else "cosine") in res.output.splitlines()[-1]


def test_an_embedding_search_rejects_what_its_cosine_gate_rejects(cli_runner, tmp_path):
    """A per-output gate no int8 model can meet (recipe/step ``outputs``): the search fails on the
    cosine, not on |Δ|."""
    import kind_models

    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass
    from optkit.passes.quantize_int8 import Int8SearchFailed

    model = kind_models.build_embedding_model(tmp_path / "m.onnx")
    calib = kind_models.write_calibration(tmp_path / "calib", 24)
    step = get_pass("quantize-int8")
    cfg = step.make_config({"calibration": str(calib), "latency_rounds": 0, "budget": 1,
                            "outputs": {"emb": {"gates": {"int8": {"min_mean_cosine": 0.9999999}}}}})
    with pytest.raises(Int8SearchFailed, match="mean per-sample cosine"):
        step(Artifact.from_file(model), cfg, tmp_path / "m.int8.onnx")


def test_a_bad_output_kind_override_is_one_line_exit_1(cli_runner, tmp_path):
    import kind_models

    model = kind_models.build_embedding_model(tmp_path / "m.onnx")
    calib = kind_models.write_calibration(tmp_path / "calib", 8)
    for bad, msg in (("nope=embedding", "the model has no output 'nope' (its outputs: emb)"),
                     ("emb=vector", "unknown output kind 'vector'")):
        res = _quantize(cli_runner, model, tmp_path / "x.int8.onnx", calib, "--output-kind", bad)
        assert res.exit_code == 1, res.output
        assert res.output.strip().splitlines()[-1].startswith("Error: ") and msg in res.output
        assert not (tmp_path / "x.int8.onnx").exists()
    res = _quantize(cli_runner, model, tmp_path / "o.int8.onnx", calib, "--output-kind", "emb=other")
    assert "output emb: other (set by override)" in res.output, res.output


def test_output_gate_on_the_cli_is_the_steps_per_output_gate(cli_runner, tmp_path):
    """--output-gate NAME:int8.LIMIT=VALUE: the search checks that output against its own limit (one
    no int8 model can meet: exit 3 on the cosine); bad ones are one line, exit 1, nothing written."""
    import kind_models

    model = kind_models.build_embedding_model(tmp_path / "m.onnx")
    calib = kind_models.write_calibration(tmp_path / "calib", 24)
    res = _quantize(cli_runner, model, tmp_path / "m.int8.onnx", calib, "--budget", "1",
                    "--output-gate", "emb:int8.min_mean_cosine=0.9999999")
    assert res.exit_code == 3, res.output
    assert "mean per-sample cosine" in res.output.splitlines()[-1] and not (tmp_path / "m.int8.onnx").exists()
    res = _quantize(cli_runner, model, tmp_path / "m.int8.onnx", calib, "--budget", "1",
                    "--output-gate", "emb:int8.min_mean_cosine=0.5", "--output-gate", "emb:int8.min_sample_cosine=0.5")
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "m.int8.search.json").read_text())
    assert settings["key"]["outputs"]["emb"][1]["min_mean_cosine"] == 0.5
    for bad, msg in (("nope:int8.min_mean_cosine=0.5", "the model has no output 'nope' (its outputs: emb)"),
                     ("emb:int8.min_cosinus=0.5", "unknown limit min_cosinus"),
                     ("emb:int8.min_sample_cosine=1.5", "out of range"),
                     ("emb:min_sample_cosine=0.5", "expected NAME:PRECISION.LIMIT=VALUE")):
        res = _quantize(cli_runner, model, tmp_path / "x.int8.onnx", calib, "--output-gate", bad)
        assert res.exit_code == 1, res.output
        assert res.output.strip().splitlines()[-1].startswith("Error: ") and msg in res.output, res.output
        assert "Traceback" not in res.output and not (tmp_path / "x.int8.onnx").exists()
    res = _quantize(cli_runner, model, tmp_path / "x.int8.onnx", calib, "--output-gate", "emb:fp16.max_abs=1")
    assert res.exit_code == 2 and "checks the int8 gate only" in res.output, res.output
