"""optkit weights: dense weights as JSON in three layouts, schemas, exact round trips, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, listdir_names
from optkit.lesson import weights_json as wj
from optkit.common.errors import InputError

torch = pytest.importorskip("torch")

LAYOUTS = ("by-layer", "list", "augmented")


def _export(model, path: Path, n_in: int, n_ref: int = 32) -> Path:
    from optkit.verification.reference import Reference, reference_path_for, save_reference

    torch.onnx.export(model, (torch.zeros(1, n_in),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17, dynamo=False)
    xs = np.random.default_rng(3).standard_normal((n_ref, n_in)).astype(np.float32) * 2
    with torch.no_grad():
        ys = model(torch.from_numpy(xs)).numpy()
    save_reference(reference_path_for(path), Reference({"x": xs}, {"y": ys}))
    return path


@pytest.fixture(scope="module")
def xor_onnx(tmp_path_factory) -> Path:
    from optkit import zoo

    return _export(zoo.build("xor"), tmp_path_factory.mktemp("xor") / "xor.onnx", 2)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory) -> Path:
    nn = torch.nn
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 8),
                        nn.Sigmoid(), nn.Linear(8, 3)).eval()
    return _export(mlp, tmp_path_factory.mktemp("mlp") / "mlp.onnx", 6)


def _ort(path_or_bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _initializers(path: Path) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]


def test_schemas_are_valid_and_describe_what_optkit_writes(xor_onnx):
    import jsonschema

    net = wj.read_model(str(xor_onnx))
    for layout in LAYOUTS:
        schema = json.loads(wj.schema_path(layout).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(json.loads(wj.dumps(wj.to_json(net, layout))), schema)
        assert layout in schema["title"]
        assert ("(in + 1) x out" if layout == "augmented" else "in x out") in schema["description"]


def test_xor_layouts_match_the_lesson_orientation(xor_onnx, tmp_path, cli_runner):
    from optkit import zoo

    sd = zoo.build("xor").state_dict()
    w1, b1 = sd["layer1.weight"].numpy(), sd["layer1.bias"].numpy()
    w2, b2 = sd["layer2.weight"].numpy(), sd["layer2.bias"].numpy()
    docs = {}
    for layout in LAYOUTS:
        out = tmp_path / f"{layout}.json"
        assert invoke(cli_runner, ["weights", xor_onnx, "--layout", layout, "-o", out]).exit_code == 0
        docs[layout] = json.loads(out.read_text())
    by = docs["by-layer"]["layers"]
    assert list(by) == ["Layer1", "Layer2"]
    # h1 = sigmoid(xᵀ W1 + b1): W1 is in x out, i.e. nn.Linear's weight transposed
    assert np.array_equal(np.array(by["Layer1"]["weights"], np.float32), w1.T)
    assert np.array_equal(np.array(by["Layer1"]["bias"], np.float32), b1[:, None])  # [[b1], [b2]]
    assert np.array_equal(np.array(by["Layer2"]["weights"], np.float32), w2.T)      # [[w11], [w21]]
    lst = docs["list"]["layers"]
    assert [layer["name"] for layer in lst] == ["Layer1", "Layer2"] and lst[1]["bias"] == by["Layer2"]["bias"]
    aug = docs["augmented"]["layers"]
    assert np.array_equal(np.array(aug["Layer2"], np.float32), np.vstack([w2.T, b2[None]]))  # [[w11], [w21], [b1]]
    assert np.array(aug["Layer1"]).shape == (3, 2)
    assert docs["by-layer"]["activations"] == ["sigmoid", "sigmoid"]
    # the zoo model read through PyTorch gives the same numbers as its ONNX export
    r = invoke(cli_runner, ["weights", "xor", "--layout", "by-layer"])
    assert r.exit_code == 0 and json.loads(r.output)["layers"] == by


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("which", ["xor", "mlp"])
def test_round_trip_is_exact(which, layout, xor_onnx, mlp_onnx, tmp_path, cli_runner):
    from optkit.verification.reference import reference_path_for

    src = xor_onnx if which == "xor" else mlp_onnx
    js, rebuilt = tmp_path / "w.json", tmp_path / "rebuilt.onnx"
    assert invoke(cli_runner, ["weights", src, "--layout", layout, "-o", js]).exit_code == 0
    r = invoke(cli_runner, ["weights", "--load", js, "-o", rebuilt])
    assert r.exit_code == 0, r.output
    a, b = _initializers(src), _initializers(rebuilt)
    assert len(a) == len(b) and all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(a, b))
    x = np.random.default_rng(7).standard_normal((256, a[0].shape[1])).astype(np.float32) * 4
    assert np.max(np.abs(_ort(src, x) - _ort(rebuilt, x))) == 0.0
    ref = reference_path_for(src)
    r = invoke(cli_runner, ["verify", src, rebuilt, "--reference", ref, "--report-dir", tmp_path / "rep"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["artifacts"]
    assert rows[0]["outputs"]["y"] == rows[1]["outputs"]["y"]  # the same numbers as the original


def _matmul_add_model(path: Path, bias_first: bool = False) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    w2 = rng.standard_normal((5, 2)).astype(np.float32)
    add_in = ["b1", "mm1"] if bias_first else ["mm1", "b1"]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["mm1"], name="mm1"),
             helper.make_node("Add", add_in, ["h1"], name="add1"),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("MatMul", ["a1", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
                               numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_models_round_trip_exactly_in_their_own_form(tmp_path, bias_first):
    src = _matmul_add_model(tmp_path / "mm.onnx", bias_first)
    net = wj.read_model(str(src))
    assert [layer.onnx_op for layer in net.layers] == ["MatMul+Add", "MatMul"]
    assert [layer.activation for layer in net.layers] == ["relu", "none"]
    for layout in LAYOUTS:
        back = wj.from_json(json.loads(wj.dumps(wj.to_json(net, layout))))
        out = wj.save_onnx(back, tmp_path / f"{layout}.onnx")
        x = np.random.default_rng(1).standard_normal((64, 4)).astype(np.float32)
        assert np.max(np.abs(_ort(src, x) - _ort(out, x))) == 0.0


def test_model_with_non_dense_layers_names_the_first_such_node(tiny_onnx, tmp_path, cli_runner):
    import onnx

    first = next(n for n in onnx.load(str(tiny_onnx)).graph.node if n.op_type not in ("Constant",))
    out = tmp_path / "w.json"
    r = invoke(cli_runner, ["weights", tiny_onnx, "-o", out])
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and f"node {first.name!r} ({first.op_type})" in r.stderr
    assert not out.exists()


def test_quantised_model_is_refused_with_the_reason(tmp_path, mlp_onnx):
    from onnxruntime.quantization import quantize_dynamic

    q = tmp_path / "q.onnx"
    quantize_dynamic(str(mlp_onnx), str(q))
    with pytest.raises(InputError, match="quantised or fp16 model"):
        wj.read_model(str(q))


def _good_doc(xor_onnx, layout="by-layer"):
    return json.loads(wj.dumps(wj.to_json(wj.read_model(str(xor_onnx)), layout)))


def _bad_docs(xor_onnx):
    by, lst, aug = (_good_doc(xor_onnx, k) for k in LAYOUTS)
    cases = {}
    d = json.loads(json.dumps(by)); d["layers"]["Layer1"]["weights"] = [1.0, 2.0]
    cases["flat weights (wrong nesting)"] = (d, "is not of type 'array'")
    d = json.loads(json.dumps(by)); d["layers"]["Layer1"]["weights"] = [[[1.0, 2.0]], [[3.0, 4.0]]]
    cases["3-deep weights (wrong nesting)"] = (d, "is not of type 'number'")
    d = json.loads(json.dumps(by)); d["layers"] = [by["layers"]["Layer1"]]
    cases["by-layer with a list"] = (d, "is not of type 'object'")
    d = json.loads(json.dumps(lst)); d["layers"][0]["weights"][1] = [1.0, 2.0, 3.0]
    cases["ragged rows"] = (d, "ragged rows: row 2 has 3 numbers, row 1 has 2")
    d = json.loads(json.dumps(aug)); d["layers"]["Layer2"][1] = []
    cases["ragged augmented"] = (d, "should be non-empty")
    d = json.loads(json.dumps(by)); d["layers"]["Layer2"]["bias"][0][0] = "0.5"
    cases["string number"] = (d, "'0.5' is not of type 'number'")
    d = json.loads(json.dumps(by)); d["layers"]["Layer2"]["weights"][0][0] = True
    cases["boolean"] = (d, "True is not of type 'number'")
    d = json.loads(json.dumps(by)); d["layers"]["Layer1"]["bias"] = [[1.0, 2.0]]
    cases["bias as a row"] = (d, "expected a column of 2")
    d = json.loads(json.dumps(by)); d["layers"]["Layer2"]["weights"] = [[1.0], [2.0], [3.0]]
    cases["sizes that do not chain"] = (d, "has 3 inputs but the previous layer has 2 units")
    d = json.loads(json.dumps(by)); d["activations"] = ["sigmoid"]
    cases["activation count"] = (d, "'activations' has 1 entries for 2 layers")
    d = json.loads(json.dumps(by)); d["activations"] = ["sigmoid", "swish"]
    cases["unknown activation"] = (d, "'swish' is not one of")
    d = json.loads(json.dumps(by)); d["layers"]["Layer2"]["weights"][0][0] = 1e39
    cases["beyond float32"] = (d, "does not fit in float32")
    d = json.loads(json.dumps(by)); del d["format"]
    cases["no envelope"] = (d, "'format' must be")
    cases["a bare list"] = ([[1, 2], [3, 4]], "expected a JSON object")
    return cases


def test_malformed_weights_files_exit_1_with_one_line_and_no_output(xor_onnx, tmp_path, cli_runner):
    cases = list(_bad_docs(xor_onnx).items())
    cases += [("NaN literal", ('{"format": NaN}', "NaN is not a JSON number")),
              ("not JSON", ('{"layers": [[1, 2]', "not valid JSON"))]
    for what, (doc, message) in cases:
        path = tmp_path / "bad.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        before = listdir_names(tmp_path)
        for out in (tmp_path / "m.onnx", tmp_path / "other.json"):
            r = invoke(cli_runner, ["weights", "--load", path, "-o", out])
            assert r.exit_code == 1, (what, r.output)
            assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, (what, r.stderr)
            assert message in r.stderr, (what, r.stderr)
        assert listdir_names(tmp_path) == before, what


def test_load_rewrites_in_another_layout(xor_onnx, tmp_path, cli_runner):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert invoke(cli_runner, ["weights", xor_onnx, "--layout", "augmented", "-o", a]).exit_code == 0
    assert invoke(cli_runner, ["weights", "--load", a, "--layout", "list", "-o", b]).exit_code == 0
    assert json.loads(b.read_text()) == _good_doc(xor_onnx, "list")


def test_usage_errors(cli_runner, xor_onnx, tmp_path):
    assert invoke(cli_runner, ["weights"]).exit_code == 2
    assert invoke(cli_runner, ["weights", xor_onnx, "--load", tmp_path / "x.json"]).exit_code == 2
    assert invoke(cli_runner, ["weights", "--load", xor_onnx]).exit_code == 2
    assert invoke(cli_runner, ["weights", xor_onnx, "-o", tmp_path / "w.onnx"]).exit_code == 2
    assert not (tmp_path / "w.onnx").exists()
