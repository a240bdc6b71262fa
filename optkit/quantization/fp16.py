"""fp16 conversion of ONNX graphs: the whole model (the fp16 pass) or named nodes of a quantised
one (the int8 search's trials for TensorRT, where nodes kept out of int8 run in fp16).

onnxconverter-common's ``float16`` does the conversion (ONNX Runtime's fork of it where it raises);
what is written here repairs what those converters leave (see :func:`nodes_to_fp16`).
"""
from __future__ import annotations

import warnings
from typing import Any

from optkit.common.errors import PassFailed, first_line
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import check_model

FP16_MAX = 65504.0  # the largest finite float16


def _retype_float_casts(model: Any) -> int:
    """onnxconverter-common turns the value_info of a ``Cast(to=FLOAT)`` output into float16 but
    leaves the node's ``to`` attribute at FLOAT, so onnx.checker fails with "Inferred elem type
    differs from existing elem type: (1) vs (10)" on any model that already had such a Cast (e.g.
    ``mask.float()`` in a speech front end). The converter means the tensor to be fp16 (its
    consumers were converted), so the fix is ``to=FLOAT16``. Returns how many nodes changed."""
    onnx = lazy_import("onnx")
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(model.graph.value_info) + list(model.graph.output)}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or types.get(node.output[0]) != fp16:
            continue
        for a in node.attribute:
            if a.name == "to" and a.i == fp32:
                a.i = fp16
                changed += 1
    return changed


def convert_fp16(model: Any, keep_io_types: bool, op_block: list[str], node_block: list[str],
                 name: str) -> tuple[Any, str, list[str]]:
    """fp32 -> fp16 with onnxconverter-common (its Cast failure fixed), else with ONNX Runtime's
    float16 tool (onnxruntime.transformers.float16, a separately maintained fork of the same
    converter). Each result must pass onnx.checker (full) before it is used; ORT's tool appends
    the input casts at the end of the graph, so its output is topologically sorted first."""
    onnx = lazy_import("onnx")
    errors: list[str] = []
    notes: list[str] = []

    def checked(m: Any, who: str) -> Any:
        try:
            check_model(m, full=True, what=f"fp16 model from {who}")
        except PassFailed as exc:
            errors.append(str(exc))
            return None
        return m

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # truncation warnings: handled by the overflow scan
            converted = lazy_import("onnxconverter_common.float16").convert_float_to_float16(
                copy, min_positive_val=1e-7, max_finite_val=FP16_MAX,
                keep_io_types=keep_io_types, op_block_list=op_block, node_block_list=node_block,
            )
        fixed = _retype_float_casts(converted)
        if checked(converted, "onnxconverter-common") is not None:
            if fixed:
                notes.append(f"retyped {fixed} existing Cast(to=float32) node(s) to float16 (onnxconverter-common "
                             "leaves them inconsistent)")
            return converted, "onnxconverter-common", notes
    except Exception as exc:  # the converter's own failures (unsupported graph shapes)
        errors.append(f"onnxconverter-common: {type(exc).__name__}: {first_line(exc)}")

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    try:
        ort_f16 = lazy_import("onnxruntime.transformers.float16")
        onnx_model = lazy_import("onnxruntime.transformers.onnx_model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = ort_f16.convert_float_to_float16(
                copy, min_positive_val=1e-7, max_finite_val=FP16_MAX, keep_io_types=keep_io_types,
                op_block_list=op_block, node_block_list=node_block,
            )
            wrapper = onnx_model.OnnxModel(converted)
            wrapper.topological_sort()
            converted = wrapper.model
        if checked(converted, "onnxruntime.transformers.float16") is not None:
            notes.append(f"onnxconverter-common failed ({errors[-1]}); converted with ONNX Runtime's float16 tool")
            return converted, "onnxruntime.transformers.float16", notes
    except Exception as exc:
        errors.append(f"onnxruntime.transformers.float16: {type(exc).__name__}: {first_line(exc)}")
    raise PassFailed(f"could not convert {name} to fp16: " + "; ".join(errors))


