"""The XOR lesson model: deterministic training, bundled weights and rows, the whole recipe."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from optkit import zoo  # noqa: E402
from optkit.zoo import xor  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def test_training_is_seeded_and_deterministic():
    a, log_a = xor.train(steps=60)
    b, log_b = xor.train(steps=60)
    c, _ = xor.train(seed=2, steps=60)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert log_a == {**log_b, "seconds": log_a["seconds"]}


def test_default_training_learns_xor_and_matches_the_bundled_weights():
    model, log = xor.train()
    assert xor.decisions_right(np.array(log["probabilities"]))
    bundled = zoo.build("xor")
    assert not bundled.training
    # the same run on another CPU may round differently in the last bits; the weights are ~10
    for k, v in bundled.state_dict().items():
        assert torch.allclose(v, model.state_dict()[k], atol=1e-3), k
    with torch.no_grad():
        probs = bundled(torch.from_numpy(xor.X)).numpy().ravel()
    assert xor.decisions_right(probs)
    assert np.all(np.abs(probs - xor.Y) < 0.01)


def test_bundled_rows_are_the_lessons():
    with np.load(REPO / "calibration_data" / "xor.npz") as z:
        assert z["x"].dtype == np.float32 and z["x"].tolist() == [[1, 1], [1, 0], [0, 1], [0, 0]]
        assert z["y"].tolist() == [0, 1, 1, 0]
    assert xor.WEIGHTS.stat().st_size < 10_000
    assert xor.WEIGHTS in zoo.source_files("xor")


def test_xor_recipe_keeps_all_four_decisions_in_every_artifact_on_both_runtimes(tmp_path, cli_runner):
    from conftest import invoke

    from optkit.runtime.registry import make_runner

    out = tmp_path / "xor-out"
    r = invoke(cli_runner, ["run", REPO / "recipes" / "xor.yaml", "-o", out])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    steps = {"export", "simplify", "fold", "fp16", "int8"}
    assert steps <= set(manifest["artifacts"])
    report = json.loads((out / "report.json").read_text())
    assert report["passed"]
    checked = set()
    for path in sorted(out.glob("*.onnx")):
        for provider in ("cpu", "openvino"):
            with make_runner(path, provider=provider) as runner:
                probs = runner.infer({"x": xor.X})["y"].ravel()
            assert probs.shape == (4,)
            assert ((probs >= 0.5).astype(int)).tolist() == [0, 1, 1, 0], (path.name, provider, probs)
            checked.add((path.name, provider))
    assert len(checked) == 2 * 5
    # the report covers the same ten (artifact, runtime) pairs, each with all four decisions right
    seen = {(Path(a["path"]).name, a["runner"]["runner"]) for a in report["artifacts"]}
    assert seen == {(n, "onnxruntime[cpu]" if p == "cpu" else "openvino") for n, p in checked}
    assert {a["precision"] for a in report["artifacts"]} == {"fp32", "fp16", "int8"}
    assert all(a["task"]["accuracy"] == 1.0 for a in report["artifacts"])
