from __future__ import annotations

import click

from optkit.cli.declared import command, input_argument, input_option, output_option


def _model_files(model: str, params: dict) -> list:
    from optkit.cli.export_cmd import model_source_files
    from pathlib import Path

    return [Path(model)] if model.lower().endswith(".onnx") else model_source_files(model)


@command(short_help="Dense weights as JSON (three layouts), and JSON back to ONNX.")
@input_argument("model", required=False, files=_model_files)
@click.option("--layout", type=click.Choice(["by-layer", "list", "augmented"]), default="by-layer",
              show_default=True, help="JSON layout (each has a JSON Schema in optkit/lesson/schemas/).")
@output_option("-o", "--output", type=click.Path(dir_okay=False), kinds=(".json", ".onnx"),
              help="Output file: .json for weights (default: print them), .onnx with --load.")
@input_option("--load", "load_path", type=click.Path(dir_okay=False),
              help="Read a weights file (validated against its schema) instead of a model; "
                   "-o M.onnx rebuilds the model, -o F.json rewrites it in --layout.")
@input_option("--weights", "state_dict", type=click.Path(exists=True, dir_okay=False),
              help="state_dict to load into a PyTorch MODEL.")
@click.option("--input-name", default="x", show_default=True, help="ONNX input name for a PyTorch MODEL.")
@click.option("--output-name", default="y", show_default=True, help="ONNX output name for a PyTorch MODEL.")
def weights(model, layout, output, load_path, state_dict, input_name, output_name):
    """Write the dense layers of MODEL as JSON, or rebuild an ONNX model from such a file.

    MODEL is an .onnx file or a PyTorch model (zoo name such as xor, pkg.module:callable,
    path/file.py:callable). Its graph must be a chain of dense layers: Gemm (or MatMul + Add),
    each optionally followed by Relu, Sigmoid or Tanh; the first other node is named in the error.

    Orientation: layer k computes h_k = act(h_{k-1}ᵀ W_k + b_k), so "weights" is in x out (row i
    = the weights from input i; PyTorch's nn.Linear.weight and Gemm's transB=1 matrix transposed)
    and "bias" is an out x 1 column [[b1], [b2]]. Layouts: by-layer {"Layer1": {"weights", "bias"},
    ...}; list [{"name", "weights", "bias"}, ...]; augmented {"Layer1": [W; bᵀ]} with the bias as
    the last row of an (in + 1) x out matrix. Rebuilt models compute bit for bit what the original did.

    \b
    Examples:
      optkit weights xor.onnx --layout by-layer -o xor.weights.json
      optkit weights xor --layout augmented
      optkit weights --load xor.weights.json -o xor.rebuilt.onnx
      optkit verify xor.onnx xor.rebuilt.onnx --reference xor.reference.npz
    """
    from pathlib import Path

    from optkit.lesson import weights_json as wj
    from optkit.common.fileio import check_output_path, write_text_atomically

    if bool(model) == bool(load_path):
        raise click.UsageError("give either MODEL (to write its weights) or --load FILE (to read a weights file)")
    if output:
        check_output_path(output)
    if load_path:
        if not output:
            raise click.UsageError("--load needs -o OUT.onnx (rebuild the model) or -o OUT.json (another layout)")
        net = wj.load(load_path)
        if Path(output).suffix.lower() == ".onnx":
            wj.save_onnx(net, output)
            click.echo(f"rebuilt {net.describe()} from {load_path} -> {output}")
            return
        doc = wj.to_json(net, layout)
        write_text_atomically(output, wj.dumps(doc))
        click.echo(f"wrote {net.describe()} to {output} (layout {layout})")
        return
    if output and Path(output).suffix.lower() == ".onnx":
        raise click.UsageError("-o names the JSON weights file; to rebuild a model use --load FILE -o M.onnx")
    net = wj.read_model(model, input_name=input_name, output_name=output_name, weights=state_dict)
    text = wj.dumps(wj.to_json(net, layout))
    if not output:
        click.echo(text, nl=False)
        return
    write_text_atomically(output, text)
    click.echo(f"wrote {net.describe()} to {output} (layout {layout}, schema {wj.schema_path(layout).name})")
