"""Dense-network weights as JSON, in the three layouts of the dense-network lesson, and back.

A dense network here is a chain of layers ``h_k = act_k(h_{k-1}ᵀ W_k + b_k)`` with ``h_0 = x``.
**Orientation**: ``W_k`` is *in x out* — row ``i`` holds the weights from input ``i`` to every
unit, so a row vector times ``W_k`` gives the layer's pre-activations — and ``b_k`` is written
as an *out x 1* column ``[[b1], [b2]]``, as the lesson writes it. ONNX and PyTorch store the
other way round: ``nn.Linear.weight`` is *out x in* and PyTorch exports it as
``Gemm(x, weight, bias, transB=1)``; ``W_k`` is that matrix transposed. ``Gemm transB=0`` and
``MatMul`` already hold *in x out*.

Layouts (one JSON Schema each, shipped in ``optkit/lesson/schemas/``, checked on every load and save):

- ``by-layer``:  ``{"Layer1": {"weights": W1, "bias": b1}, "Layer2": {...}}``
- ``list``:      ``[{"name": "Layer1", "weights": W1, "bias": b1}, ...]``
- ``augmented``: ``{"Layer1": A1, ...}`` with ``A_k = [W_k; b_kᵀ]``, *(in + 1) x out*: the bias
  is the last row, so ``h_k = act_k([h_{k-1}ᵀ, 1] A_k)``. (The lesson's Layer-2 example has this
  shape; its Layer-1 example appends the bias as a column instead, which only fits *out x in*
  matrices. One file needs one rule, and optkit uses the Layer-2 one for every layer.)

The layers sit under ``"layers"`` in an envelope that also names the ONNX input and output, the
activation after each layer and the ONNX form of each layer, which is what a model rebuilt from
the file needs to compute, bit for bit, what the original computed. Layer order is document
order. Numbers are written as the shortest decimal that reads back to the same float64, and
every float32 is exactly a float64, so a save/load round trip is exact.

Hand-written rather than taken from a library: onnx has no "dense weights as JSON" exporter, and
the graph walk below is small. Schema validation is the ``jsonschema`` package.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import

LAYOUTS = ("by-layer", "list", "augmented")
FORMAT = "optkit-dense-weights"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
ACTIVATION_FOR = {v: k for k, v in ACTIVATION_OPS.items()}
OPS = ("Gemm transB=1", "Gemm transB=0", "MatMul+Add", "MatMul")
DEFAULT_OPS = "Gemm transB=1"
ORIENTATION = ("h_k = act_k(h_{k-1}^T W_k + b_k); W_k is in x out (row i = weights from input i), "
               "b_k an out x 1 column; augmented: A_k = [W_k; b_k^T], (in + 1) x out, bias last row")
MAX_FILE_BYTES = 512 * 2**20


@dataclass
class DenseLayer:
    name: str
    weights: np.ndarray  # float32, in x out
    bias: np.ndarray     # float32, (out,)
    activation: str = "none"
    onnx_op: str = DEFAULT_OPS

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.weights.shape[0]), int(self.weights.shape[1])


@dataclass
class DenseNet:
    layers: list[DenseLayer]
    input_name: str = "x"
    output_name: str = "y"
    opset: int = 17
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        dims = [self.layers[0].shape[0]] + [layer.shape[1] for layer in self.layers]
        acts = ", ".join(layer.activation for layer in self.layers)
        params = sum(layer.weights.size + layer.bias.size for layer in self.layers)
        return f"{'-'.join(map(str, dims))} dense network, {params} parameters, activations {acts}"


# -------------------------------------------------------------------------------------------------
# ONNX -> DenseNet

def _not_dense(node: Any, why: str = "") -> InputError:
    name = node.name or f"<unnamed {node.op_type}>"
    return InputError(
        f"node {name!r} ({node.op_type}) is not part of a dense network{': ' + why if why else ''}; "
        "optkit weights reads chains of Gemm (or MatMul + Add) layers with Relu, Sigmoid or Tanh activations")


def from_onnx(model: Any, source: str = "") -> DenseNet:
    """The dense layers of an ONNX model; InputError naming the first node that is not one."""
    from onnx import numpy_helper

    from optkit.model.onnx_utils import QDQ_OPS

    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise InputError(f"{source or 'the model'} has {len(inputs)} inputs and {len(graph.output)} outputs; "
                         "a dense network has one of each")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    current = inputs[0].name
    layers: list[DenseLayer] = []

    def const(node: Any, name: str, what: str) -> np.ndarray:
        if name not in consts:
            raise _not_dense(node, f"its {what} {name!r} is computed, not a constant weight")
        arr = consts[name]
        if arr.dtype != np.float32:
            raise _not_dense(node, f"its {what} is {arr.dtype}, and optkit weights reads fp32 models")
        if not np.isfinite(arr).all():
            raise _not_dense(node, f"its {what} contains NaN/Inf")
        return arr

    def attr(node: Any, name: str, default: Any) -> Any:
        from onnx import helper

        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    for node in graph.node:
        op = node.op_type
        if op == "Constant" and not node.input:
            from onnx import helper

            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is None:
                raise _not_dense(node, "only tensor constants are supported")
            consts[node.output[0]] = numpy_helper.to_array(helper.get_attribute_value(value))
            continue
        if op in QDQ_OPS or op == "Cast":
            raise _not_dense(node, "this is a quantised or fp16 model; read the fp32 model it was made from")
        if current not in node.input:
            raise _not_dense(node, f"it does not read the output of the previous layer ({current})")
        if op == "Gemm":
            if node.input[0] != current:
                raise _not_dense(node, "the activations must be its first input")
            if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0 or attr(node, "beta", 1.0) != 1.0:
                raise _not_dense(node, "transA, alpha and beta other than 0, 1, 1 are not supported")
            b = const(node, node.input[1], "weight")
            trans_b = int(attr(node, "transB", 0))
            if b.ndim != 2:
                raise _not_dense(node, f"its weight has shape {b.shape}, not a matrix")
            w = b.T if trans_b else b
            bias = np.zeros(w.shape[1], np.float32)
            if len(node.input) > 2 and node.input[2]:
                c = const(node, node.input[2], "bias")
                if c.size not in (1, w.shape[1]) or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
                    raise _not_dense(node, f"its bias has shape {c.shape}, not ({w.shape[1]},)")
                bias = np.broadcast_to(c.reshape(-1), (w.shape[1],)).astype(np.float32)
            layers.append(DenseLayer(f"Layer{len(layers) + 1}", np.ascontiguousarray(w), np.array(bias),
                                     onnx_op=f"Gemm transB={trans_b}"))
        elif op == "MatMul":
            if node.input[0] != current:
                raise _not_dense(node, "the activations must be its first input")
            w = const(node, node.input[1], "weight")
            if w.ndim != 2:
                raise _not_dense(node, f"its weight has shape {w.shape}, not a matrix")
            layers.append(DenseLayer(f"Layer{len(layers) + 1}", np.ascontiguousarray(w),
                                     np.zeros(w.shape[1], np.float32), onnx_op="MatMul"))
        elif op == "Add" and layers and layers[-1].onnx_op == "MatMul" and layers[-1].activation == "none":
            # x + b and b + x are the same IEEE sum, so the rebuilt Add(x, b) is exact either way
            c = const(node, node.input[1] if node.input[0] == current else node.input[0], "bias")
            out = layers[-1].shape[1]
            if c.size != out or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
                raise _not_dense(node, f"its bias has shape {c.shape}, not ({out},)")
            layers[-1].bias = c.reshape(-1).astype(np.float32)
            layers[-1].onnx_op = "MatMul+Add"
        elif op in ACTIVATION_OPS and layers and layers[-1].activation == "none":
            layers[-1].activation = ACTIVATION_OPS[op]
        else:
            raise _not_dense(node)
        current = node.output[0]
    if not layers:
        raise InputError(f"{source or 'the model'} has no dense layers")
    if current != graph.output[0].name:
        raise InputError(f"the graph output {graph.output[0].name!r} is not the last dense layer's output")
    for prev, nxt in zip(layers, layers[1:]):
        if prev.shape[1] != nxt.shape[0]:
            raise InputError(f"{nxt.name} expects {nxt.shape[0]} inputs but {prev.name} has {prev.shape[1]} units")
    return DenseNet(layers, inputs[0].name, graph.output[0].name, int(opset), source)


def from_model_spec(spec: str, input_name: str = "x", output_name: str = "y", weights: str | None = None,
                    opset: int = 17) -> DenseNet:
    """A PyTorch model (zoo name, pkg.module:callable, file.py:callable) via an in-memory ONNX export."""
    torch = lazy_import("torch", extra="torch")
    onnx = lazy_import("onnx")
    import contextlib
    import warnings

    from optkit.common.errors import first_line
    from optkit.model.modelspec import load_model

    model = load_model(spec, weights)
    first = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
    if first is None:
        raise InputError(f"model {spec} has no nn.Linear layer, so it is not a dense network")
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (torch.zeros(1, first.in_features),), buf, input_names=[input_name],
                              output_names=[output_name], opset_version=opset, dynamo=False,
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})
        except Exception as exc:
            raise InputError(f"exporting {spec} to ONNX failed: {type(exc).__name__}: {first_line(exc)}") from exc
    return from_onnx(onnx.load_from_string(buf.getvalue()), source=spec)


def read_model(spec: str, **kwargs: Any) -> DenseNet:
    """An ONNX file (``*.onnx``) or a PyTorch model spec."""
    if spec.lower().endswith(".onnx"):
        from optkit.model.onnx_utils import load_onnx

        return from_onnx(load_onnx(spec), source=spec)
    return from_model_spec(spec, **{k: v for k, v in kwargs.items() if v is not None})


# -------------------------------------------------------------------------------------------------
# DenseNet <-> JSON

def _matrix(a: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in np.asarray(a, dtype=np.float32)]


def to_json(net: DenseNet, layout: str) -> dict[str, Any]:
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if layout == "by-layer":
        layers: Any = {lay.name: {"weights": _matrix(lay.weights), "bias": _matrix(lay.bias[:, None])}
                       for lay in net.layers}
    elif layout == "list":
        layers = [{"name": lay.name, "weights": _matrix(lay.weights), "bias": _matrix(lay.bias[:, None])}
                  for lay in net.layers]
    else:
        layers = {lay.name: _matrix(np.vstack([lay.weights, lay.bias[None, :]])) for lay in net.layers}
    doc = {
        "format": FORMAT, "version": 1, "layout": layout, "orientation": ORIENTATION,
        "input": net.input_name, "output": net.output_name, "opset": net.opset,
        "activations": [lay.activation for lay in net.layers],
        "onnx_ops": [lay.onnx_op for lay in net.layers],
        "shapes": [list(lay.shape) for lay in net.layers],
        "layers": layers,
    }
    validate(doc, where="generated weights")  # the schemas describe what optkit writes
    return doc


def dumps(doc: Any, indent: int = 0) -> str:
    """JSON with one matrix row (or other list of scalars) per line, so a layer reads like a matrix."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(doc, dict):
        if not doc:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {dumps(v, indent + 2)}" for k, v in doc.items()]
        text = "{\n" + ",\n".join(items) + f"\n{pad}}}"
    elif isinstance(doc, list) and any(isinstance(v, (list, dict)) for v in doc):
        text = "[\n" + ",\n".join(inner + dumps(v, indent + 2) for v in doc) + f"\n{pad}]"
    else:
        text = json.dumps(doc, allow_nan=False)
    return text + ("\n" if indent == 0 else "")


