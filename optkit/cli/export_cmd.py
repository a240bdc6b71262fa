from __future__ import annotations

import click

from optkit.cli.common import echo_lines, shape_option


@click.command(short_help="Export a PyTorch model to ONNX and write its reference outputs.")
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .onnx file.")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="state_dict to load into the model.")
@click.option("--input-shape", default="1,1,40,241", show_default=True, callback=shape_option,
              help="Input shape including the batch dimension.")
@click.option("--input-name", default="input_mfcc", show_default=True)
@click.option("--output-name", default="output_wvp", show_default=True)
@click.option("--opset", default=17, show_default=True, type=click.IntRange(15, 18), help="ONNX opset (15-18).")
@click.option("--dynamic-batch/--static-batch", default=True, show_default=True, help="Make the batch axis dynamic.")
@click.option("--reference-data", type=click.Path(exists=True),
              help="Directory of .npy samples or .npz (x[, y]) for the reference set.")
@click.option("--reference-samples", default=64, show_default=True, type=click.IntRange(1),
              help="Size of the seeded random reference set when --reference-data is not given.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random reference set.")
@click.option("--atol", default=1e-4, show_default=True, help="Allowed ONNX Runtime vs PyTorch difference.")
def export(model, output, weights, input_shape, input_name, output_name, opset, dynamic_batch,
           reference_data, reference_samples, seed, atol):
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

    from optkit.passes import get_pass

    p = get_pass("export")
    cfg = p.config_cls(model=model, weights=weights, input_shape=input_shape, input_name=input_name,
                       output_name=output_name, opset=opset, dynamic_batch=dynamic_batch,
                       reference_data=reference_data, reference_samples=reference_samples,
                       reference_seed=seed, atol=atol)
    result = p(None, cfg, Path(output))
    echo_lines(result.messages)