def nodes_to_fp16(model: Any, names: Any, what: str = "model") -> tuple[Any, list[str], str, list[str]]:
    """A copy of ``model`` in which the named float nodes compute in fp16 and nothing else changes.

    quantize-int8 uses it for ``target tensorrt``: the nodes kept out of int8 run in fp16 there.
    The conversion is :func:`convert_fp16` (onnxconverter-common, else ONNX Runtime's fork of it)
    with every other node in ``node_block_list`` and fp32 model inputs/outputs. What the
    converters do with such a graph, and what this function does about it:

    - the block list is by name: nodes without a name get one first;
    - a float initializer read by a converted node *and* a blocked one: onnxconverter-common keeps
      it fp32 (the converted node then mixes fp32 and fp16 inputs: a type error), ONNX Runtime's
      fork makes it fp16 and casts it back for the blocked node (fp16 rounding on an fp32 path):
      the converted node gets a private copy first;
    - every blocked node is wrapped in Cast(to fp32) before / Cast(to fp16) after, so each fp32
      tensor between two blocked nodes takes a Cast(fp16)->Cast(fp32) round trip: rounding that
      the model did not have, and a Cast between a DequantizeLinear and its int8 consumer that
      hides the Q/DQ pattern TensorRT fuses. onnxconverter-common (1.16) removes such pairs only
      where a tensor has one consumer and raises ValueError on a pair before a graph output (the
      usual case here, so its fork usually does the conversion); ONNX Runtime's fork keeps them
      all. They are removed here (:func:`_drop_fp16_round_trips`); ONNX Runtime's
      ``OnnxModel.remove_cascaded_cast_nodes`` would collapse every Cast->Cast pair, also a
      model's own (float->int->float rounds), so it could change results.
    - a blocked node that writes a graph output: onnxconverter-common casts its output to fp16 and
      retypes the graph output fp16 despite ``keep_io_types`` (:func:`_restore_output_types`);
    - Q/DQ nodes, Casts and ops in onnxconverter-common's default op block list are never
      converted.

    Returns (model, the nodes that now compute in fp16, the converter used, notes).
    """
    onnx = lazy_import("onnx")
    float16 = lazy_import("onnxconverter_common.float16")
    from optkit.model.onnx_utils import QDQ_OPS

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    taken = {n.name for n in g.node}
    for i, node in enumerate(g.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    wanted = set(names)
    targets = [n for n in g.node if n.name in wanted and n.op_type not in QDQ_OPS and n.op_type != "Cast"
               and n.op_type not in float16.DEFAULT_OP_BLOCK_LIST]
    if not targets:
        return model, [], "", []
    target_names = {n.name for n in targets}
    readers: dict[str, set[str]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.name)
    inits = {i.name: i for i in g.initializer}
    for n in targets:
        for k, name in enumerate(n.input):
            init = inits.get(name)
            if init is None or init.data_type != onnx.TensorProto.FLOAT or readers[name] <= target_names:
                continue
            copy = g.initializer.add()
            copy.CopyFrom(init)
            copy.name = f"{name}_{n.name}_fp16"
            n.input[k] = copy.name
    block = [n.name for n in g.node if n.name not in target_names]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted, converter, notes = convert_fp16(m, True, list(float16.DEFAULT_OP_BLOCK_LIST), block, what)
    _restore_output_types(converted, model)
    _drop_fp16_round_trips(converted)
    check_model(converted, full=True, what=f"{what} with nodes in fp16")
    inferred = onnx.shape_inference.infer_shapes(converted)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    types.update({i.name: i.data_type for i in inferred.graph.initializer})
    done = [n.name for n in converted.graph.node if n.name in target_names
            and any(types.get(i) == onnx.TensorProto.FLOAT16 for i in n.input[:1])]
    return converted, done, converter, notes


def _restore_output_types(model: Any, original: Any) -> None:
    """Graph outputs that were fp32 in ``original`` and are fp16 in ``model`` become fp32 again:
    a Cast(to fp16) of an fp32 tensor in front of one is dropped (its input takes the output's
    name); an output computed in fp16 gets a Cast(to fp32)."""
    onnx = lazy_import("onnx")
    from onnx import helper

    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    was = {o.name: o.type.tensor_type.elem_type for o in original.graph.output}
    g = model.graph
    for out in g.output:
        if was.get(out.name) != fp32 or out.type.tensor_type.elem_type != fp16:
            continue
        producer = {o: n for n in g.node for o in n.output}
        node = producer.get(out.name)
        to = next((a.i for a in node.attribute if a.name == "to"), None) if node is not None else None
        source = node.input[0] if node is not None and node.op_type == "Cast" and to == fp16 else None
        if source is not None and source in producer and source not in {i.name for i in g.input}:
            g.node.remove(node)
            for n in g.node:
                n.input[:] = [out.name if i == source else i for i in n.input]
                n.output[:] = [out.name if o == source else o for o in n.output]
        elif node is not None:
            half = out.name + "_fp16"
            node.output[:] = [half if o == out.name else o for o in node.output]
            for n in g.node:
                n.input[:] = [half if i == out.name else i for i in n.input]
            g.node.append(helper.make_node("Cast", [half], [out.name], to=fp32, name=out.name + "_to_fp32"))
        out.type.tensor_type.elem_type = fp32
    names = {o for n in g.node for o in n.output}
    keep = [vi for vi in g.value_info if vi.name in names and vi.name not in was]
    del g.value_info[:]
    g.value_info.extend(keep)


def _drop_fp16_round_trips(model: Any) -> int:
    """Remove Cast(to fp16) -> Cast(to fp32) round trips on fp32 tensors (see :func:`nodes_to_fp16`):
    the consumers of the second Cast read the original fp32 tensor again. Returns how many."""
    onnx = lazy_import("onnx")
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    g = model.graph

    def cast_to(node: Any) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    producer = {o: n for n in g.node for o in n.output}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}
    removed = 0
    touched: set[str] = set()  # tensors whose producer or type changed: their value_info goes
    for node in list(g.node):
        if cast_to(node) != fp32:
            continue
        first = producer.get(node.input[0])
        if first is None or cast_to(first) != fp16:
            continue
        source = first.input[0]
        if types.get(source) != fp32:
            continue
        out = node.output[0]
        touched |= {out, source}
        if out in graph_outputs:
            if source in graph_inputs or source in graph_outputs or source not in producer:
                continue  # keep the (exact) cast rather than renaming a graph input
            # the graph output keeps its name: the fp32 tensor is renamed to it
            for n in g.node:
                n.input[:] = [out if i == source else i for i in n.input]
                n.output[:] = [out if o == source else o for o in n.output]
            producer[out] = producer.pop(source)
            source = out
        else:
            for n in g.node:
                n.input[:] = [source if i == out else i for i in n.input]
        g.node.remove(node)
        removed += 1
    used = {i for n in g.node for i in n.input} | graph_outputs
    for node in list(g.node):
        if node.op_type == "Cast" and cast_to(node) == fp16 and node.output[0] not in used:
            g.node.remove(node)
            # the fp32 tensor gets its name back (the converter renamed it to put the Cast
            # in between); per-tensor tools (localize) match tensors by name
            source, name = node.input[0], node.output[0]
            touched |= {source, name}
            if source in producer and source not in graph_inputs | graph_outputs and name not in graph_outputs:
                for n in g.node:
                    n.input[:] = [name if i == source else i for i in n.input]
                    n.output[:] = [name if o == source else o for o in n.output]
    names = {o for n in g.node for o in n.output}
    keep = [vi for vi in g.value_info if vi.name in names and vi.name not in touched]
    del g.value_info[:]
    g.value_info.extend(keep)
    return removed
