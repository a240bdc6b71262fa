from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import invoke

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"

RECIPE = """\
name: tiny
model: {model}
steps:
  - pass: export
    params:
      reference_samples: 8
  - pass: simplify
    params:
      check_runs: {check_runs}
  - pass: fold
verify:
  threshold: 0.5
"""


def write_recipe(tmp_path: Path, text: str | None = None, check_runs: int = 1) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text if text is not None else RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=check_runs))
    return p


def test_run_cache_and_invalidation(cli_runner, tmp_path):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "3 ran, 0 cached" in res.output
    for f in ("export.onnx", "export.reference.npz", "simplify.onnx", "fold.onnx", "manifest.json",
              "report.json", "report.html"):
        assert (out / f).exists(), f
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    art = manifest["simplify"]["artifact"]
    for key in ("path", "kind", "precision", "sha256", "size", "pass", "config", "parent", "tool_versions", "created"):
        assert key in art, key
    assert art["parent"] == manifest["export"]["artifact"]["sha256"]
    assert art["path"] == "simplify.onnx" and art["pass"] == "simplify" and art["config"]["check_runs"] == 1
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and len(report["artifacts"]) == 3

    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "0 ran, 3 cached" in res.output and "cached: fold.onnx" in res.output

    from optkit.common.fileio import sha256_file

    old_sim = sha256_file(out / "simplify.onnx")
    write_recipe(tmp_path, check_runs=2)  # change a simplify parameter
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[export] cached" in res.output and "[simplify] running" in res.output
    # fold's cache key includes its parent's sha256: it re-runs exactly when simplify's bytes changed
    if sha256_file(out / "simplify.onnx") == old_sim:
        assert "[fold] cached" in res.output
    else:
        assert "[fold] running" in res.output

    text = RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=2).replace("reference_samples: 8", "reference_samples: 8\n      opset: 15")
    write_recipe(tmp_path, text)  # a new export invalidates everything after it
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert "3 ran, 0 cached" in res.output

    res = invoke(cli_runner, ["run", recipe, "-o", out, "--force"])
    assert "3 ran, 0 cached" in res.output


def test_tampered_artifact_is_rebuilt(cli_runner, tmp_path):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    assert invoke(cli_runner, ["run", recipe, "-o", out]).exit_code == 0
    (out / "fold.onnx").write_bytes(b"tampered")
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[fold] running" in res.output


def test_changed_model_source_reruns_export(cli_runner, tmp_path):
    src = tmp_path / "m.py"
    src.write_text(MODELS.read_text())
    recipe = write_recipe(tmp_path, RECIPE.format(model="m.py:tiny_voice", check_runs=1))
    out = tmp_path / "out"
    assert invoke(cli_runner, ["run", recipe, "-o", out]).exit_code == 0
    src.write_text(MODELS.read_text() + "\n# edited\n")
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert "[export] running" in res.output


@pytest.mark.parametrize("text, message", [
    ("model: x\nsteps:\n  - pass: export\n  - pass: simplfy\n", "line 4: unknown pass 'simplfy'"),
    ("model: x\nsteps:\n  - pass: export\n  - pass: simplify\n    params:\n      chek_runs: 2\n",
     "line 6: step simplify: unknown parameter chek_runs"),
    ("model: x\nstepz: []\n", "line 2: unknown key 'stepz'"),
    ("model: x\nsteps:\n  - pass: simplify\n", "the first step must be 'export'"),
    ("model: x\nsteps:\n  - pass: export\n  - pass: fold\n    input: nowhere\n", "line 5: input 'nowhere' is not an earlier step"),
    ("model: x\nsteps: [\n", "not valid YAML"),
    ("steps:\n  - pass: export\n", "'model' is missing"),
    ("model: x\nsteps:\n  - pass: export\n  - pass: simplify\n    params:\n      check_runs: many\n",
     "line 6: step simplify: parameter check_runs: expected an integer"),
    ("model: x\nsteps:\n  - pass: export\nverify:\n  gates:\n    int9: {max_abs: 1}\n", "line 5: verify.gates: unknown precision 'int9'"),
    ("model: x\nsteps:\n  - pass: export\n  - pass: export\n", "duplicate step name"),
    ("- just\n- a list\n", "must be a mapping"),
    ("model: x\nsteps:\n  - pass: export\nverify:\n  provider: [cpu, gpu]\n", "line 5: verify.provider: unknown runtime 'gpu'"),
])
def test_recipe_errors_name_the_line(cli_runner, tmp_path, text, message):
    recipe = write_recipe(tmp_path, text)
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_missing_recipe_and_bad_output(cli_runner, tmp_path):
    res = invoke(cli_runner, ["run", tmp_path / "none.yaml", "-o", tmp_path / "out"])
    assert res.exit_code == 1 and "does not exist" in res.output
    (tmp_path / "file").write_text("x")
    res = invoke(cli_runner, ["run", write_recipe(tmp_path), "-o", tmp_path / "file"])
    assert res.exit_code == 2  # click: output must be a directory


