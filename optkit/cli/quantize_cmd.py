"""``optkit quantize``: int8 (static QDQ, calibrated) or fp16 conversion of an fp32 ONNX model."""
from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from optkit.cli.common import csv_option, echo_lines

INT8_ONLY = ("calibration", "target", "method", "percentile", "exclude_nodes", "exclude_op_types",
             "recalibrate", "calibration_limit", "chunk_size", "outliers")
FP16_ONLY = ("op_block_list", "node_block_list", "keep_io_types", "check_data", "overflow")


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@click.command("quantize", context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .onnx file.")
@click.option("--int8", "int8", is_flag=True, help="Static int8 QDQ quantisation (needs --calibration).")
@click.option("--fp16", "fp16", is_flag=True, help="fp16 weights and activations (fp32 inputs/outputs by default).")
@click.option("--calibration", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="int8: calibration samples (directory of .npy files, or an .npz with x).")
@click.option("--target", type=click.Choice(["cpu", "openvino", "tensorrt"]), default="cpu", show_default=True,
              help="int8: the runtime that will run the model; picks the QDQ form (cpu: u8 activations; "
                   "openvino: u8 too, measured fastest there; tensorrt: symmetric s8, zero points 0).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="int8: calibration method.")
@click.option("--percentile", type=float, default=99.999, show_default=True,
              help="int8: percentile for --method percentile.")
@click.option("--exclude-nodes", callback=csv_option, default=None, metavar="A,B",
              help="int8: node names to keep in fp32 (see `optkit verify` for where error grows).")
@click.option("--exclude-op-types", callback=csv_option, default=None, metavar="OP,OP",
              help="int8: op types to keep in fp32, e.g. Add,Sigmoid.")
@click.option("--recalibrate", is_flag=True, help="int8: ignore the calibration cache (<output stem>.calib.json).")
@click.option("--calibration-limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="int8: use only the first N calibration samples.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=2, show_default=True,
              help="int8: samples per calibration step; bounds memory (~0.85 GiB per sample on the "
                   "production-size voice model with entropy/percentile).")
@click.option("--outliers", type=click.Choice(["clip", "refuse", "keep"]), default="clip", show_default=True,
              help="int8: calibration values far outside the rest of the set (beyond the 0.1-99.9 "
                   "percentile band by 10 band widths): clip them with a warning, refuse the data, or keep "
                   "them with a warning. Values beyond float32's reach are always refused.")
@click.option("--op-block-list", callback=csv_option, default=None, metavar="OP,OP",
              help="fp16: op types to keep in fp32 (added to onnxconverter-common's default list).")
@click.option("--node-block-list", callback=csv_option, default=None, metavar="A,B",
              help="fp16: node names to keep in fp32.")
@click.option("--keep-io-types/--no-keep-io-types", default=True, show_default=True,
              help="fp16: keep the model's inputs and outputs fp32.")
@click.option("--check-data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="fp16: inputs for the overflow check (default: 8 seeded random inputs).")
@click.option("--overflow", type=click.Choice(["keep-fp32", "fail"]), default="keep-fp32", show_default=True,
              help="fp16: what to do with tensors beyond the fp16 range: keep their nodes in fp32, or fail.")
@click.pass_context
def quantize(ctx: click.Context, model: Path, output: Path, int8: bool, fp16: bool, **opts: object) -> None:
    """Quantise an fp32 ONNX model to static int8 (QDQ) or convert it to fp16.

    int8 uses ONNX Runtime's static quantiser with per-channel int8 weights, calibrated on MFCC
    samples in bounded memory; the ranges are cached beside the output as <stem>.calib.json and
    reused while the model, data and method are unchanged. fp16 uses onnxconverter-common and
    keeps in fp32 the nodes whose activations (on --check-data) exceed the fp16 range.

    \b
    Examples:
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calibration_data/calib
      optkit quantize model.onnx -o model.trt-int8.onnx --int8 --calibration calib/ --target tensorrt
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calib/ --method entropy \\
          --exclude-nodes /layer4/layer4.2/Add
      optkit quantize model.onnx -o model.fp16.onnx --fp16 --check-data calibration_data/calib
    """
    from optkit.artifact import Artifact
    from optkit.onnx_utils import load_onnx
    from optkit.passes import get_pass

    if int8 == fp16:
        raise click.UsageError("choose exactly one of --int8 or --fp16")
    mode_opts, other_opts, mode = (INT8_ONLY, FP16_ONLY, "--int8") if int8 else (FP16_ONLY, INT8_ONLY, "--fp16")
    stray = [_flag(n) for n in other_opts if _given(ctx, n)]
    if stray:
        raise click.UsageError(f"{', '.join(stray)} cannot be used with {mode}")
    if int8 and opts["calibration"] is None:
        raise click.UsageError("--int8 needs --calibration DIR (calibration samples)")

    load_onnx(model, load_weights=False)  # a clear error for a missing/corrupt model, before any work
    src = Artifact.from_file(model, kind="onnx")
    if int8:
        step = get_pass("quantize-int8")
        cfg = step.config_cls(
            calibration=str(opts["calibration"]), target=opts["target"], method=opts["method"],
            percentile=float(opts["percentile"]), exclude_nodes=tuple(opts["exclude_nodes"]),
            exclude_op_types=tuple(opts["exclude_op_types"]), recalibrate=bool(opts["recalibrate"]),
            calibration_limit=opts["calibration_limit"], chunk_size=int(opts["chunk_size"]),
            outliers=str(opts["outliers"]),
        )
    else:
        step = get_pass("quantize-fp16")
        cfg = step.config_cls(
            op_block_list=tuple(opts["op_block_list"]), node_block_list=tuple(opts["node_block_list"]),
            keep_io_types=bool(opts["keep_io_types"]),
            check_data=str(opts["check_data"]) if opts["check_data"] is not None else None,
            overflow=str(opts["overflow"]),
        )
    result = step.run(src, cfg, output)
    echo_lines(result.messages)
