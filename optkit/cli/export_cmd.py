from __future__ import annotations

import click

from optkit.cli.common import config_from_cli, echo_lines
from optkit.cli.options import click_options, pass_command


@pass_command(short_help="Export a PyTorch model to ONNX and write its reference outputs.")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click_options("optkit.passes.export:ExportConfig")
def export(model, output, **params):
    """Export MODEL to ONNX with the TorchScript exporter, check it, and save the reference.

    MODEL is a built-in model (voice-resnet, voice-resnet-seed), pkg.module:callable or
    path/file.py:callable returning an nn.Module in eval mode. The model is checked with
    onnx.checker and compared with PyTorch in ONNX Runtime before success is reported; the
    reference inputs and PyTorch outputs go to OUTPUT's stem + .reference.npz.

    \b
    Examples:
      optkit export voice-resnet -o model.onnx --reference-data calibration_data/val.npz
      optkit export my_models.py:build -o m.onnx --input-shape 1,3,224,224 --input-name x --output-name y
    """
    from pathlib import Path

    p, cfg = config_from_cli("export", {**params, "model": model})
    result = p(None, cfg, Path(output))
    echo_lines(result.messages)
