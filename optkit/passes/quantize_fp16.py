"""quantize-fp16: fp16 weights and activations with onnxconverter-common, overflow-checked.

``onnxconverter_common.float16.convert_float_to_float16`` does the conversion. It cannot know which
activations leave the fp16 range (|x| > 65504) on real inputs, and by default it silently clamps
initializers to 1e4. So before converting, this pass runs the fp32 model on check data and
records every float tensor's range (ORT's MinMax calibrator, which reduces each tensor to its
min/max inside the graph, so memory stays small), finds the tensors that overflow fp16 (with a
safety margin) and the initializers outside the fp16 range, and keeps the nodes that produce or
consume them in fp32 (``node_block_list``); consumers too, because the converter would otherwise
cast the overflowing fp32 tensor to fp16 (= inf) right after its producer. After converting, the
fp16 model is run on the same data and must produce finite outputs. (That last check is weak on
ORT CPU, which runs most fp16 ops through fp32 kernels and so hides overflow that a GPU would
hit: the range scan is the real protection.)

The converter's known failure modes are handled in :func:`convert_fp16`: a model that already has
``Cast(to=float)`` nodes comes out inconsistent (onnx.checker: "Inferred elem type differs from
existing elem type: (1) vs (10)") and is fixed; any other failure falls back to ONNX Runtime's
float16 tool; whichever converter made the model is in the pass's info.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.quantization import calibration
from optkit.model.artifact import Artifact
from optkit.common.errors import InputError, PassFailed
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import io_specs, load_onnx, model_precision
from optkit.passes.config import option
from optkit.common.errors import ParameterError
from optkit.passes.base import Pass, PassOutput, PassResult
from optkit.quantization.fp16 import FP16_MAX, convert_fp16
from optkit.common.workspace import work_dir


OVERFLOW_MODES = ("keep-fp32", "fail")


@dataclass(frozen=True)
class QuantizeFp16Config:
    op_block_list: tuple[str, ...] = option((), "Op types to keep in fp32 (added to onnxconverter-common's "
                                            "default list).", metavar="OP,OP")
    node_block_list: tuple[str, ...] = option((), "Node names to keep in fp32.", metavar="A,B")
    keep_io_types: bool = option(True, "Keep the model's inputs and outputs fp32.",
                                 flag="--keep-io-types/--no-keep-io-types")
    check_data: str | None = option(None, "Inputs for the overflow check (default: 8 seeded random inputs).",
                                    path=True, metavar="DIR")
    check_samples: int = option(8, "How many check inputs to run.", min=1, cli=False)
    overflow: str = option("keep-fp32", "What to do with tensors beyond the fp16 range: keep their nodes in "
                           "fp32, or fail.", choices=OVERFLOW_MODES)
    overflow_margin: float = option(2.0, "Flag activations with |x| * margin > 65504.", min=1.0, cli=False)
    seed: int = option(0, "Seed of the random check inputs.", cli=False)


@dataclass
class OverflowScan:
    tensors: dict[str, float]        # activation name -> max |x| on the check data (flagged ones)
    initializers: dict[str, float]   # initializer name -> max |x| (beyond 65504)
    block_nodes: list[str]           # nodes to keep in fp32 because of them
    largest: float = 0.0             # largest |x| of any activation on the check data


def scan_overflow(model: Any, model_path: Path, x: np.ndarray, input_name: str, margin: float,
                  work: Path) -> OverflowScan:
    """Find activations and initializers the fp16 model could not hold, and the nodes touching them.
    ``x``: one array (N, *shape), or a list of samples of mixed length (a dynamic time axis)."""
    numpy_helper = lazy_import("onnx.numpy_helper")
    if isinstance(x, list):
        absmax = _absmax_by_sample(model_path, x, input_name)
    else:
        ranges = calibration.calibrate(model_path, x, input_name, method="minmax", chunk_size=max(1, len(x)),
                                       work_dir=work, op_types=[], progress=False)
        absmax = calibration.tensor_absmax(ranges)
    limit = FP16_MAX / margin
    tensors = {name: m for name, m in absmax.items() if not np.isfinite(m) or m > limit}
    initializers: dict[str, float] = {}
    for init in model.graph.initializer:
        if init.data_type != 1:  # FLOAT
            continue
        arr = numpy_helper.to_array(init)
        if arr.size and np.isfinite(arr).all():
            m = float(np.max(np.abs(arr)))
            if m > FP16_MAX:
                initializers[init.name] = m
    touched = set(tensors) | set(initializers)
    block = [n.name for n in model.graph.node if touched & (set(n.input) | set(n.output))]
    return OverflowScan(tensors, initializers, block, max(absmax.values(), default=0.0))


def _absmax_by_sample(model_path: Path, x: list[np.ndarray], input_name: str) -> dict[str, float]:
    """Largest |x| of every activation over samples of mixed length. ONNX Runtime's calibrators
    stack the per-batch outputs, so they cannot take different lengths; optkit's statistics run
    one sample at a time (calib_stats.collect_stats) and keep per-tensor min/max."""
    from optkit.quantization.calib_stats import collect_stats, tensors_to_calibrate

    # every float tensor (op_types=[]), found like ORT's calibrator does: on the shape-inferred graph
    inferred = lazy_import("onnx").shape_inference.infer_shapes(load_onnx(model_path))
    stats = collect_stats(model_path, x, input_name, names=tensors_to_calibrate(inferred, []), derive_relu=False,
                          check_finite=False, progress=False)
    return {name: float(max(abs(lo), abs(hi))) for name, lo, hi in zip(stats.names, stats.mins, stats.maxs)
            if lo <= hi}  # a tensor no sample reached keeps +inf/-inf: skipped


def _describe(items: dict[str, float], limit: int = 8) -> str:
    shown = sorted(items.items(), key=lambda kv: -kv[1])[:limit]
    text = ", ".join(f"{k} (max |x| {v:.3g})" for k, v in shown)
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")


class QuantizeFp16(Pass):
    name = "quantize-fp16"
    config_cls = QuantizeFp16Config
    output_suffix = ".fp16.onnx"
    tools = ("onnxconverter-common", "onnx", "onnxruntime")

    def fingerprint(self, cfg: QuantizeFp16Config) -> str:
        from optkit.data.samples import fingerprint

        return fingerprint(cfg.check_data) if cfg.check_data else ""

    def run(self, src: Artifact | None, cfg: QuantizeFp16Config, out: PassOutput) -> PassResult:
        onnx = lazy_import("onnx")
        float16 = lazy_import("onnxconverter_common.float16")
        from optkit.data.samples import random_samples
        from optkit.data.source import load_samples
        from optkit.quantization import mixed_calibration

        assert src is not None
        model = load_onnx(src.path)
        precision = model_precision(model)
        if precision != "fp32":
            raise InputError(f"{src.path.name} is already a {precision} model; fp16 conversion needs the fp32 model")
        names = {n.name for n in model.graph.node}
        missing = [n for n in cfg.node_block_list if n not in names]
        if missing:
            raise ParameterError("node_block_list", f"{{name}}: no node named {', '.join(missing)} in {src.path.name}")
        inputs, _ = io_specs(model)
        if len(inputs) != 1 or inputs[0].dtype != "float32":
            raise InputError(f"{src.path.name}: fp16 conversion with an overflow check supports models with one "
                             "float32 input")
        spec = inputs[0]
        sample_shape = spec.concrete_shape(1, src.path.name)[1:]
        # a dynamic time axis and check data of mixed length: each sample at its own length
        mixed = mixed_calibration.load_mixed(cfg.check_data, spec, src.path.name, cfg.check_samples) \
            if cfg.check_data else None
        if mixed is not None:
            samples = mixed
        elif cfg.check_data:
            samples = load_samples(cfg.check_data, sample_shape=sample_shape, dtype=spec.dtype,
                                   limit=cfg.check_samples)
        else:
            samples = random_samples(cfg.check_samples, sample_shape, seed=cfg.seed)
        x = samples.x
        messages: list[str] = []

        with work_dir("optkit-fp16-") as work:
            scan = scan_overflow(model, src.path, x, spec.name, cfg.overflow_margin, Path(work))
        found = bool(scan.tensors or scan.initializers)
        if found:
            what = []
            if scan.tensors:
                what.append(f"activations beyond the fp16 range (|x| > {FP16_MAX / cfg.overflow_margin:g}, "
                            f"65504 with a {cfg.overflow_margin:g}x margin): {_describe(scan.tensors)}")
            if scan.initializers:
                what.append(f"initializers beyond 65504: {_describe(scan.initializers)}")
            if cfg.overflow == "fail":
                raise ParameterError("overflow", "fp16 overflow on " + samples.source + ": " + "; ".join(what)
                                     + "; rerun with {name} keep-fp32 to keep these nodes in fp32")
            messages += what
            messages.append(f"kept in fp32 because of fp16 overflow: {len(scan.block_nodes)} nodes "
                            f"({', '.join(scan.block_nodes[:10])}{', ...' if len(scan.block_nodes) > 10 else ''})")

        node_block = sorted(set(cfg.node_block_list) | set(scan.block_nodes))
        op_block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(cfg.op_block_list))
        converted, converter, notes = convert_fp16(model, cfg.keep_io_types, op_block, node_block, src.path.name)
        messages += notes
        if model_precision(converted) != "fp16":
            raise PassFailed("the converted model has no fp16 tensors (every node is in a block list?)")

        onnx.save(converted, str(out.path))
        n_blocked = sum(1 for n in converted.graph.node if n.name in set(node_block) or n.op_type in set(op_block))
        messages.insert(0, f"converted {src.path.name} -> {out.final} (fp16, inputs/outputs "
                           f"{'fp32' if cfg.keep_io_types else 'fp16'})")
        if not found:
            messages.append(f"overflow check on {len(x)} {samples.source} inputs: every activation within "
                            f"the fp16 range (largest |x| {scan.largest:.3g})")
        info = {
            "keep_io_types": cfg.keep_io_types,
            "check_data": samples.source,
            "check_samples": len(x),
            "overflow_tensors": scan.tensors,
            "overflow_initializers": scan.initializers,
            "overflow_blocked_nodes": scan.block_nodes,
            "node_block_list": node_block,
            "op_block_list_extra": list(cfg.op_block_list),
            "fp32_nodes": n_blocked,
            "largest_activation": scan.largest,
            "converter": converter,
        }
        return PassResult(messages=messages, info=info, precision="fp16",
                          extra={"overflow_blocked_nodes": scan.block_nodes},
                          check_inputs=(spec.name, x, samples.source))

    def check(self, src: Artifact | None, cfg: QuantizeFp16Config, written: Path, result: PassResult) -> None:
        assert src is not None
        input_name, x, source = result.check_inputs
        check = self._check_outputs(src.path, written, input_name, x, source)
        result.messages.append(f"fp16 vs fp32 on {len(x)} check inputs: max |diff| {check['max_abs_diff']:.3g}, "
                               f"relative error {check['rel_error']:.3g}; outputs finite")
        result.info["check"] = check

    @staticmethod
    def _check_outputs(fp32_path: Path, fp16_path: Path, input_name: str, x: Any, source: str) -> dict[str, Any]:
        from optkit.verification.comparator import Comparison
        from optkit.runtime.onnxruntime import OnnxRuntimeRunner

        comparison = Comparison("the fp16 model", hint="keep the overflowing part in fp32 with "
                                "node_block_list/op_block_list, or check the data")
        with OnnxRuntimeRunner(fp32_path) as ref, OnnxRuntimeRunner(fp16_path) as half:
            half_dtype = next((s.dtype for s in half.inputs if s.name == input_name), "float32")
            for i in range(len(x)):
                feed = {input_name: np.asarray(x[i])[None]}  # one sample; lengths may differ (a list)
                with np.errstate(over="ignore"):  # an input beyond fp16 becomes inf: reported below
                    half_feed = {input_name: feed[input_name].astype(half_dtype)}
                comparison.add(ref.infer(feed), half.infer(half_feed), where=f"on {source} input {i}")
        return {"max_abs_diff": comparison.max_abs_diff, "rel_error": comparison.rel_error}
