"""The int8 search's later trials: classes of ops kept in float, a ranking weighed by MACs, the
greedy fallback and dynamic quantisation (used by :func:`optkit.quantization.int8_search.search`).

Single sensitive nodes are not always enough: on a model whose error is spread over many cheap
or fragile nodes (every LayerNormalization, the Softmax and activation x activation MatMuls of an
attention block, the residual Adds), each node adds a little and keeping the top few in float
changes nothing. So the search also tries:

- **classes of ops in float** (:data:`OP_CLASSES`): all quantised members of one class at a time,
  then every class together, while the heavy Conv/Gemm/MatMul-with-weights stay int8;
- **a MAC-weighed ranking** (:func:`weigh_ranking`): the error a node adds (as a noise-power
  ratio) per share of the MACs it would take out of int8, so cheap nodes that add error come
  before expensive ones that add as much;
- **a greedy fallback** (:func:`greedy_steps`): the float set grows by the next ranked nodes,
  kept only when the trial scores better, until the gate passes, the float share of the MACs
  would exceed the limit or the budget ends;
- **dynamic quantisation** (:func:`apply_dynamic`, ONNX Runtime's ``quantize_dynamic``) of the
  LSTM and MatMul nodes static QDQ leaves in float (static QDQ has no recurrent kernels): int8
  weights, activations quantised per call. Judged by the same gate; it fails on some models and
  is then not chosen.

Functions here take and return :class:`optkit.quantization.int8_search.TrialSpec` objects
(through ``dataclasses.replace``) and never import that module: it imports this one.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from optkit.common.lazy import lazy_import

# class name -> (op types, whether MatMuls of two activations only); members must be op types
# ONNX Runtime quantises (else keeping them "in float" changes nothing)
OP_CLASSES: dict[str, tuple[str, ...]] = {
    "normalisation": ("LayerNormalization", "BatchNormalization", "InstanceNormalization"),
    "attention": ("MatMul", "Softmax"),   # MatMul: only activation x activation (see op_classes)
    "elementwise": ("Add", "Mul", "Sub", "Div"),
}
DYNAMIC_OPS = ("LSTM", "MatMul")          # what quantize_dynamic quantises that static QDQ may leave in float
DYNAMIC_MIN_SHARE = 0.05                  # float MACs in those nodes worth a dynamic trial
DYNAMIC_TARGETS = ("cpu",)                # ORT's com.microsoft integer ops: ONNX Runtime only


def _constant_tensors(model: Any) -> set[str]:
    """Tensors computed from initializers and Constants only (weights, reshaped or not)."""
    const = {i.name for i in model.graph.initializer}
    for node in model.graph.node:  # graph order is topological
        if node.op_type == "Constant" or (node.input and all(i in const or not i for i in node.input)):
            const.update(node.output)
    return const


def op_classes(model: Any, op_types: tuple[str, ...] | list[str]) -> dict[str, tuple[str, ...]]:
    """Class name -> names of the model's nodes in that class that ``quantize_static`` may
    quantise (``op_types``), in graph order; empty classes are left out. An attention MatMul is
    one whose two inputs are both activations (Q x K^T, weights x V), never one with a weight."""
    const = _constant_tensors(model)
    allowed = set(op_types)
    out: dict[str, tuple[str, ...]] = {}
    for cls, ops in OP_CLASSES.items():
        names = []
        for n in model.graph.node:
            if n.op_type not in ops or n.op_type not in allowed or not n.name:
                continue
            if cls == "attention" and n.op_type == "MatMul" and any(i in const for i in n.input[:2]):
                continue
            names.append(n.name)
        if names:
            out[cls] = tuple(names)
    return out


def float_share(nodes: tuple[str, ...] | list[str], node_macs: dict[str, int], total_macs: int) -> float:
    return sum(node_macs.get(n, 0) for n in set(nodes)) / total_macs if total_macs else 0.0


def class_trials(base: Any, classes: dict[str, tuple[str, ...]], node_macs: dict[str, int], total_macs: int,
                 limit: float, kept_as: str = "float") -> list[Any]:
    """One trial per class of ops kept in float (on top of ``base``'s exclusions), then all classes
    together; a trial whose float share of the MACs would exceed ``limit`` is not planned."""
    already = tuple(base.excluded_nodes)
    plans: list[tuple[str, tuple[str, ...]]] = []
    for cls, members in classes.items():
        plans.append((cls, tuple(n for n in members if n not in already)))
    if len(classes) > 1:
        union = tuple(dict.fromkeys(n for members in classes.values() for n in members if n not in already))
        plans.append(("+".join(classes), union))
    out, seen = [], set()
    for cls, new in plans:
        if not new or new in seen or float_share(already + new, node_macs, total_macs) > limit:
            continue
        seen.add(new)
        out.append(dataclasses.replace(
            base, name=f"{cls} in {kept_as}", excluded_nodes=already + new, dynamic_nodes=(),
            change=f"{base.method} ranges; kept in {kept_as}: every {cls} node ({len(new)})"))
    return out


def weigh_ranking(ranked: list[dict[str, Any]], node_macs: dict[str, int], total_macs: int,
                  limit: float) -> list[dict[str, Any]]:
    """The sensitivity ranking weighed against the MACs each node would take out of int8.

    Nodes where error grows by 6 dB or more (``grows``) keep their place first, in graph order
    (error made early is carried by every later layer); the others are ordered by the error they
    add, as a noise-power ratio 10^(dB/10) - 1, per share of the MACs (a node without MACs counts
    as 0.1 %: cheap, not free). A node that alone would exceed ``limit`` is dropped."""
    def share(r: dict[str, Any]) -> float:
        return node_macs.get(r["node"], 0) / total_macs if total_macs else 0.0

    def value(r: dict[str, Any]) -> float:
        gain = 10.0 ** (max(0.0, float(r.get("growth_db") or 0.0)) / 10.0) - 1.0
        return gain / max(share(r), 1e-3)

    fits = [r for r in ranked if share(r) <= limit]
    grows = [r for r in fits if r.get("grows")]
    rest = sorted((r for r in fits if not r.get("grows")), key=lambda r: (-round(value(r), 6), r["node"]))
    return grows + rest


def greedy_step(current: Any, candidates: list[str], step: int, node_macs: dict[str, int], total_macs: int,
                limit: float, kept_as: str = "float") -> tuple[Any | None, list[str]]:
    """The next trial of the greedy fallback: ``current``'s float set plus the next ``step``
    candidates that keep the float share within ``limit`` (None when none fits), and the
    candidates left after them."""
    already = tuple(current.excluded_nodes)
    chosen: list[str] = []
    rest = list(candidates)
    while rest and len(chosen) < step:
        n = rest.pop(0)
        if n in already or n in chosen:
            continue
        if float_share(already + tuple(chosen) + (n,), node_macs, total_macs) > limit:
            continue  # too heavy to keep in float; a lighter one may still fit
        chosen.append(n)
    if not chosen:
        return None, []
    shown = ", ".join(chosen[:3]) + (", ..." if len(chosen) > 3 else "")
    spec = dataclasses.replace(current, name=f"greedy: {len(already) + len(chosen)} nodes in {kept_as}",
                               excluded_nodes=already + tuple(chosen), dynamic_nodes=(),
                               change=f"{current.method} ranges; float set grown by {shown}")
    return spec, rest


def dynamic_candidates(mac: dict[str, Any], excluded: tuple[str, ...]) -> tuple[tuple[str, ...], float, tuple[str, ...]]:
    """The LSTM/MatMul nodes a trial left in float (not kept there on purpose), their share of
    the MACs and their op types: what a dynamic trial would quantise."""
    total = mac.get("total_macs") or 0
    rows = [r for r in mac.get("unquantized_heavy_nodes", [])
            if r["op_type"] in DYNAMIC_OPS and r["precision"] == "fp32" and r["name"] not in set(excluded)]
    share = sum(r["macs"] for r in rows) / total if total else 0.0
    return tuple(sorted(r["name"] for r in rows)), share, tuple(sorted({r["op_type"] for r in rows}))


def dynamic_trial(base: Any, nodes: tuple[str, ...], share: float, ops: tuple[str, ...]) -> Any:
    return dataclasses.replace(
        base, name="dynamic " + "/".join(ops), dynamic_nodes=tuple(nodes),
        change=(f"{base.method} ranges; {len(nodes)} float node(s) ({100 * share:.0f} % of the MACs) "
                "quantised dynamically (int8 weights, activations per call)"))


def apply_dynamic(src: Path, dst: Path, nodes: tuple[str, ...], reduce_range: bool) -> None:
    """ONNX Runtime's ``quantize_dynamic`` on the named nodes of a (QDQ) model: LSTM ->
    DynamicQuantizeLSTM, MatMul -> DynamicQuantizeLinear + MatMulInteger."""
    import contextlib
    import io
    import logging

    from optkit.common.errors import PassFailed, first_line

    qz = lazy_import("onnxruntime.quantization")
    logger = logging.getLogger()
    level = logger.level
    try:
        logger.setLevel(logging.ERROR)  # "already quantized?" hint on the root logger: it is, on purpose
        with contextlib.redirect_stdout(io.StringIO()):
            qz.quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(DYNAMIC_OPS),
                                nodes_to_quantize=list(nodes), per_channel=False, reduce_range=reduce_range,
                                weight_type=qz.QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001 - ORT's own failures on unusual graphs: a failed trial
        raise PassFailed(f"ONNX Runtime quantize_dynamic failed: {type(exc).__name__}: {first_line(exc)}") from exc
    finally:
        logger.setLevel(level)
