"""quantize --fp16: io types, finite outputs, overflow detection and handling, bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke, listdir_names

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from optkit.model.artifact import Artifact  # noqa: E402
from optkit.common.errors import PassFailed  # noqa: E402
from optkit.model.onnx_utils import model_precision  # noqa: E402
from optkit.passes import get_pass  # noqa: E402
from optkit.passes.quantize_fp16 import QuantizeFp16Config  # noqa: E402
from optkit.verification.reference import load_reference, reference_path_for  # noqa: E402


def fp16_cli(cli_runner, model: Path, out: Path, *extra):
    return invoke(cli_runner, ["quantize", model, "-o", out, "--fp16", *extra])


def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def save_model(path: Path, nodes, inits, width: int = 64, out_width: int = 8) -> Path:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_width])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def overflow_model(tmp_path) -> Path:
    """x (N, 64) ~ N(0,1) -> MatMul with 1e4 weights (|x| ~ 8e4 > 65504) -> Abs -> Mul 1e-3 -> Relu.

    Every weight fits fp16; the MatMul and Abs outputs overflow it. (Abs keeps ORT from fusing
    the scale into the MatMul, which would hide the overflow.)"""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["big"], name="big_matmul"),
             helper.make_node("Abs", ["big"], ["big_abs"], name="abs"),
             helper.make_node("Mul", ["big_abs", "s"], ["small"], name="scale_down"),
             helper.make_node("Relu", ["small"], ["y"], name="relu")]
    return save_model(tmp_path / "overflow.onnx", nodes,
                      {"W": np.full((64, 8), 1e4, np.float32), "s": np.array(1e-3, np.float32)})


@pytest.fixture
def big_initializer_model(tmp_path) -> Path:
    """y = (x / 1e5) * 1e5: activations stay small, the constants do not fit fp16."""
    nodes = [helper.make_node("Div", ["x", "c"], ["t"], name="div_big"),
             helper.make_node("Mul", ["t", "c2"], ["y"], name="mul_big")]
    return save_model(tmp_path / "bigconst.onnx", nodes,
                      {"c": np.array(1e5, np.float32), "c2": np.array(1e5, np.float32)}, out_width=64)


def test_tiny_model_keeps_fp32_io_and_matches_reference(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / "tiny.fp16.onnx"
    r = fp16_cli(cli_runner, tiny_onnx, out)
    assert r.exit_code == 0, r.output
    assert "every activation within the fp16 range" in r.output and "outputs finite" in r.output
    model = onnx.load(str(out))
    assert model_precision(model) == "fp16"
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    fp16_inits = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
    assert len(fp16_inits) >= 17  # every Conv weight
    ref = load_reference(reference_path_for(tiny_onnx))
    got = run_ort(out, ref.inputs["input_mfcc"])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref.outputs["output_wvp"], atol=5e-3)


def test_no_keep_io_types_makes_fp16_io(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / "io16.onnx"
    r = fp16_cli(cli_runner, tiny_onnx, out, "--no-keep-io-types")
    assert r.exit_code == 0, r.output
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    x = np.random.default_rng(0).standard_normal((2, *TINY_SHAPE)).astype(np.float16)
    assert np.isfinite(run_ort(out, x)).all()


def test_block_lists_keep_nodes_fp32(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / "blocked.onnx"
    node = "/layer1/layer1.0/conv2/Conv"
    r = fp16_cli(cli_runner, tiny_onnx, out, "--node-block-list", node, "--op-block-list", "Gemm")
    assert r.exit_code == 0, r.output
    model = onnx.load(str(out))
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    for n in model.graph.node:
        if n.name == node or n.op_type == "Gemm":
            weights = [i for i in n.input if i in dtypes]
            assert weights and all(dtypes[w] == TensorProto.FLOAT for w in weights), n.name
    other = next(n for n in model.graph.node if n.op_type == "Conv" and n.name != node)
    assert dtypes[other.input[1]] == TensorProto.FLOAT16


def test_overflow_is_detected_and_kept_fp32(cli_runner, overflow_model, tmp_path):
    out = tmp_path / "ovf.fp16.onnx"
    r = fp16_cli(cli_runner, overflow_model, out)
    assert r.exit_code == 0, r.output
    assert "activations beyond the fp16 range" in r.output and "big (max |x|" in r.output
    assert "kept in fp32 because of fp16 overflow: 3 nodes (big_matmul, abs, scale_down)" in r.output
    model = onnx.load(str(out))
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    assert dtypes["W"] == TensorProto.FLOAT  # the blocked MatMul computes in fp32
    x = np.random.default_rng(5).standard_normal((4, 64)).astype(np.float32)
    got, want = run_ort(out, x), run_ort(overflow_model, x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def _elem_types(model) -> dict[str, int]:
    return {vi.name: vi.type.tensor_type.elem_type
            for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}


def test_overflowing_tensors_stay_fp32_unlike_a_plain_conversion(cli_runner, overflow_model, tmp_path):
    """A plain conversion types the overflowing tensors fp16 (inf on a GPU; ORT CPU upcasts fp16
    ops internally, so it would not show); the pass keeps them fp32 end to end."""
    from onnxconverter_common import float16

    plain = float16.convert_float_to_float16(onnx.load(str(overflow_model)), keep_io_types=True,
                                             max_finite_val=65504.0)
    plain_types = _elem_types(plain)
    assert plain_types["big"] == TensorProto.FLOAT16 and plain_types["big_abs"] == TensorProto.FLOAT16

    out = tmp_path / "ovf.fp16.onnx"
    assert fp16_cli(cli_runner, overflow_model, out).exit_code == 0
    model = onnx.load(str(out))
    ours = _elem_types(model)
    nodes = {n.name: n for n in model.graph.node}
    for name in ("big_matmul", "abs"):  # the nodes producing the overflowing tensors
        produced = nodes[name].output[0]
        assert ours[produced] == TensorProto.FLOAT, name
        for n in model.graph.node:
            if produced in n.input:
                assert n.op_type != "Cast" or helper.get_attribute_value(n.attribute[0]) != TensorProto.FLOAT16


def test_overflow_fail_mode_exits_1_without_output(cli_runner, overflow_model, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = fp16_cli(cli_runner, overflow_model, out_dir / "ovf.fp16.onnx", "--overflow", "fail")
    assert r.exit_code == 1
    assert "fp16 overflow" in r.output and "big_abs (max |x|" in r.output and "--overflow keep-fp32" in r.output
    assert listdir_names(out_dir) == set()


def test_initializers_beyond_fp16_are_kept_fp32(big_initializer_model, tmp_path):
    step = get_pass("quantize-fp16")
    out = tmp_path / "bc.fp16.onnx"
    result = step(Artifact.from_file(big_initializer_model), QuantizeFp16Config(), out)
    assert set(result.info["overflow_initializers"]) == {"c", "c2"}
    assert set(result.info["overflow_blocked_nodes"]) == {"div_big", "mul_big"}
    assert any("initializers beyond 65504" in m for m in result.messages)
    dtypes = {i.name: i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert dtypes["c"] == TensorProto.FLOAT and dtypes["c2"] == TensorProto.FLOAT
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(run_ort(out, x), x, rtol=1e-3, atol=1e-3)


def test_inf_output_check_catches_a_missed_overflow(tmp_path, monkeypatch):
    """If the scan missed an overflow, the final run of the fp16 model still refuses it.

    (ORT CPU computes most fp16 ops in fp32 internally, so the overflow here is at the fp16
    model input, which it cannot hide.)"""
    from optkit.passes import quantize_fp16

    model = save_model(tmp_path / "scale.onnx", [helper.make_node("Mul", ["x", "s"], ["y"], name="mul")],
                       {"s": np.array(1e-5, np.float32)}, out_width=64)
    check = tmp_path / "check"
    check.mkdir()
    np.save(check / "big.npy", np.full((64,), 1e5, np.float32))
    monkeypatch.setattr(quantize_fp16, "scan_overflow",
                        lambda *a, **k: quantize_fp16.OverflowScan({}, {}, []))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cfg = QuantizeFp16Config(keep_io_types=False, check_data=str(check))
    with pytest.raises(PassFailed, match="inf/NaN"):
        get_pass("quantize-fp16")(Artifact.from_file(model), cfg, out_dir / "o.onnx")
    assert listdir_names(out_dir) == set()


def test_check_data_is_used(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "cd.onnx"
    r = fp16_cli(cli_runner, tiny_onnx, out, "--check-data", calib_dir)
    assert r.exit_code == 0, r.output
    assert f"8 {calib_dir} inputs" in r.output


def test_fingerprint_follows_check_data(calib_dir):
    step = get_pass("quantize-fp16")
    assert step.fingerprint(QuantizeFp16Config()) == ""
    cfg = step.make_config({"check_data": str(calib_dir), "node_block_list": "a,b"})
    assert cfg.node_block_list == ("a", "b")
    before = step.fingerprint(cfg)
    np.save(calib_dir / "new.npy", np.zeros(TINY_SHAPE, np.float32))
    assert step.fingerprint(cfg) != before


@pytest.mark.parametrize("case,message", [
    ("shape", "does not match the model input"),
    ("nan", "NaN"),
    ("empty", "has no .npy files"),
    ("missing", "does not exist"),
])
def test_bad_check_data(cli_runner, tiny_onnx, tmp_path, case, message):
    d = tmp_path / "check"
    if case != "missing":
        d.mkdir()
    if case == "shape":
        np.save(d / "a.npy", np.zeros((3, 3), np.float32))
    elif case == "nan":
        np.save(d / "a.npy", np.full(TINY_SHAPE, np.nan, np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    r = fp16_cli(cli_runner, tiny_onnx, out_dir / "o.onnx", "--check-data", d)
    assert r.exit_code == 1 and message in r.output
    assert listdir_names(out_dir) == set()


def test_bad_inputs(cli_runner, tiny_onnx, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.onnx"
    r = fp16_cli(cli_runner, tmp_path / "missing.onnx", out)
    assert r.exit_code == 1 and "does not exist" in r.output
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 20)
    r = fp16_cli(cli_runner, corrupt, out)
    assert r.exit_code == 1 and "not a readable ONNX model" in r.output
    r = fp16_cli(cli_runner, tiny_onnx, out, "--node-block-list", "nope")
    assert r.exit_code == 1 and "no node named nope" in r.output
    r = fp16_cli(cli_runner, tiny_onnx, tmp_path / "missing_dir" / "o.onnx")
    assert r.exit_code == 1 and "does not exist" in r.output
    calib = tmp_path / "calib"  # a directory that does not hold the output (that alone is exit 1)
    calib.mkdir()
    r = fp16_cli(cli_runner, tiny_onnx, out, "--calibration", calib)
    assert r.exit_code == 2 and "--calibration cannot be used with --fp16" in r.output
    r = fp16_cli(cli_runner, tiny_onnx, out, "--overflow", "ignore")
    assert r.exit_code == 2
    assert listdir_names(out_dir) == set()


def test_refuses_an_fp16_model(cli_runner, tiny_onnx, tmp_path):
    first = tmp_path / "a.fp16.onnx"
    assert fp16_cli(cli_runner, tiny_onnx, first).exit_code == 0
    out = tmp_path / "b.onnx"
    r = fp16_cli(cli_runner, first, out)
    assert r.exit_code == 1 and "already a fp16 model" in r.output
    r = invoke(cli_runner, ["quantize", first, "-o", out, "--int8", "--calibration", tmp_path])
    assert r.exit_code == 1
    assert not out.exists()


# -- nodes_to_fp16: a few nodes of a QDQ model in fp16 (quantize --int8 --target tensorrt) -------

def _qdq_with_shared_weight():
    """x -> Q -> DQ -> MatMul(W) [to fp16] and MatMul(W) [stays int8-fed fp32] -> Add -> y: W is
    shared, the DQ output has two consumers and the Add feeds the graph output."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
        helper.make_node("MatMul", ["xd", "W"], ["a"], name="mm_fp16"),
        helper.make_node("MatMul", ["xd", "W"], ["b"], name="mm_keep"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.float32(0.02), "s"),
         numpy_helper.from_array(np.int8(0), "z")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_nodes_to_fp16_converts_only_the_named_nodes():
    import onnxruntime as ort

    from optkit.model.onnx_utils import check_model
    from optkit.quantization.fp16 import nodes_to_fp16

    model, w = _qdq_with_shared_weight()
    converted, done, converter, _ = nodes_to_fp16(model, ["mm_fp16", "q"], "test model")
    assert done == ["mm_fp16"] and converter  # Q/DQ nodes are never converted
    check_model(converted, full=True)
    g = converted.graph
    by_name = {n.name: n for n in g.node}
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    # the shared weight: a private fp16 copy for the converted node, the original fp32 bytes for the other
    keep_w = inits[by_name["mm_keep"].input[1]]
    assert keep_w.data_type == TensorProto.FLOAT and np.array_equal(numpy_helper.to_array(keep_w), w)
    assert inits[by_name["mm_fp16"].input[1]].data_type == TensorProto.FLOAT16
    # the int8 path is untouched: DQ feeds mm_keep directly (no Cast round trip in between), and
    # the only Casts are the two around the converted node
    assert producer[by_name["mm_keep"].input[0]].name == "dq"
    casts = [n for n in g.node if n.op_type == "Cast"]
    assert len(casts) == 2 and len(g.node) == len(model.graph.node) + 2
    assert producer[by_name["mm_fp16"].input[0]].op_type == "Cast"
    assert [o.name for o in g.output] == ["y"] and g.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    x = np.random.default_rng(1).uniform(-1, 1, (1, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    ref, got = run(model), run(converted)
    assert np.abs(got - ref).max() < 1e-2 * np.abs(ref).max() and not np.array_equal(got, ref)


# ---------------------------------------------------------------------------------------------
# mixed-length check data (a dynamic time axis): optkit's per-sample statistics, no stacking

def _timed_sum_model(path: Path) -> Path:
    """x (N, 1, 8, length) -> sum over time * 200 -> Abs -> * 1e-4: |big| = 200 * length for ones,
    beyond 65504 / 2 from length 164; the declared length range 10..500 in the metadata."""
    from optkit.model.dynamic import DynamicAxis, write_dynamic_axes

    nodes = [helper.make_node("ReduceSum", ["x", "axes"], ["sum"], name="time_sum", keepdims=0),
             helper.make_node("Mul", ["sum", "c"], ["big"], name="scale_up"),
             helper.make_node("Abs", ["big"], ["big_abs"], name="abs"),
             helper.make_node("Mul", ["big_abs", "s"], ["y"], name="scale_down")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8])],
        [numpy_helper.from_array(np.array([3], np.int64), "axes"), numpy_helper.from_array(np.array(200, np.float32), "c"),
         numpy_helper.from_array(np.array(1e-4, np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_dynamic_axes(model, [DynamicAxis("x", 3, "length", 10, 500, opt=20)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("lengths, overflow", [((20, 30, 400), True), ((20, 30, 40), False)])
def test_mixed_length_check_data_uses_every_length(cli_runner, tmp_path, monkeypatch, lengths, overflow):
    from optkit.data.ragged import write_ragged
    from optkit.quantization import calibration

    def stacking(*args, **kwargs):  # ONNX Runtime's calibrator stacks samples: not for mixed lengths
        raise AssertionError("the min/max calibrator ran on mixed-length data")

    monkeypatch.setattr(calibration, "calibrate", stacking)
    model = _timed_sum_model(tmp_path / "timed.onnx")
    data = tmp_path / "mixed.npz"
    write_ragged(data, [np.ones((1, 8, n), np.float32) for n in lengths], time_axis=-1)
    out = tmp_path / "timed.fp16.onnx"
    r = fp16_cli(cli_runner, model, out, "--check-data", data)
    assert r.exit_code == 0, r.output
    if overflow:  # only the 400-frame sample reaches 200 * 400 = 8e4
        assert "big (max |x| 8e+04)" in r.output
        assert "kept in fp32 because of fp16 overflow: 3 nodes (scale_up, abs, scale_down)" in r.output
    else:
        assert "every activation within the fp16 range (largest |x| 8e+03)" in r.output
    assert "fp16 vs fp32 on 3 check inputs" in r.output
    for n in lengths:  # the converted model holds every length of the check data
        x = np.ones((1, 1, 8, n), np.float32)
        np.testing.assert_allclose(run_ort(out, x), run_ort(model, x), rtol=1e-2)
