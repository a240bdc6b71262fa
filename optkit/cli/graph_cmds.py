from __future__ import annotations

import click

from optkit.cli.common import echo_lines


def _run_pass(name: str, input_path: str, output: str, params: dict) -> None:
    from pathlib import Path

    from optkit.artifact import Artifact
    from optkit.fileio import require_file
    from optkit.onnx_utils import load_onnx
    from optkit.passes import get_pass

    src_path = require_file(input_path, "ONNX model")
    load_onnx(src_path, load_weights=False)  # clear error for a corrupt file before anything else
    p = get_pass(name)
    result = p(Artifact.from_file(src_path, kind="onnx"), p.config_cls(**params), Path(output))
    echo_lines(result.messages)
    click.echo(f"wrote {output}")


@click.command(short_help="Simplify an ONNX graph with onnxsim.")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--check-runs", default=3, show_default=True, type=click.IntRange(0),
              help="Random-input comparisons onnxsim performs.")
@click.option("--skip-fuse-bn", is_flag=True, help="Keep BatchNormalization separate from Conv.")
def simplify(input, output, check_runs, skip_fuse_bn):
    """Simplify INPUT with onnxsim, check the result, print node counts before and after.

    The result must load in ONNX Runtime and match INPUT on random data.

    \b
    Example:
      optkit simplify model.onnx -o model.sim.onnx
    """
    _run_pass("simplify", input, output, {"check_runs": check_runs, "skip_fuse_bn": skip_fuse_bn})


@click.command(short_help="Fold constants in an ONNX graph.")
@click.argument("input", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--keep-unused", is_flag=True, help="Keep nodes that no graph output needs.")
def fold(input, output, keep_unused):
    """Fold constant subgraphs of INPUT (onnxscript's optimizer) and check the result.

    The result must load in ONNX Runtime and match INPUT on random data.

    \b
    Example:
      optkit fold model.sim.onnx -o model.fold.onnx
    """
    _run_pass("fold", input, output, {"remove_unused": not keep_unused})
