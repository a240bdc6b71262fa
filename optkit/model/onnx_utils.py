"""Small helpers around the onnx package: load with clear errors, save atomically, describe."""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError, PassFailed, first_line
from optkit.common.fileio import atomic_output, require_file
from optkit.common.lazy import lazy_import

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
           "ConvInteger", "MatMulInteger"}


def load_onnx(path: str | os.PathLike, load_weights: bool = True) -> Any:
    """Load an ONNX model, turning every way a file can be bad into an InputError."""
    onnx = lazy_import("onnx")
    path = require_file(path, "ONNX model")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf DecodeError, truncated file, missing external data
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})".rstrip()) from exc
    if not model.graph.node and not model.graph.output:
        raise InputError(f"{path} is not a readable ONNX model (no graph)")
    # protobuf hands back invalid UTF-8 in string fields as bytes (a damaged file): refuse here
    # rather than fail later on a str/bytes mix-up
    for i, node in enumerate(model.graph.node):
        if not isinstance(node.op_type, str) or not isinstance(node.name, str):
            raise InputError(f"{path} is not a valid ONNX model (node {i} has a name or op type that is not text)")
    return model


def check_model(model_or_path: Any, full: bool = True, what: str = "model") -> None:
    """Run onnx.checker (with shape inference when ``full``) and raise PassFailed on error."""
    onnx = lazy_import("onnx")
    try:
        if isinstance(model_or_path, (str, os.PathLike)):
            onnx.checker.check_model(str(model_or_path), full_check=full)
        else:
            onnx.checker.check_model(model_or_path, full_check=full)
    except Exception as exc:
        msg = first_line(exc) or type(exc).__name__
        raise PassFailed(f"onnx.checker rejected the {what}: {msg}") from exc


def save_onnx_atomically(model: Any, path: str | os.PathLike) -> Path:
    """Save a model (inline weights) to ``path`` via a temporary file and a rename."""
    onnx = lazy_import("onnx")
    path = Path(path)
    with atomic_output(path, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    return path


def model_precision(model: Any) -> str:
    onnx = lazy_import("onnx")
    ops = {n.op_type for n in model.graph.node}
    if ops & QDQ_OPS:
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(t.data_type == fp16 for t in model.graph.initializer):
        return "fp16"
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type == fp16:
            return "fp16"
    for n in model.graph.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == fp16:
                    return "fp16"
    return "fp32"


@dataclass(frozen=True)
class GraphStats:
    nodes: int
    initializers: int
    op_counts: dict[str, int]
    file_size: int

    def describe(self) -> str:
        return f"{self.nodes} nodes, {self.initializers} initializers, {human_size(self.file_size)}"


def graph_stats(model: Any, path: str | os.PathLike | None = None) -> GraphStats:
    counts = collections.Counter(n.op_type for n in model.graph.node)
    size = Path(path).stat().st_size if path is not None else model.ByteSize()
    return GraphStats(
        nodes=len(model.graph.node),
        initializers=len(model.graph.initializer),
        op_counts=dict(sorted(counts.items(), key=lambda kv: str(kv[0]))),
        file_size=size,
    )


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: str  # numpy dtype name
    # (axis, min, max) of each dynamic axis besides the batch with a declared length range
    # (optkit.model.dynamic: the export's --length-range, kept in the model's metadata)
    ranges: tuple[tuple[int, int, int], ...] = ()

    def concrete_shape(self, batch: int = 1, label: str = "", length: int | None = None) -> tuple[int, ...]:
        """The shape with symbolic/unknown dims replaced: the first by ``batch``, an axis with a
        declared length range by ``length`` (default: the range's minimum), others fail (``label``,
        e.g. the file name, starts the message)."""
        declared = {axis: (lo, hi) for axis, lo, hi in self.ranges}
        out = []
        for i, d in enumerate(self.shape):
            if isinstance(d, int) and d > 0:
                out.append(d)
            elif i == 0:
                out.append(batch)
            elif i in declared:
                out.append(declared[i][0] if length is None else length)
            else:
                dim = repr(d) if isinstance(d, str) and d else "unnamed"
                raise InputError(f"{label + ': ' if label else ''}input {self.name} {tuple(self.shape)} has a dynamic "
                                 f"dimension {i} ({dim}) besides the batch; optkit needs the others fixed here: "
                                 "export the model with that dimension fixed (e.g. a fixed sequence length)")
        return tuple(out)


def io_specs(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs (excluding initializers) and outputs with numpy dtype names."""
    onnx = lazy_import("onnx")
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}

    def spec(vi: Any) -> TensorSpec:
        tt = vi.type.tensor_type
        dims: list[int | str | None] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "float32"
        return TensorSpec(vi.name, tuple(dims), dtype)

    del onnx
    from optkit.model.dynamic import input_ranges

    ranges = input_ranges({p.key: p.value for p in model.metadata_props})
    inputs = [TensorSpec(s.name, s.shape, s.dtype, ranges.get(s.name, ()))
              for s in (spec(v) for v in model.graph.input if v.name not in inits)]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs


def ensure_onnx_ok(path: Path, what: str = "result") -> Any:
    """Load a freshly written model and check it; used by passes before reporting success."""
    model = load_onnx(path)
    check_model(model, full=True, what=what)
    return model
