"""optkit build-engine: a TensorRT engine (+ sidecar JSON) from an ONNX model."""
from __future__ import annotations

from pathlib import Path

import click

from optkit.errors import InputError


def _batch_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from optkit.passes.build_engine import parse_batch

    try:
        parse_batch(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _size_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from optkit.passes.build_engine import parse_size

    try:
        parse_size(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("build-engine")
@click.argument("onnx_model", type=click.Path(path_type=Path, dir_okay=True))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Engine file to write (e.g. model.engine); OUTPUT.json gets the build metadata.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="Engine precision. Default: the model's own. fp16/int8 from an fp32 model: optkit makes "
                   "the fp16 / TensorRT-form QDQ int8 model first (int8 needs --calibration).")
@click.option("--batch", callback=_batch_option, metavar="MIN:OPT:MAX", default=None,
              help="Optimization profile for the batch axis. Default 1:1:8 (dynamic batch), or the model's "
                   "static batch.")
@click.option("--workspace", default="1G", show_default=True, callback=_size_option,
              help="TensorRT workspace memory limit (512M, 1G, 2GiB, or bytes).")
@click.option("--timing-cache", type=click.Path(path_type=Path), default=None,
              help="Timing cache file: loaded if it exists, saved after the build (speeds up rebuilds).")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Calibration samples (dir of .npy or .npz) for --precision int8 from an fp32 model.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True,
              help="Builder optimization level (0 fastest build ... 5 most tactics).")
@click.option("--version-compatible", is_flag=True,
              help="Build an engine that later TensorRT versions can load (may run slower).")
@click.option("--hardware-compatibility", type=click.Choice(["none", "ampere_plus", "same_compute_capability"]),
              default="none", show_default=True, help="Let the engine run on other GPU architectures.")
@click.option("--tf32", is_flag=True,
              help="Allow TF32 tensor cores for fp32 layers (faster; off by default because it moves outputs "
                   "by ~1e-3, beyond the fp32 verification gate).")
def build_engine(onnx_model: Path, output: Path, precision: str | None, batch: str | None, workspace: str,
                 timing_cache: Path | None, calibration: Path | None, opt_level: int,
                 version_compatible: bool, hardware_compatibility: str, tf32: bool) -> None:
    """Build a TensorRT engine from an ONNX model (needs TensorRT and a CUDA GPU).

    \b
    Examples:
      optkit build-engine model.sim.onnx -o model.engine --batch 1:1:8
      optkit build-engine model.sim.onnx -o model.fp16.engine --precision fp16 --timing-cache trt.cache
      optkit build-engine model.sim.onnx -o model.int8.engine --precision int8 --calibration calibration_data/calib

    The engine only loads with the same TensorRT version and GPU; OUTPUT.json records both and
    optkit verify/bench check it before loading.
    """
    from optkit.passes.build_engine import BuildEngine, source_artifact

    step = BuildEngine()
    cfg = step.make_config({
        "precision": precision,
        "batch": batch,
        "workspace": workspace,
        "timing_cache": str(timing_cache) if timing_cache else None,
        "calibration": str(calibration) if calibration else None,
        "opt_level": opt_level,
        "version_compatible": version_compatible,
        "hardware_compatibility": hardware_compatibility,
        "if_unavailable": "fail",
        "tf32": tf32,
    })
    result = step(source_artifact(onnx_model), cfg, output)
    for line in result.messages:
        click.echo(line)
    if result.artifact is not None:
        click.echo(f"wrote {output} and {output.name}.json")
