"""export: PyTorch module -> ONNX (TorchScript exporter), plus the reference outputs.

torch >= 2.9 defaults to the dynamo exporter, which ignores opset 15/17 and may write external
``.onnx.data`` files; ``dynamo=False`` honours the requested opset and writes one file.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from optkit.model.artifact import Artifact
from optkit.common.versions import tool_versions
from optkit.common.defaults import BATCH_SIZE
from optkit.common.errors import InputError, PassFailed, first_line
from optkit.model.dynamic import check_dynamic_axes, parse_length_range, torch_dynamic_axes, write_dynamic_axes
from optkit.model.onnx_utils import check_model, graph_stats, load_onnx
from optkit.passes.config import option
from optkit.passes.base import Pass, PassOutput, PassResult
from optkit.verification.reference import Reference, reference_path_for, save_reference

SUPPORTED_OPSETS = (15, 16, 17, 18)


@dataclass(frozen=True)
class ExportConfig:
    model: str = option("voice-resnet", "zoo name, pkg.module:callable or path/file.py:callable", cli=False)
    weights: str | None = option(None, "state_dict to load into the model.", path=True)
    input_shape: tuple[int, ...] = option((1, 1, 40, 241), "Input shape including the batch dimension.",
                                          metavar="1,1,40,241")
    input_name: str = option("input_mfcc", "Name of the model input in the ONNX graph.")
    output_name: str = option("output_wvp", "Name of the model output in the ONNX graph.")
    opset: int = option(17, "ONNX opset (15-18).", min=15, max=18)
    dynamic_batch: bool = option(True, "Make the batch axis dynamic.", flag="--dynamic-batch/--static-batch")
    dynamic_axes: tuple[str, ...] = option(
        (), "Make an axis of the input or output dynamic: NAME:AXIS[=LABEL], e.g. input_mfcc:3 for the time "
        "axis of the voice model (repeatable; axis 0 is the batch). An axis besides the batch needs "
        "--length-range.", flag="--dynamic-axis", metavar="NAME:AXIS", multiple=True, check=check_dynamic_axes)
    length_range: str | None = option(
        None, "MIN:MAX lengths of the dynamic axes besides the batch: the export checks the model against "
        "PyTorch at lengths spread over it and records it in the model (the service refuses lengths outside).",
        metavar="MIN:MAX", check=parse_length_range)
    check_lengths: tuple[int, ...] = option(
        (), "Lengths the export checks against PyTorch (default: the range's extremes, the --input-shape "
        "length and three between).", metavar="100,241,500,1000")
    reference_data: str | None = option(None, "Directory of .npy samples or .npz (x[, y]) for the reference set.",
                                        path=True)
    reference_inputs: str = option(
        "embed", "embed: the reference file holds the inputs; link: it names the --reference-data directory and "
        "the sha256 of its files instead, and verify reads the inputs from there shard by shard (data sets "
        "too large for memory).", choices=("embed", "link"))
    reference_samples: int = option(64, "Size of the seeded random reference set when --reference-data is not "
                                    "given.", min=1)
    reference_seed: int = option(0, "Seed of the random reference set.", flag="--seed")
    atol: float = option(1e-4, "Allowed ONNX Runtime vs PyTorch difference.")
    batch_size: int = option(BATCH_SIZE, "PyTorch/ONNX Runtime batch for computing the reference.", cli=False)


class Export(Pass):
    name = "export"
    config_cls = ExportConfig
    needs_input = False
    tools = ("torch", "onnx", "onnxruntime")

    def side_outputs(self, cfg: ExportConfig, out: Path) -> list[Path]:
        return [reference_path_for(out)]

    def fingerprint(self, cfg: ExportConfig) -> str:
        from optkit.data.samples import fingerprint as data_fp
        from optkit.model.modelspec import source_fingerprint

        fp = source_fingerprint(cfg.model, cfg.weights)
        if cfg.reference_data:
            fp += ":" + data_fp(cfg.reference_data)
        return fp

    def run(self, src: Artifact | None, cfg: ExportConfig, out: PassOutput) -> PassResult:
        from optkit.common.lazy import lazy_import

        torch = lazy_import("torch", extra="torch")
        from optkit.data.samples import random_samples
        from optkit.data.source import load_samples
        from optkit.model.modelspec import load_model
        from optkit.common.errors import ParameterError
        from optkit.verification.reference import InputsHasher

        if cfg.opset not in SUPPORTED_OPSETS:
            raise InputError(f"opset {cfg.opset} is not supported; use one of {', '.join(map(str, SUPPORTED_OPSETS))}")
        if len(cfg.input_shape) < 2:
            raise InputError(f"input shape {cfg.input_shape} needs a batch dimension and at least one more")
        ref_path = reference_path_for(out.final)
        sample_shape = tuple(cfg.input_shape[1:])

        # Data first: bad reference data fails fast, before the (slow) model build.
        hasher = None
        if cfg.reference_inputs == "link":
            if not cfg.reference_data or not Path(cfg.reference_data).is_dir():
                raise ParameterError("reference_inputs", "{name} link needs a data directory as the reference data "
                                     "(--reference-data DIR)")
            from optkit.data.source import open_samples

            samples = open_samples(cfg.reference_data, sample_shape=sample_shape)
            x, labels, source = samples.array(), samples.labels, samples.source
            # the inputs' identity is hashed as they stream through PyTorch: no second pass
            hasher = InputsHasher()
            hasher.start(cfg.input_name, x.dtype, x.shape)
        elif (mixed := _mixed_length_data(cfg)) is not None:
            samples, labels, source = mixed, mixed.labels, mixed.source
            x = mixed.samples[0][None]  # the traced example; every sample is run below, by length
        elif cfg.reference_data:
            samples = load_samples(cfg.reference_data, sample_shape=sample_shape, limit=None)
            x, labels, source = samples.x, samples.y, samples.source
        else:
            samples = random_samples(cfg.reference_samples, sample_shape, seed=cfg.reference_seed)
            x, labels, source = samples.x, samples.y, samples.source

        model = load_model(cfg.model, cfg.weights)
        _require_float32(model, cfg.model)
        dummy = torch.from_numpy(x[: max(1, cfg.input_shape[0])].copy())
        mixed = samples if hasattr(samples, "groups") else None
        ref_outputs, data_by_length = (_torch_by_length(torch, model, cfg, mixed) if mixed is not None
                                       else (self._torch_outputs(torch, model, x, cfg, hasher), {}))

        axes = _resolve_axes(cfg, ref_outputs.ndim)
        by_length = {**_torch_at_lengths(torch, model, cfg, axes), **data_by_length}
        messages: list[str] = []
        tmp = out.path
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    model, (dummy,), str(tmp),
                    input_names=[cfg.input_name], output_names=[cfg.output_name],
                    dynamic_axes=torch_dynamic_axes(axes), opset_version=cfg.opset,
                    do_constant_folding=True, dynamo=False,
                )
            except Exception as exc:
                raise PassFailed(f"torch.onnx.export failed: {type(exc).__name__}: {first_line(exc)}") from exc
        onnx_model = load_onnx(tmp)
        if len(onnx_model.graph.output) != 1:
            raise PassFailed(f"the model has {len(onnx_model.graph.output)} outputs; optkit export handles single-output models")
        if by_length:
            from optkit.model.onnx_utils import save_onnx_atomically

            write_dynamic_axes(onnx_model, axes)
            save_onnx_atomically(onnx_model, tmp)
        check_model(tmp, full=True, what="exported model")
        ref = Reference(
            inputs={cfg.input_name: mixed.samples if mixed is not None else x},
            outputs={cfg.output_name: ref_outputs},
            labels=labels,
            meta={"model": cfg.model, "source": source, "opset": cfg.opset,
                  **({"dynamic_axes": [a.__dict__ for a in axes if not a.is_batch]} if by_length else {}),
                  **({"time_axis": mixed.time_axis} if mixed is not None else {}),
                  "tool_versions": tool_versions("torch", "onnx", "onnxruntime")},
            inputs_sha256=hasher.hexdigest() if hasher else None,
        )
        save_reference(out.side(ref_path), ref)
        stats = graph_stats(onnx_model, tmp)
        messages.insert(0, f"exported {cfg.model} -> {out.final} (opset {cfg.opset}, {stats.describe()})")
        messages.append(f"reference: {ref_path} ({len(samples)} samples{', with labels' if labels is not None else ''}"
                        f"{f', inputs linked to {source}' if hasher else ''})")
        if by_length:
            messages.insert(1, "dynamic axes: " + ", ".join(a.describe() for a in axes))
        return PassResult(messages=messages, info={"nodes": stats.nodes}, precision="fp32",
                          extra={"reference": ref_path.name}, check_inputs=(ref, by_length))

    def check(self, src: Artifact | None, cfg: ExportConfig, written: Path, result: PassResult) -> None:
        ref, by_length = result.check_inputs
        x = ref.inputs[cfg.input_name]
        if not ref.mixed_length:  # mixed lengths: every reference sample is in by_length, by its length
            max_err = self._compare_with_ort(written, cfg, x, ref.outputs[cfg.output_name], label=written.name)
            result.messages.append(f"ONNX Runtime matches PyTorch on {len(x)} reference inputs: max |diff| "
                                   f"{max_err:.2e} (tolerance {cfg.atol:g})")
            result.info["max_abs_vs_torch"] = max_err
            result.extra["max_abs_vs_torch"] = max_err
        if by_length:
            errs = {n: self._compare_with_ort(written, cfg, xs, ys, label=written.name,
                                              where=f"at length {n} (random inputs)")
                    for n, (xs, ys) in by_length.items()}
            if len(errs) <= 8:
                result.messages.append("ONNX Runtime matches PyTorch at lengths " + ", ".join(
                    f"{n} ({e:.1e})" for n, e in errs.items()) + f" (max |diff|, tolerance {cfg.atol:g})")
            else:
                worst = max(errs, key=errs.get)
                result.messages.append(f"ONNX Runtime matches PyTorch at {len(errs)} lengths {min(errs)}..{max(errs)}: "
                                       f"max |diff| {errs[worst]:.1e} at length {worst} (tolerance {cfg.atol:g})")
            result.info["max_abs_vs_torch_by_length"] = {str(n): e for n, e in errs.items()}
            result.info.setdefault("max_abs_vs_torch", max(errs.values()))
            result.extra.setdefault("max_abs_vs_torch", max(errs.values()))
            result.extra["max_abs_vs_torch_by_length"] = result.info["max_abs_vs_torch_by_length"]

    @staticmethod
    def _torch_outputs(torch: Any, model: Any, x: Any, cfg: ExportConfig, hasher: Any = None) -> np.ndarray:
        """PyTorch's outputs on ``x`` (an array, or a LazyArray read shard by shard), batch by batch;
        ``hasher`` (release.InputsHasher) sees every batch in order."""
        outs = []
        # A static-batch export is checked (and its reference computed) at its own batch size.
        step = cfg.batch_size if cfg.dynamic_batch else cfg.input_shape[0]
        with torch.inference_mode():
            for start in range(0, len(x), step):
                batch = np.array(x[start : start + step])  # a copy: torch.from_numpy shares memory
                if hasher is not None:
                    hasher.update(batch)
                try:
                    y = model(torch.from_numpy(batch))
                except Exception as exc:
                    raise InputError(
                        f"the model does not run on inputs of shape (N, {', '.join(map(str, x.shape[1:]))}): "
                        f"{type(exc).__name__}: {first_line(exc)}"
                    ) from exc
                if isinstance(y, (tuple, list)):
                    if len(y) != 1:
                        raise InputError(f"the model returns {len(y)} outputs; optkit export handles single-output models")
                    y = y[0]
                outs.append(y.detach().float().numpy())
        return np.concatenate(outs, axis=0)

    @staticmethod
    def _compare_with_ort(path: Path, cfg: ExportConfig, x: np.ndarray, expected: np.ndarray, label: str,
                          where: str = "on the reference inputs") -> float:
        from optkit.verification.comparator import Comparison, Tolerance
        from optkit.model.feeds import reference_batches
        from optkit.runtime.onnxruntime import OnnxRuntimeRunner

        comparison = Comparison("the exported model", Tolerance(cfg.atol), against="PyTorch",
                                hint="the export is not faithful (unsupported op or data-dependent control flow?)")
        start = 0
        with OnnxRuntimeRunner(path, label=label) as runner:
            for feed, take in reference_batches(runner.inputs, {cfg.input_name: x}, cfg.batch_size, label):
                got = runner.infer(feed)
                got = {k: v[:take] for k, v in got.items()}
                comparison.add({cfg.output_name: expected[start : start + take]}, got,
                               where=where)
                start += take
        return comparison.max_abs_diff


def _resolve_axes(cfg: ExportConfig, output_rank: int) -> list[Any]:
    """The dynamic axes of the export (optkit.model.dynamic), the export length inside the range."""
    from optkit.model.dynamic import resolve_axes

    batch = (cfg.input_name, cfg.output_name) if cfg.dynamic_batch else ()
    axes = resolve_axes(cfg.dynamic_axes, {cfg.input_name: len(cfg.input_shape), cfg.output_name: output_rank},
                        cfg.length_range, batch_names=batch)
    for a in axes:
        if a.tensor == cfg.input_name and not a.contains(cfg.input_shape[a.axis]):
            raise InputError(f"--input-shape {','.join(map(str, cfg.input_shape))}: length {cfg.input_shape[a.axis]} "
                             f"of axis {a.axis} is outside --length-range {a.min}:{a.max}")
    return [replace(a, opt=cfg.input_shape[a.axis]) if a.tensor == cfg.input_name and not a.is_batch else a
            for a in axes]


def _torch_at_lengths(torch: Any, model: Any, cfg: ExportConfig, axes: list[Any]) -> dict[int, tuple[Any, Any]]:
    """{length: (inputs, PyTorch outputs)}: seeded random inputs at each check length of the
    input's dynamic axes besides the batch (none: {}), 2 samples each (at the static batch when
    the batch is fixed)."""
    from optkit.data.samples import random_samples
    from optkit.model.dynamic import check_lengths

    timed = [a for a in axes if a.tensor == cfg.input_name and not a.is_batch]
    if not timed:
        return {}
    lo, hi = max(a.min for a in timed), min(a.max for a in timed)
    export_len = cfg.input_shape[timed[0].axis]
    n = 2 if cfg.dynamic_batch else cfg.input_shape[0]
    out = {}
    for i, length in enumerate(check_lengths(lo, hi, export_len, cfg.check_lengths)):
        shape = [length if any(a.axis == k + 1 for a in timed) else d for k, d in enumerate(cfg.input_shape[1:])]
        x = random_samples(n, tuple(shape), seed=cfg.reference_seed + 1 + i).x
        out[length] = (x, Export._torch_outputs(torch, model, x, cfg))
    return out


def _mixed_length_data(cfg: ExportConfig) -> Any:
    """The reference data as a mixed-length set (optkit.data.ragged) when the input has a dynamic
    time axis and the data is a directory or a ragged .npz (``offsets``); else None. Audio is cut
    to MFCCs of its natural length, capped at the range's maximum; a sample outside the range is
    refused."""
    from optkit.model.dynamic import parse_dynamic_axis, parse_length_range

    if not cfg.reference_data or cfg.reference_inputs != "embed" or not cfg.length_range:
        return None
    timed = [axis for name, axis, _ in map(parse_dynamic_axis, cfg.dynamic_axes)
             if name == cfg.input_name and axis > 0]
    path = Path(cfg.reference_data)
    if len(timed) != 1 or not (path.is_dir() or _has_offsets(path)):
        return None
    from optkit.data.ragged import load_ragged

    lo, hi = parse_length_range(cfg.length_range)
    data = load_ragged(path, sample_ndim=len(cfg.input_shape) - 1, time_axis=timed[0] - 1, max_frames=hi)
    lengths = data.lengths
    if lengths.min() < lo or lengths.max() > hi:
        bad = int(np.flatnonzero((lengths < lo) | (lengths > hi))[0])
        raise InputError(f"{path}: sample {bad} has length {lengths[bad]}, outside --length-range {lo}:{hi}")
    return data


def _has_offsets(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "offsets" in z.files
    except (ValueError, OSError, EOFError):
        return False


def _torch_by_length(torch: Any, model: Any, cfg: ExportConfig, data: Any) -> tuple[np.ndarray, dict[int, tuple[Any, Any]]]:
    """PyTorch's outputs of a mixed-length set in its order, and {length: (inputs, outputs)}: each
    length runs as its own batches, nothing padded."""
    outputs: np.ndarray | None = None
    by_length = {}
    for length, x, idx in data.groups():
        y = Export._torch_outputs(torch, model, x, cfg)
        if outputs is None:
            outputs = np.empty((len(data), *y.shape[1:]), dtype=y.dtype)
        elif y.shape[1:] != outputs.shape[1:]:
            raise InputError(f"the model's output shape depends on the length ({outputs.shape[1:]} vs {y.shape[1:]} at "
                             f"length {length}); a mixed-length reference needs outputs of one shape")
        outputs[idx] = y
        by_length[length] = (x, y)
    return outputs, by_length


def _require_float32(model: Any, name: str) -> None:
    """The export traces float32 inputs; a .half()/.to(bfloat16) model fails inside torch with a
    dtype clash. Say what the fp16 way is instead."""
    kinds = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.is_floating_point()} - {"float32"})
    if kinds:
        raise InputError(f"{name} has {'/'.join(kinds)} parameters; optkit export traces float32: export the "
                         "float32 model (model.float()) and make the fp16 artifact with optkit quantize --fp16 "
                         "(it keeps overflowing tensors in fp32 and checks the result)")
