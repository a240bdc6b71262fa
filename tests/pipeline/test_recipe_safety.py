"""Issue 11: recipes cannot write outside -o, share a file between steps, or fail late."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import invoke

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
HEAD = "name: t\nmodel: {model}\nsteps:\n  - pass: export\n    params: {{reference_samples: 4, input_shape: [1, 6]}}\n"


def _recipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(HEAD.format(model=f"{MODELS}:affine") + body)
    return p


@pytest.mark.parametrize("body, message", [
    ("  - pass: simplify\n    output: ../../x.onnx\n", "line 6: output '../../x.onnx' must be a plain file name"),
    ("  - pass: simplify\n    output: {abs}\n", "must be a plain file name inside the output directory"),
    ("  - pass: simplify\n    name: ../../x\n", "line 6: step name '../../x' must be a plain file name"),
    ("  - pass: simplify\n    name: .hidden\n", "must not start with '.'"),
    ("  - pass: simplify\n    output: manifest.json\n", "would write manifest.json, which `optkit run` writes itself"),
    ("  - pass: simplify\n    output: report.html\n", "would write report.html"),
    ("  - pass: simplify\n    output: export.onnx\n", "step simplify would write export.onnx, its own input"),
    ("  - pass: simplify\n    output: export.reference.npz\n", "would write export.reference.npz, the file of step export"),
    ("  - pass: simplify\n    output: a.onnx\n  - pass: fold\n    input: export\n    output: a.onnx\n",
     "step fold would write a.onnx, the file of step simplify"),
    ("  - pass: [simplify]\n", "line 6: step 2: 'pass' must be a single name, got a list (write 'pass: simplify')"),
    ("  - pass: simplify\n    input: {a: 1}\n", "'input' must be a single name, got a mapping"),
    ("model: other\n", "line 6: not valid YAML (duplicate key 'model' (first on line 2))"),
    ("  - pass: simplify\n    params: {check_runs: 1, check_runs: 2}\n", "duplicate key 'check_runs'"),
    ("verify:\n  threshold: high\n", "line 7: verify.threshold: expected a finite number, got 'high'"),
    ("verify:\n  threshold: .nan\n", "verify.threshold: expected a finite number"),
    ("verify:\n  batch_size: 0\n", "line 7: verify.batch_size: expected a whole number >= 1, got 0"),
    ("verify:\n  threads: -2\n", "verify.threads: expected a whole number >= 1"),
    ("verify:\n  localize: sometimes\n", "verify.localize: expected one of on-failure, always, never"),
    ("verify:\n  enabled: maybe\n", "verify.enabled: expected true or false"),
    ("verify:\n  artifacts: export\n", "verify.artifacts: expected a list of step names"),
])
def test_unsafe_recipe_is_refused_before_any_work(cli_runner, tmp_path, body, message):
    victim = tmp_path / "victim.onnx"
    body = body.replace("{abs}", str(victim))
    recipe = _recipe(tmp_path, body)
    out = tmp_path / "a" / "b" / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 1, res.output
    assert message in res.output, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert not (tmp_path / "a").exists()  # nothing ran, not even the output directory
    assert not victim.exists() and not (tmp_path / "x.onnx").exists()


def test_output_name_is_in_the_cache_key(cli_runner, tmp_path):
    recipe = _recipe(tmp_path, "  - pass: simplify\n    output: s1.onnx\nverify: {enabled: false}\n")
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    recipe.write_text(recipe.read_text().replace("s1.onnx", "s2.onnx"))
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[export] cached" in res.output and "[simplify] running simplify -> s2.onnx" in res.output
    manifest = json.loads((out / "manifest.json").read_text())["artifacts"]
    assert manifest["simplify"]["artifact"]["path"] == "s2.onnx" and (out / "s2.onnx").exists()
