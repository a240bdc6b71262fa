"""``optkit quantize``: int8 (static QDQ, calibrated) or fp16 conversion of an fp32 ONNX model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from optkit.cli.common import config_from_cli, echo_lines
from optkit.passes.config import config_class, flag_for, options

# every int8/fp16 option comes from the pass configs (optkit.passes.config): type, default, help, choices
from optkit.cli.options import click_options, pass_command
from optkit.cli.declared import input_argument, output_option
INT8 = "optkit.passes.quantize_int8:QuantizeInt8Config"
FP16 = "optkit.passes.quantize_fp16:QuantizeFp16Config"


def _cli_names(config: str) -> tuple[str, ...]:
    return tuple(o.name for o in options(config_class(config)) if o.cli)


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


def _flag(name: str) -> str:
    return flag_for((INT8, FP16), name)


@pass_command("quantize", context_settings={"max_content_width": 100})
@input_argument("model", type=click.Path(dir_okay=True, path_type=Path))
@output_option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .onnx file.",
               kinds=(".onnx",))
@click.option("--int8", "int8", is_flag=True, help="Static int8 QDQ quantisation (needs --calibration).")
@click.option("--fp16", "fp16", is_flag=True, help="fp16 weights and activations (fp32 inputs/outputs by default).")
@click_options(INT8, help_prefix="int8: ")
@click.option("--gate", "gate", multiple=True, metavar="int8.LIMIT=VALUE",
              help="int8: override a limit of the int8 gate the search checks, e.g. int8.min_agreement=0.99 "
                   "(repeatable).")
@click.option("--output-kind", "output_kind", multiple=True, metavar="NAME=KIND",
              help="int8: what output NAME is, instead of the kind detected from the fp32 model (repeatable): "
                   "probability, logit, embedding, frames or other; the gate judges each kind by what means "
                   "something for it.")
@click.option("--output-gate", "output_gate", multiple=True, metavar="NAME:int8.LIMIT=VALUE",
              help="int8: a limit of the gate the search checks for output NAME only, on top of --gate "
                   "(repeatable; 'off' disables it), e.g. emb:int8.min_sample_cosine=0.97.")
@click_options(FP16, help_prefix="fp16: ")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="int8: collect the calibration statistics in shards and run the search's trials in "
                   "parallel on Ray (no ADDRESS = a local Ray instance; 'auto', 'ray://HOST:PORT' or "
                   "'HOST:PORT' = a cluster); the statistics, ranges, trials kept and model are the same as "
                   "without it. Needs optkit[ray].")
@click.pass_context
def quantize(ctx: click.Context, model: Path, output: Path, int8: bool, fp16: bool, ray_address: str | None,
             **opts: Any) -> None:
    """Quantise an fp32 ONNX model to static int8 (QDQ) or convert it to fp16.

    int8 uses ONNX Runtime's static quantiser with per-channel int8 weights. Calibration
    statistics are collected once (cached as <stem>.calib.npz) and every range method is computed
    from them. Each trial is checked against the int8 gate of `optkit verify` on validation data
    (--reference, else a held-out quarter of the calibration data vs the fp32 model); when it
    fails, the search tries other range methods, input equalisation and keeping the nodes that
    add the most error in float, until a trial passes or --budget trials ran. The passing
    settings are saved as <stem>.search.json, so a re-run rebuilds the model without searching.
    No passing trial: exit 3, the best trial written as <stem>.failed.onnx (never at -o).
    fp16 uses onnxconverter-common and keeps in fp32 the nodes whose activations (on
    --check-data) exceed the fp16 range.

    \b
    Examples:
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calibration_data/calib
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calib/ --reference model.reference.npz
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calib/ --no-search --method percentile
      optkit quantize model.onnx -o model.trt-int8.onnx --int8 --calibration calib/ --target tensorrt
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration calib/ --method entropy \\
          --exclude-nodes /layer4/layer4.2/Add
      optkit quantize model.onnx -o model.fp16.onnx --fp16 --check-data calibration_data/calib
      optkit quantize model.onnx -o model.int8.onnx --int8 --calibration big-calib/ --ray auto
    """
    from optkit.model.artifact import Artifact
    from optkit.model.onnx_utils import load_onnx

    if int8 == fp16:
        raise click.UsageError("choose exactly one of --int8 or --fp16")
    int8_names, fp16_names = _cli_names(INT8), _cli_names(FP16)
    mode_opts, other_opts, mode = (int8_names, fp16_names, "--int8") if int8 else (fp16_names, int8_names, "--fp16")
    stray = [_flag(n) for n in other_opts if _given(ctx, n)] + (["--gate"] if fp16 and opts["gate"] else []) + (
        ["--output-kind"] if fp16 and opts["output_kind"] else []) + (
        ["--output-gate"] if fp16 and opts["output_gate"] else [])
    if stray:
        raise click.UsageError(f"{', '.join(stray)} cannot be used with {mode}")
    if int8 and opts["calibration"] is None:
        raise click.UsageError("--int8 needs --calibration DIR (calibration samples)")

    load_onnx(model, load_weights=False)  # a clear error for a missing/corrupt model, before any work
    src = Artifact.from_file(model, kind="onnx")
    params = {k: opts[k] for k in mode_opts}
    if int8:
        from optkit.verification.verify import parse_gate_option

        gates = parse_gate_option(list(opts["gate"]))
        other = sorted(set(gates) - {"int8"})
        if other:
            raise click.UsageError(f"--gate {other[0]}.*: quantize --int8 checks the int8 gate only")
        params["gates"] = gates.get("int8") or None
        from optkit.verification.output_kinds import parse_output_gate_option, parse_output_kind_option

        kinds = parse_output_kind_option(opts["output_kind"])
        per_output = parse_output_gate_option(opts["output_gate"])
        for name, g in per_output.items():
            other = sorted(set(g) - {"int8"})
            if other:
                raise click.UsageError(f"--output-gate {name}:{other[0]}.*: quantize --int8 checks the int8 gate only")
        from optkit.verification.verify import output_gates

        output_gates(per_output, None, "--output-gate {name}")  # unknown limits and bad values: one line now
        params["outputs"] = {name: {**({"kind": kinds[name]} if name in kinds else {}),
                                    **({"gates": per_output[name]} if name in per_output else {})}
                             for name in {**kinds, **per_output}} or None
    step, cfg = config_from_cli("quantize-int8" if int8 else "quantize-fp16", params)
    from optkit.passes.quantize_int8 import Int8SearchFailed

    from optkit.pipeline.distributed import executor_for

    from optkit.quantization.executor import calibration_on

    if ray_address and not int8:
        raise click.UsageError("--ray goes with --int8 (it shards the calibration statistics)")
    try:
        with executor_for(ray_address, echo=lambda s: click.echo(s, err=True)) as executor, \
                calibration_on(executor):
            result = step(src, cfg, output)
    except Int8SearchFailed as exc:  # the trials, then the one-line error (exit 3)
        echo_lines(exc.result.messages)
        raise
    echo_lines(result.messages)