def _schema(layout: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"dense-weights.{layout}.schema.json").read_text(encoding="utf-8"))


def schema_path(layout: str) -> Path:
    return SCHEMA_DIR / f"dense-weights.{layout}.schema.json"


def _path_str(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the document"


def validate(doc: Any, where: str = "weights file") -> str:
    """Check ``doc`` against its layout's JSON Schema and the rules a schema cannot state
    (rectangular matrices, layer sizes that chain); returns the layout."""
    jsonschema = lazy_import("jsonschema", extra="core")
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a JSON object with 'format', 'layout' and 'layers', "
                         f"got a JSON {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise InputError(f"{where}: 'format' must be {FORMAT!r} (got {doc.get('format')!r})")
    layout = doc.get("layout")
    if layout not in LAYOUTS:
        raise InputError(f"{where}: 'layout' must be one of {', '.join(LAYOUTS)} (got {layout!r})")
    validator = jsonschema.Draft202012Validator(_schema(layout))
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise InputError(f"{where}: {_path_str(error.absolute_path)}: {error.message} "
                         f"(schema {schema_path(layout).name})")
    if doc["input"] == doc["output"]:
        raise InputError(f"{where}: 'input' and 'output' are both {doc['input']!r}; an ONNX graph needs two names")
    _check_shapes(doc, where)
    return layout


def _rows(m: list[list[float]], where: str) -> tuple[int, int]:
    width = len(m[0])
    for i, row in enumerate(m):
        if len(row) != width:
            raise InputError(f"{where}: ragged rows: row {i + 1} has {len(row)} numbers, row 1 has {width}")
    return len(m), width


def _layer_items(doc: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(name, path for messages, layer value) in document order."""
    if doc["layout"] == "list":
        return [(lay.get("name") or f"Layer{i + 1}", f"layers[{i}]", lay) for i, lay in enumerate(doc["layers"])]
    return [(k, f"layers.{k}", v) for k, v in doc["layers"].items()]


def _check_shapes(doc: dict[str, Any], where: str) -> None:
    items = _layer_items(doc)
    n = len(items)
    for key in ("activations", "onnx_ops", "shapes"):
        if key in doc and len(doc[key]) != n:
            raise InputError(f"{where}: '{key}' has {len(doc[key])} entries for {n} layers")
    prev_out = None
    len_done = 0
    for name, path, value in items:
        if doc["layout"] == "augmented":
            rows, cols = _rows(value, f"{where}: {path}")
            fan_in, fan_out = rows - 1, cols
        else:
            fan_in, fan_out = _rows(value["weights"], f"{where}: {path}.weights")
            b_rows, b_cols = _rows(value["bias"], f"{where}: {path}.bias")
            if b_cols != 1 or b_rows != fan_out:
                raise InputError(f"{where}: {path}.bias is {b_rows} x {b_cols}; expected a column of "
                                 f"{fan_out} ([[b1], [b2], ...]), one per unit")
        if prev_out is not None and fan_in != prev_out:
            raise InputError(f"{where}: {path} has {fan_in} inputs but the previous layer has {prev_out} units")
        if "shapes" in doc and [fan_in, fan_out] != list(doc["shapes"][len_done]):
            raise InputError(f"{where}: {path} is {fan_in} x {fan_out} (in x out) but 'shapes' says "
                             f"{doc['shapes'][len_done][0]} x {doc['shapes'][len_done][1]}: a row or column is "
                             "missing or extra")
        prev_out = fan_out
        len_done += 1


def _f32(m: list[list[float]], where: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        a = np.array(m, dtype=np.float64).astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{where}: a number does not fit in float32")
    return a


def from_json(doc: Any, where: str = "weights file") -> DenseNet:
    layout = validate(doc, where)
    acts = doc["activations"]
    ops = doc.get("onnx_ops") or [DEFAULT_OPS] * len(acts)
    layers = []
    for (name, path, value), act, op in zip(_layer_items(doc), acts, ops):
        if layout == "augmented":
            a = _f32(value, f"{where}: {path}")
            w, b = a[:-1], a[-1]
        else:
            w = _f32(value["weights"], f"{where}: {path}.weights")
            b = _f32(value["bias"], f"{where}: {path}.bias")[:, 0]
        if op == "MatMul" and np.any(b != 0):
            raise InputError(f"{where}: {path} has a bias but onnx_ops says 'MatMul' (no bias)")
        layers.append(DenseLayer(str(name), np.ascontiguousarray(w), np.ascontiguousarray(b), act, op))
    return DenseNet(layers, doc["input"], doc["output"], int(doc.get("opset", 17)), where)


def load(path: str | os.PathLike) -> DenseNet:
    """Read and validate a weights file; every way it can be wrong is one InputError line."""
    from optkit.common.fileio import require_file

    path = require_file(path, "weights file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes is more than a dense weights file should be")

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not a JSON number")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:  # json keeps the last one silently: another network than the file shows
                raise ValueError(f"key {k!r} appears twice in one object")
            seen[k] = v
        return seen

    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants,
                         object_pairs_hook=no_duplicates)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None
    except RecursionError:
        raise InputError(f"{path}: not a weights file (JSON nested too deeply)") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    return from_json(doc, where=str(path))


# -------------------------------------------------------------------------------------------------
# DenseNet -> ONNX

def to_onnx(net: DenseNet) -> Any:
    """An ONNX model computing ``net``, each layer in its recorded ONNX form."""
    onnx = lazy_import("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    current = net.input_name
    for k, lay in enumerate(net.layers, 1):
        act_out = net.output_name if k == len(net.layers) else f"layer{k}.out"
        pre = f"layer{k}.pre" if lay.activation != "none" else act_out
        w_name, b_name = f"layer{k}.weight", f"layer{k}.bias"
        if lay.onnx_op.startswith("Gemm"):
            trans_b = lay.onnx_op.endswith("1")
            inits.append(numpy_helper.from_array(np.ascontiguousarray(lay.weights.T if trans_b else lay.weights), w_name))
            inits.append(numpy_helper.from_array(lay.bias, b_name))
            nodes.append(helper.make_node("Gemm", [current, w_name, b_name], [pre], name=f"/layer{k}/Gemm",
                                          alpha=1.0, beta=1.0, transB=int(trans_b)))
        else:
            inits.append(numpy_helper.from_array(lay.weights, w_name))
            mm_out = f"layer{k}.matmul" if lay.onnx_op == "MatMul+Add" else pre
            nodes.append(helper.make_node("MatMul", [current, w_name], [mm_out], name=f"/layer{k}/MatMul"))
            if lay.onnx_op == "MatMul+Add":
                inits.append(numpy_helper.from_array(lay.bias, b_name))
                nodes.append(helper.make_node("Add", [mm_out, b_name], [pre], name=f"/layer{k}/Add"))
        if lay.activation != "none":
            op = ACTIVATION_FOR[lay.activation]
            nodes.append(helper.make_node(op, [pre], [act_out], name=f"/layer{k}/{op}"))
        current = act_out
    fan_in, fan_out = net.layers[0].shape[0], net.layers[-1].shape[1]
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info(net.input_name, TensorProto.FLOAT, ["batch", fan_in])],
        [helper.make_tensor_value_info(net.output_name, TensorProto.FLOAT, ["batch", fan_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", net.opset)],
                              producer_name="optkit weights")
    model.ir_version = min(model.ir_version, 8)  # readable by every runtime optkit drives
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(net: DenseNet, out: str | os.PathLike) -> Path:
    """Write ``net`` as ONNX (atomically) and check that ONNX Runtime loads and runs it."""
    from optkit.model.onnx_utils import save_onnx_atomically
    from optkit.common.fileio import check_output_path

    out = check_output_path(out)
    model = to_onnx(net)
    ort = lazy_import("onnxruntime")
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {net.input_name: np.zeros((1, net.layers[0].shape[0]), np.float32)})
    return save_onnx_atomically(model, out)
