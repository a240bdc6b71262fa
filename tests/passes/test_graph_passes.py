from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import invoke, listdir_names
from optkit.model.artifact import Artifact
from optkit.common.errors import PassFailed
from optkit.passes import get_pass


def _foldable_model(path):
    """y = x * (2 + 3) via an Add of two Constants: one node folds away."""
    c1 = helper.make_node("Constant", [], ["c1"], value=helper.make_tensor("v1", TensorProto.FLOAT, [1], [2.0]))
    c2 = helper.make_node("Constant", [], ["c2"], value=helper.make_tensor("v2", TensorProto.FLOAT, [1], [3.0]))
    add = helper.make_node("Add", ["c1", "c2"], ["c"])
    mul = helper.make_node("Mul", ["x", "c"], ["y"])
    graph = helper.make_graph([c1, c2, add, mul], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("command", ["simplify", "fold"])
def test_command_reports_counts_and_output_matches(cli_runner, tmp_path, command):
    src = _foldable_model(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    res = invoke(cli_runner, [command, src, "-o", out])
    assert res.exit_code == 0, res.output
    import re

    before, after = map(int, re.search(r"(\d+) nodes, .* -> (\d+) nodes", res.output).groups())
    assert before == 4 and after < before
    model = onnx.load(out)
    assert after == len(model.graph.node)
    assert [n.op_type for n in model.graph.node if n.op_type != "Constant"] == ["Mul"]
    import onnxruntime as ort

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x * 5)


@pytest.mark.parametrize("command", ["simplify", "fold"])
def test_command_on_tiny_voice_model(cli_runner, tiny_onnx, tmp_path, command):
    out = tmp_path / f"{command}.onnx"
    res = invoke(cli_runner, [command, tiny_onnx, "-o", out])
    assert res.exit_code == 0, res.output
    assert "matches the input model" in res.output
    onnx.checker.check_model(onnx.load(out), full_check=True)


@pytest.mark.parametrize("command", ["simplify", "fold"])
def test_bad_inputs(cli_runner, tmp_path, command):
    out = tmp_path / "out.onnx"
    res = invoke(cli_runner, [command, tmp_path / "missing.onnx", "-o", out])
    assert res.exit_code == 1 and "does not exist" in res.output
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not protobuf \x00\xff" * 10)
    res = invoke(cli_runner, [command, corrupt, "-o", out])
    assert res.exit_code == 1 and "not a readable ONNX model" in res.output
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    res = invoke(cli_runner, [command, empty, "-o", out])
    assert res.exit_code == 1 and "empty" in res.output
    good = _foldable_model(tmp_path / "good.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[:-40])
    res = invoke(cli_runner, [command, truncated, "-o", out])
    assert res.exit_code == 1 and "Traceback" not in res.output
    res = invoke(cli_runner, [command, good, "-o", tmp_path / "no" / "out.onnx"])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = invoke(cli_runner, [command, good, "-o", good])
    assert res.exit_code == 1 and "is the input" in res.output
    res = invoke(cli_runner, [command, good])
    assert res.exit_code == 2  # -o is required
    assert not out.exists()
    assert listdir_names(tmp_path) == {"corrupt.onnx", "empty.onnx", "good.onnx", "truncated.onnx"}


def test_fold_refuses_a_result_that_changes_outputs(tmp_path, monkeypatch):
    """The pass's own equivalence check must catch a wrong transformation."""
    src = _foldable_model(tmp_path / "m.onnx")
    import onnxscript.optimizer as opt

    def sabotage(model, **kw):
        for n in model.graph.node:
            if n.op_type == "Constant":
                n.attribute[0].t.float_data[0] = 100.0
                break
        return True

    monkeypatch.setattr(opt, "fold_constants", sabotage)
    p = get_pass("fold")
    with pytest.raises(PassFailed, match="does not match its input"):
        p(Artifact.from_file(src, kind="onnx"), p.config_cls(), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
