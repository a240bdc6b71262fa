"""Verification results are cached under a key of everything they depend on, and every file a
cached step depends on (side files included) is re-checked by its sha256."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import invoke
from optkit.common.fileio import sha256_file

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
RECIPE = f"""\
name: tiny
model: {MODELS}:tiny_voice
steps:
  - pass: export
    params: {{reference_samples: 8}}
  - pass: simplify
    params: {{check_runs: 1}}
verify: {{threshold: 0.5}}
"""


def _edit_reference_outputs(path: Path, delta: float) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k in arrays:
        if k.startswith("output."):
            arrays[k] = arrays[k] + np.float32(delta)
    with open(path, "wb") as f:  # np.savez(path) would append .npz to a name without it
        np.savez(f, **arrays)


def test_cached_rerun_reuses_verification_and_edited_reference_invalidates(cli_runner, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "report.json").read_text())
    assert not any(a["cached"] for a in first["artifacts"])

    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "0 ran, 2 cached" in res.output and "cached result" in res.output
    second = json.loads((out / "report.json").read_text())
    assert all(a["cached"] for a in second["artifacts"])
    for a, b in zip(first["artifacts"], second["artifacts"]):
        assert a["outputs"] == b["outputs"] and a["passed"] == b["passed"]

    # +0.3 on the reference outputs: the export step's side file no longer has its recorded
    # sha256, so export runs again (rewriting the reference) and nothing stale is used
    ref = out / "export.reference.npz"
    good = sha256_file(ref)
    _edit_reference_outputs(ref, 0.3)
    res = invoke(cli_runner, ["run", recipe, "-o", out])
    assert res.exit_code == 0, res.output
    assert "[export] running" in res.output
    assert sha256_file(ref) == good
    third = json.loads((out / "report.json").read_text())
    assert third["passed"] and third["reference"]["sha256"] == good


def test_verification_key_covers_the_reference(tmp_path, tiny_onnx):
    """Library level: the same artifact against an edited reference is verified again."""
    from optkit.verification.reference import load_reference, reference_path_for
    from optkit.verification.verify import verify_artifacts

    ref_path = reference_path_for(tiny_onnx)
    cache = tmp_path / "cache"
    r1 = verify_artifacts([tiny_onnx], load_reference(ref_path), cache_dir=cache)
    r2 = verify_artifacts([tiny_onnx], load_reference(ref_path), cache_dir=cache)
    assert r1.passed and r2.results[0].cached and r2.results[0].outputs == r1.results[0].outputs
    _edit_reference_outputs(ref_path, 0.3)
    r3 = verify_artifacts([tiny_onnx], load_reference(ref_path), cache_dir=cache)
    assert not r3.results[0].cached and not r3.passed
    assert r3.results[0].outputs["output_wvp"]["max_abs"] > 0.29
    r4 = verify_artifacts([tiny_onnx], load_reference(ref_path), cache_dir=cache, gates=None, threshold=0.6)
    assert not r4.results[0].cached  # another threshold: another key
