from __future__ import annotations

import click

from optkit.cli.common import config_from_cli, echo_lines
from optkit.cli.declared import input_argument, output_option
from optkit.cli.options import click_options, pass_command


@pass_command(short_help="Export a PyTorch model to ONNX and write its reference outputs.")
@input_argument("model", files=lambda v, _: model_source_files(v))
@output_option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.",
               kinds=(".onnx",), files=lambda v, _: with_reference(v))
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


def model_source_files(spec: str) -> list:
    """MODEL's file when it is path/file.py:callable (a zoo name or a module reads no named file)."""
    from pathlib import Path

    file, _, attr = spec.rpartition(":")
    return [Path(file)] if attr and file.endswith(".py") else []


def with_reference(output: str) -> list:
    """export's -o writes the model and, beside it, its reference."""
    from pathlib import Path

    from optkit.verification.reference import reference_path_for

    return [Path(output), reference_path_for(output)]
