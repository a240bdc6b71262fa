"""Whether an int8 ONNX model's Q/DQ nodes are in the form TensorRT's ONNX parser accepts."""
from __future__ import annotations

from typing import Any


def tensorrt_qdq_problems(model: Any) -> list[str]:
    """Why TensorRT would reject this model's Q/DQ nodes (empty when fine).

    TensorRT takes signed int8 Q/DQ with zero point 0 only (uint8 or non-zero zero points fail
    the parse with INVALID_NODE, see docs/tensorrt.md, int8 Q/DQ). ORT's default quantisation makes
    exactly those, so catching it here gives a clear message instead of a parser error.
    onnx-tensorrt has no standalone check for this, hence these few lines.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a.t
    problems: list[str] = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) < 3 or not node.input[2]:
            out_dtype = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
            if node.op_type == "QuantizeLinear" and out_dtype != TensorProto.INT8:
                # without a zero point (or output_dtype) QuantizeLinear outputs uint8
                problems.append(f"QuantizeLinear {node.name or node.output[0]} has no zero point (uint8 output)")
            continue
        zp = inits.get(node.input[2]) or consts.get(node.input[2])
        if zp is None:
            problems.append(f"{node.op_type} {node.name or node.output[0]} has a computed zero point")
            continue
        if zp.data_type == TensorProto.UINT8:
            problems.append(f"{node.op_type} {node.name or node.output[0]} uses uint8 (TensorRT needs int8)")
        elif numpy_helper.to_array(zp).any():
            problems.append(f"{node.op_type} {node.name or node.output[0]} has a non-zero zero point")
    return problems
