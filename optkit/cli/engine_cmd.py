"""optkit build-engine: a TensorRT engine (+ sidecar JSON) from an ONNX model."""
from __future__ import annotations

from pathlib import Path

import click

from optkit.cli.common import config_from_cli
from optkit.cli.declared import input_argument, output_option
from optkit.cli.options import click_options, pass_command


def _with_sidecar(output: Path, params: dict) -> list[Path]:
    from optkit.runtime.engine_meta import sidecar_path

    return [Path(output), sidecar_path(output)]


def _engine_kinds() -> tuple[str, ...]:
    from optkit.model.kinds import ENGINE_SUFFIXES

    return tuple(ENGINE_SUFFIXES)


@pass_command("build-engine")
@input_argument("onnx_model", type=click.Path(path_type=Path, dir_okay=True))
@output_option("-o", "--output", required=True, type=click.Path(path_type=Path), kinds=_engine_kinds(),
               files=_with_sidecar,
              help="Engine file to write (e.g. model.engine); OUTPUT.json gets the build metadata.")
@click_options("optkit.passes.build_engine:BuildEngineConfig")
def build_engine(onnx_model: Path, output: Path, **params: object) -> None:
    """Build a TensorRT engine from an ONNX model (needs TensorRT and a CUDA GPU).

    \b
    Examples:
      optkit build-engine model.sim.onnx -o model.engine --batch 1:1:8
      optkit build-engine model.sim.onnx -o model.fp16.engine --precision fp16 --timing-cache trt.cache
      optkit build-engine model.sim.onnx -o model.int8.engine --precision int8 --calibration calibration_data/calib

    The engine only loads with the same TensorRT version and GPU; OUTPUT.json records both and
    optkit verify/bench check it before loading.
    """
    from optkit.passes.build_engine import source_artifact

    step, cfg = config_from_cli("build-engine", params)
    result = step(source_artifact(onnx_model), cfg, output)
    for line in result.messages:
        click.echo(line)
    if result.artifact is not None:
        click.echo(f"wrote {output} and {output.name}.json")
