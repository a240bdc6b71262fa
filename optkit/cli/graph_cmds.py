from __future__ import annotations

import click

from optkit.cli.common import config_from_cli, echo_lines
from optkit.cli.declared import input_argument, output_option
from optkit.cli.options import click_options, pass_command


def _run_pass(name: str, input_path: str, output: str, params: dict) -> None:
    from pathlib import Path

    from optkit.model.artifact import Artifact
    from optkit.common.fileio import require_file
    from optkit.model.onnx_utils import load_onnx
    src_path = require_file(input_path, "ONNX model")
    load_onnx(src_path, load_weights=False)  # clear error for a corrupt file before anything else
    p, cfg = config_from_cli(name, params)
    result = p(Artifact.from_file(src_path, kind="onnx"), cfg, Path(output))
    echo_lines(result.messages)
    click.echo(f"wrote {output}")


def _rewrite_command(name: str, config_cls: str, short_help: str, doc: str) -> click.Command:
    """The command of a graph rewrite pass: INPUT -o OUTPUT plus the options of its config."""

    @pass_command(name, short_help=short_help, help=doc)
    @input_argument("input", type=click.Path(dir_okay=False))
    @output_option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.",
                   kinds=(".onnx",))
    @click_options(config_cls)
    def command(input, output, **params):
        _run_pass(name, input, output, params)

    return command


simplify = _rewrite_command("simplify", "optkit.passes.simplify:SimplifyConfig", "Simplify an ONNX graph with onnxsim.", """\
Simplify INPUT with onnxsim, check the result, print node counts before and after.

The result must load in ONNX Runtime and match INPUT on random data.

\b
Example:
  optkit simplify model.onnx -o model.sim.onnx
""")

fold = _rewrite_command("fold", "optkit.passes.fold:FoldConfig", "Fold constants in an ONNX graph.", """\
Fold constant subgraphs of INPUT (onnxscript's optimizer) and check the result.

The result must load in ONNX Runtime and match INPUT on random data.

\b
Example:
  optkit fold model.sim.onnx -o model.fold.onnx
""")