def test_skipped_step_is_reported_never_passed(cli_runner, tmp_path, monkeypatch):
    import sys

    from optkit import passes

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
    monkeypatch.setitem(passes.REGISTRY, "never", "skip_pass:Never")
    text = RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=1) .replace(
        "  - pass: fold\n", "  - pass: fold\n  - name: engine\n    pass: never\n    params: {reason: no GPU here}\n  - pass: simplify\n    name: after\n    input: engine\n")
    recipe = write_recipe(tmp_path, text)
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    assert "skipped engine: no GPU here" in res.output
    assert "skipped after: its input step 'engine' was skipped" in res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["step"] for s in report["skipped"]} == {"engine", "after"}
    assert all(not a["path"].endswith("engine.onnx") for a in report["artifacts"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["artifacts"]
    assert manifest["engine"]["status"] == "skipped" and manifest["engine"]["reason"] == "no GPU here"
    # a second run re-tries the skipped step (it may be runnable now) and reuses the rest
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    assert "0 ran, 3 cached, 2 skipped" in res.output


def test_failing_gate_in_recipe_exits_3(cli_runner, tmp_path):
    text = RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=1) + "  gates:\n    fp32: {min_snr_db: 1000}\n"
    res = invoke(cli_runner, ["run", write_recipe(tmp_path, text), "-o", tmp_path / "out"])
    assert res.exit_code == 3, res.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["passed"] is False


def test_default_recipe_found_from_another_directory(tmp_path, monkeypatch):
    import optkit
    from optkit.pipeline.recipe import default_recipe_path

    monkeypatch.chdir(tmp_path)  # no ./recipes here: the recipe beside the package, or the packaged demo
    package = Path(optkit.__file__).resolve().parent
    found = default_recipe_path()
    # a source checkout (editable install) finds recipes/ beside optkit/; an installed wheel (tox,
    # CI) finds optkit/demo/ - never a path under optkit/pipeline/, where this module lives
    assert found.is_file()
    assert found in (package.parent / "recipes" / "voice_verification.yaml",
                     package / "demo" / "voice_verification.yaml")


def test_run_exports_the_last_verified_step_or_a_chosen_one_to_a_model_repository(cli_runner, tmp_path):
    from optkit.serve.repository import check_verified

    recipe = write_recipe(tmp_path)
    out, repo = tmp_path / "out", tmp_path / "models"
    res = invoke(cli_runner, ["run", recipe, "-o", out, "--export-to-repository", repo / "voice"])
    assert res.exit_code == 0, res.output
    assert f"exported fold.onnx as {repo / 'voice' / '1'}" in res.output  # the last verified step
    v1 = repo / "voice" / "1"
    assert {"fold.onnx", "manifest.json", "report.json", "report.html"} <= {p.name for p in v1.iterdir()}
    assert check_verified(v1 / "fold.onnx", "cpu") == ""  # servable as it is
    res = invoke(cli_runner, ["run", recipe, "-o", out, "--export-to-repository", f"{repo / 'voice'}:simplify"])
    assert res.exit_code == 0, res.output
    assert "0 ran, 3 cached" in res.output and f"exported simplify.onnx as {repo / 'voice' / '2'}" in res.output
    assert check_verified(repo / "voice" / "2" / "simplify.onnx", "cpu") == ""


@pytest.mark.parametrize("target, code, message", [
    ("{repo}/voice:nosuch", 1, "Error: --export-to-repository: 'nosuch' is not a step of this recipe (export, "
                               "simplify, fold)"),
    ("{repo}/bad name", 1, "Error: --export-to-repository: 'bad name' is not a model name"),
])
def test_run_export_target_is_checked_before_the_run(cli_runner, tmp_path, target, code, message):
    recipe = write_recipe(tmp_path)
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out",
                              "--export-to-repository", target.format(repo=tmp_path / "models")])
    assert res.exit_code == code and res.output.strip().splitlines()[-1].startswith(message), res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out", "--no-verify",
                              "--export-to-repository", tmp_path / "models" / "voice"])
    assert res.exit_code == 2 and "need verification" in res.output


def test_parse_export_target_keeps_colons_that_belong_to_the_path():
    from optkit.cli.run_cmd import parse_export_target

    assert parse_export_target("models/voice:int8", ["int8"]) == ("models/voice", "int8")
    assert parse_export_target("models/voice", ["int8"]) == ("models/voice", None)
    assert parse_export_target("C:/models/voice", ["int8"]) == ("C:/models/voice", None)
    assert parse_export_target("a:b/voice", ["int8"]) == ("a:b/voice", None)


def test_run_export_of_a_step_that_was_not_verified_is_an_error_with_the_reason(cli_runner, tmp_path):
    text = RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=1).replace("verify:\n",
                                                                              "verify:\n  artifacts: [fold]\n")
    recipe = write_recipe(tmp_path, text)
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out",
                              "--export-to-repository", f"{tmp_path / 'models' / 'voice'}:simplify"])
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines()[-1] == ("Error: --export-to-repository: step 'simplify' has no verified "
                                                   "artifact (it is not in verify.artifacts)")
    assert not (tmp_path / "models" / "voice").exists() or not list((tmp_path / "models" / "voice").iterdir())
