"""MAC counting and the precision each heavy node really computes in (optkit.model.macs)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit.model.macs import describe_share, mac_breakdown
from conftest import build_tiny_voice_model, invoke


def _conv_gemm_model(dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """x(N,3,8,8) -Conv 4x3x3x3 pad 1-> (N,4,8,8) -Flatten-> (N,256) -Gemm 256x5-> (N,5)."""
    np_dtype = np.float16 if dtype == TensorProto.FLOAT16 else np.float32
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np_dtype), "w")
    g = numpy_helper.from_array(np.ones((5, 256), np_dtype), "g")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["c"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "g"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", dtype, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", dtype, ["N", 5])],
        initializer=[w, g],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_counts_conv_and_gemm_macs_per_sample():
    b = mac_breakdown(_conv_gemm_model())
    conv = 4 * 8 * 8 * (3 * 3 * 3)   # output elements x (C_in x kernel)
    gemm = 5 * 256
    assert b["total_macs"] == conv + gemm
    assert b["by_precision"] == {"int8": 0, "fp16": 0, "fp32": conv + gemm}
    assert b["share"]["fp32"] == 1.0
    assert [r["name"] for r in b["unquantized_heavy_nodes"]] == ["conv", "fc"]  # largest first
    assert b["unknown_shape_nodes"] == []


def test_fp16_model_counts_as_fp16():
    b = mac_breakdown(_conv_gemm_model(TensorProto.FLOAT16))
    assert b["share"]["fp16"] == 1.0 and b["by_precision"]["fp32"] == 0


def test_matches_the_zoo_count_on_the_exported_voice_model(tiny_onnx):
    expected = __import__("optkit.zoo.voice_resnet", fromlist=["x"]).macs_per_sample(build_tiny_voice_model())
    assert mac_breakdown(tiny_onnx)["total_macs"] == expected


def test_static_int8_is_int8_except_excluded_nodes(tiny_onnx, calib_dir, cli_runner, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib_dir,
                              "--method", "minmax", "--exclude-nodes", "/conv1/Conv"])
    assert res.exit_code in (0, 3), res.output
    b = mac_breakdown(out)
    fp32_names = {r["name"] for r in b["unquantized_heavy_nodes"] if r["precision"] == "fp32"}
    assert "/conv1/Conv" in fp32_names
    assert b["total_macs"] == mac_breakdown(tiny_onnx)["total_macs"]
    assert 0.5 < b["share"]["int8"] < 1.0
    assert "int8" in describe_share(b)


def test_weight_only_dequantize_is_not_int8():
    """A Conv whose weight is dequantized but whose activation is float computes in float."""
    m = _conv_gemm_model()
    wq = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    m.graph.initializer.extend([wq, scale])
    m.graph.node.insert(0, helper.make_node("DequantizeLinear", ["wq", "s"], ["wdq"], name="dq_w"))
    m.graph.node[1].input[1] = "wdq"
    b = mac_breakdown(m)
    assert b["by_precision"]["int8"] == 0
    # ...and with the activation dequantized too, it is int8
    xq_nodes = [
        helper.make_node("QuantizeLinear", ["x", "s"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "s"], ["xdq"], name="dq_x"),
    ]
    for i, n in enumerate(xq_nodes):
        m.graph.node.insert(i, n)
    next(n for n in m.graph.node if n.name == "conv").input[0] = "xdq"
    assert mac_breakdown(m)["by_precision"]["int8"] == 4 * 8 * 8 * 27


def test_lstm_macs_are_counted_and_stay_fp32(tmp_path):
    torch = pytest.importorskip("torch")

    class Rnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(input_size=6, hidden_size=8, batch_first=True)
            self.fc = torch.nn.Linear(8, 1)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.fc(y[:, -1])

    expected = 10 * 1 * 1 * (4 * 8) * (6 + 8)  # seq x batch x dir x 4H x (I + H)
    for dynamic in (False, True):  # a symbolic batch must not make the LSTM's shapes unknown
        path = tmp_path / f"rnn{int(dynamic)}.onnx"
        torch.onnx.export(Rnn().eval(), (torch.randn(1, 10, 6),), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}} if dynamic else None)
        b = mac_breakdown(path)
        lstm = [r for r in b["unquantized_heavy_nodes"] if r["op_type"] == "LSTM"]
        assert len(lstm) == 1 and b["unknown_shape_nodes"] == []
        assert lstm[0]["macs"] == expected
        assert b["share"]["int8"] == 0.0


def test_a_declared_dynamic_time_axis_is_counted_at_its_export_length():
    """A Conv after an input whose time axis is symbolic had no inferred shape, counted 0 MACs, and
    a model with its Convs in float read as 100 % int8. The declared axis (export --length-range,
    kept in the metadata) is counted at its export length."""
    from optkit.model.dynamic import DynamicAxis, write_dynamic_axes

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, "T"])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert mac_breakdown(model)["unknown_shape_nodes"] == ["conv"]  # without the declaration
    write_dynamic_axes(model, [DynamicAxis("x", 3, "T", 10, 100, 50)])
    b = mac_breakdown(model)
    assert b["unknown_shape_nodes"] == [] and b["total_macs"] == 4 * 8 * 50 * (3 * 3 * 3)
    write_dynamic_axes(model, [DynamicAxis("x", 3, "T", 10, 100)])  # no export length: the middle
    assert mac_breakdown(model)["total_macs"] == 4 * 8 * 55 * (3 * 3 * 3)
