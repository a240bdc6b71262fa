"""Per-layer error localisation: where does a quantised model start to drift from fp32?

Built on ``onnxruntime.quantization.qdq_loss_debug``: its
``modify_model_output_intermediate_tensors`` exposes every float tensor of a model as a graph
output, for the fp32 and the quantised (QDQ or fp16) model alike. Its ``collect_activations`` /
``create_activation_matching`` / ``compute_activation_error`` then keep every activation of every
sample in memory (~0.85 GiB per sample per model on the production-size voice model), so instead
we run the two augmented models one sample at a time and accumulate, per tensor, the energies
that its SQNR (``compute_signal_to_quantization_noice_ratio``: 20 log10 ||x|| / ||x - y||) needs:
memory is bounded by one sample's activations of both models, whatever the number of samples.

A quantised node reads its activations through QuantizeLinear -> DequantizeLinear (or, in an
fp16 model, through Cast); we follow those back to the fp32 tensor they stand for, so each
node's output error can be compared with the error of the inputs it actually consumed. A node
whose output SQNR is ``threshold_db`` lower than its inputs' is where error grows; the first
such nodes (in graph order) are what ``--exclude-nodes`` should keep in fp32.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import
from optkit.common.workspace import work_dir

PASS_THROUGH_OPS = {"QuantizeLinear", "DequantizeLinear", "Cast"}
_EPS = float(np.finfo(float).eps)  # the floor ORT's SQNR helper uses for both norms


@dataclass
class _Energy:
    signal: float = 0.0   # sum x^2 (fp32)
    noise: float = 0.0    # sum (x - y)^2
    max_abs: float = 0.0  # max |x - y|

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        a = ref.astype(np.float64).ravel()
        d = got.astype(np.float64).ravel() - a
        self.signal += float(a @ a)
        self.noise += float(d @ d)
        if d.size:
            self.max_abs = max(self.max_abs, float(np.max(np.abs(d))))

    def sqnr_db(self) -> float:
        return 20.0 * math.log10(max(math.sqrt(self.signal), _EPS) / max(math.sqrt(self.noise), _EPS))

    def rel_error(self) -> float:
        return math.sqrt(self.noise) / max(math.sqrt(self.signal), _EPS)


def _as_path(model: Any, work: Path, name: str) -> Path:
    onnx = lazy_import("onnx")
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if not p.is_file():
            raise InputError(f"model {p} does not exist")
        return p
    if isinstance(model, onnx.ModelProto):
        p = work / name
        onnx.save(model, str(p))
        return p
    raise InputError(f"expected an ONNX model path or ModelProto, got {type(model).__name__}")


def _source_tensor(name: str, producers: dict[str, Any], initializers: set[str]) -> tuple[str, bool]:
    """Follow Q/DQ/Cast back to the tensor a consumed value stands for; (name, is_weight)."""
    seen = 0
    while name in producers and producers[name].op_type in PASS_THROUGH_OPS and seen < 8:
        name = producers[name].input[0]
        seen += 1
    return name, name in initializers


def _as_consumed(name: str, consumers: dict[str, list[Any]]) -> str:
    """The value consumers of ``name`` read: its QuantizeLinear -> DequantizeLinear output if it
    has one. (With asymmetric activations ORT drops a Relu/Clip after a node and lets the
    quantisation range clamp instead, so only the dequantised value is comparable with fp32.)"""
    for q in consumers.get(name, []):
        if q.op_type == "QuantizeLinear" and q.input[0] == name:
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return dq.output[0]
    return name


def localize_error(
    fp32_model: Any,
    quant_model: Any,
    inputs: dict[str, np.ndarray],
    top: int | None = 5,
    *,
    threshold_db: float = 6.0,
    max_samples: int = 8,
) -> list[dict[str, Any]]:
    """Compare a quantised model with its fp32 model layer by layer on the same inputs.

    ``fp32_model`` / ``quant_model``: paths or ``onnx.ModelProto`` (the quantised model is an int8
    QDQ or an fp16 model made from the fp32 one; node names are those of the quantised model,
    i.e. of the fp32 model after ORT's quantisation pre-processing). ``inputs``: model input name
    -> array with a leading sample axis; at most ``max_samples`` samples are run, one at a time.
    Both models run on ORT CPU with graph optimisations off (QDQ simulated in float, as ORT's
    ``qdq_loss_debug`` does).

    Returns at most ``top`` layers (all layers if ``top`` is None), in graph order. With ``top``,
    these are the first layers where the error grows by ``threshold_db`` or more relative to the
    inputs they consume; if fewer than ``top`` do, the layers with the largest growth fill the
    list. Each dict has:

    - ``index``: position of the node in the quantised model's graph (graph order)
    - ``node``: node name; ``op_type``: its op type; ``output``: the compared output tensor
    - ``sqnr_db``: SQNR of that output vs fp32, 20 log10(||fp32|| / ||quant - fp32||) over the
      samples (higher is better; ~ +inf when identical)
    - ``rel_error``: ||quant - fp32|| / ||fp32||; ``max_abs_error``: max |quant - fp32|
    - ``input_sqnr_db``: the lowest SQNR among the activations the node consumes (as consumed,
      i.e. after their own quantisation); None when it consumes none
    - ``growth_db``: ``input_sqnr_db - sqnr_db`` (how much error this node adds; the output SQNR
      measured against a perfect input when there is none)
    - ``grows``: ``growth_db >= threshold_db``
    - ``quantized``: whether the node reads int8 (DequantizeLinear) inputs in the quantised model
    - ``exclude_nodes``: node names to pass to ``optkit quantize --exclude-nodes`` to keep this
      layer in fp32
    - ``samples``: number of samples compared
    """
    ort = lazy_import("onnxruntime")
    onnx = lazy_import("onnx")
    qdq_debug = lazy_import("onnxruntime.quantization.qdq_loss_debug")
    if not inputs:
        raise InputError("localize_error needs at least one input array")
    counts = {np.asarray(v).shape[0] if np.asarray(v).ndim else 0 for v in inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"inputs must share a leading sample axis; got sample counts {sorted(counts)}")
    n = min(counts.pop(), max(1, int(max_samples)))

    with work_dir("optkit-localize-") as work_name:
        work = Path(work_name)
        fp32_path = _as_path(fp32_model, work, "fp32.onnx")
        quant_path = _as_path(quant_model, work, "quant.onnx")
        qmodel = onnx.load(str(quant_path), load_external_data=False)
        fmodel = onnx.load(str(fp32_path), load_external_data=False)

        rows, pairs = _plan(qmodel, fmodel)
        aug_f, aug_q = work / "fp32.aug.onnx", work / "quant.aug.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            qdq_debug.modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
            qdq_debug.modify_model_output_intermediate_tensors(str(quant_path), str(aug_q))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        sess_f = ort.InferenceSession(str(aug_f), so, providers=["CPUExecutionProvider"])
        sess_q = ort.InferenceSession(str(aug_q), so, providers=["CPUExecutionProvider"])
        suffix = qdq_debug._TENSOR_SAVE_POSTFIX  # the name modify_model_output_... appends
        names_f = [o.name for o in sess_f.get_outputs()]
        names_q = [o.name for o in sess_q.get_outputs()]
        need_f = {f for _, f in pairs}
        need_q = {q for q, _ in pairs}
        energies = {pair: _Energy() for pair in pairs}
        for i in range(n):
            feed = {k: np.ascontiguousarray(np.asarray(v)[i : i + 1]) for k, v in inputs.items()}
            vf = {name[: -len(suffix)]: val for name, val in zip(names_f, sess_f.run(None, feed))
                  if name.endswith(suffix) and name[: -len(suffix)] in need_f}
            vq = {name[: -len(suffix)]: val for name, val in zip(names_q, sess_q.run(None, feed))
                  if name.endswith(suffix) and name[: -len(suffix)] in need_q}
            for (q, f), e in energies.items():
                if q in vq and f in vf and vq[q].size == vf[f].size:
                    e.add(vf[f], vq[q])
            del vf, vq
        del sess_f, sess_q

    table = []
    for row in rows:
        out_e = energies.get(row["output_pair"])
        if out_e is None or out_e.signal == 0.0 and out_e.noise == 0.0:
            continue
        sqnr = out_e.sqnr_db()
        in_sqnrs = [energies[p].sqnr_db() for p in row["input_pairs"] if p in energies
                    and (energies[p].signal or energies[p].noise)]
        in_sqnr = min(in_sqnrs) if in_sqnrs else None
        perfect = 20.0 * math.log10(max(math.sqrt(out_e.signal), _EPS) / _EPS)
        # No error at the output: nothing grew here (the capped SQNRs of two exact tensors differ
        # only by their norms).
        growth = 0.0 if out_e.noise == 0.0 else (in_sqnr if in_sqnr is not None else perfect) - sqnr
        table.append({
            "index": row["index"],
            "node": row["node"],
            "op_type": row["op_type"],
            "output": row["output"],
            "sqnr_db": round(sqnr, 3),
            "rel_error": out_e.rel_error(),
            "max_abs_error": out_e.max_abs,
            "input_sqnr_db": None if in_sqnr is None else round(in_sqnr, 3),
            "growth_db": round(growth, 3),
            "grows": bool(growth >= threshold_db),
            "quantized": row["quantized"],
            "exclude_nodes": [row["node"]],
            "samples": n,
        })
    if top is None:
        return table
    top = max(0, int(top))
    chosen = [r for r in table if r["grows"]][:top]
    if len(chosen) < top:
        rest = sorted((r for r in table if not r["grows"]), key=lambda r: -r["growth_db"])
        chosen += rest[: top - len(chosen)]
    return sorted(chosen, key=lambda r: r["index"])


def _plan(qmodel: Any, fmodel: Any) -> tuple[list[dict[str, Any]], set[tuple[str, str]]]:
    """Which (quant tensor, fp32 tensor) pairs to compare for each compute node of the quant model."""
    f_tensors = {o for n in fmodel.graph.node for o in n.output} | {i.name for i in fmodel.graph.input}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in qmodel.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {i.name for i in qmodel.graph.initializer}
    rows: list[dict[str, Any]] = []
    pairs: set[tuple[str, str]] = set()
    for index, node in enumerate(qmodel.graph.node):
        if node.op_type in PASS_THROUGH_OPS:
            continue
        outputs = [o for o in node.output if o and o in f_tensors]
        if not outputs:
            continue
        input_pairs = []
        quantized = False
        for name in node.input:
            if not name or name in initializers:
                continue
            if name in producers and producers[name].op_type == "DequantizeLinear":
                quantized = True
            source, is_weight = _source_tensor(name, producers, initializers)
            if is_weight or source not in f_tensors:
                continue
            input_pairs.append((name, source))
        out = outputs[0]
        out_pair = (_as_consumed(out, consumers), out)
        pairs.add(out_pair)
        pairs.update(input_pairs)
        rows.append({"index": index, "node": node.name or f"<{node.op_type} #{index}>", "op_type": node.op_type,
                     "output": out, "output_pair": out_pair, "input_pairs": input_pairs, "quantized": quantized})
    return rows, pairs
