"""Recipes: ``verify: outputs:`` (each output's kind and own limits) checked at load time and handed
to the int8 step's search."""
from __future__ import annotations

from pathlib import Path

import pytest

from optkit.common.errors import RecipeError
from optkit.pipeline.recipe import _with_verify_gate, load_recipe, output_settings

RECIPE = """\
name: r
model: voice-resnet
steps:
  - pass: export
verify:
  gates: {{int8: {{min_agreement: 0.99}}}}
  outputs:
{outputs}
"""


def _write(tmp_path: Path, outputs: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(outputs=outputs))
    return p


def test_verify_outputs_give_kinds_and_per_output_gates(tmp_path):
    recipe = load_recipe(_write(tmp_path, "    emb: {kind: embedding, gates: {int8: {min_sample_cosine: 0.9}}}\n"
                                          "    vad: {kind: frames}"))
    kinds, gates = output_settings(recipe.verify)
    assert kinds == {"emb": "embedding", "vad": "frames"}
    g = gates["emb"]["int8"]
    assert g.min_sample_cosine == 0.9 and g.min_agreement == 0.99  # the recipe's gates, the output's on top
    assert set(gates) == {"emb"}
    params = _with_verify_gate("quantize-int8", {"calibration": "c"}, recipe.verify)
    assert params["outputs"] == {"emb": {"kind": "embedding", "gates": {"int8": {"min_sample_cosine": 0.9}}},
                                 "vad": {"kind": "frames"}}
    own = _with_verify_gate("quantize-int8", {"outputs": {"emb": {"kind": "other"}}}, recipe.verify)
    assert own["outputs"] == {"emb": {"kind": "other"}}  # a step's own outputs win
    assert "outputs" not in _with_verify_gate("quantize-fp16", {}, recipe.verify)


@pytest.mark.parametrize("outputs, message", [
    ("    emb: {kind: vector}", "unknown output kind 'vector'"),
    ("    emb: {knd: embedding}", "unknown key knd"),
    ("    emb: {gates: {int8: {min_cosines: 0.9}}}", "unknown limit min_cosines"),
    ("    emb: {gates: {int9: {min_cosine: 0.9}}}", "unknown precision 'int9'"),
])
def test_bad_verify_outputs_are_a_recipe_error_with_the_line(tmp_path, outputs, message):
    with pytest.raises(RecipeError, match=message) as exc:
        load_recipe(_write(tmp_path, outputs))
    assert "line 7" in str(exc.value)
