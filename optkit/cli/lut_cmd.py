from __future__ import annotations

import click

from optkit.cli.common import FINITE
from optkit.cli.declared import command, input_option, output_option, report_files


def _lut_files(output: str, params: dict) -> list:
    """-o FILE.json also writes FILE.html unless --html names the page; with --apply, the model."""
    from pathlib import Path

    page = [] if params.get("html_path") or params.get("apply_to") else [Path(output).with_suffix(".html")]
    return [Path(output), *page]


@command(short_help="Activation lookup tables: build, measure, plot, or put into an ONNX model.")
@click.option("--activation", required=True, metavar="NAME", help="sigmoid, tanh, relu, gelu or silu.")
@click.option("--x-min", required=True, metavar="X", help="First table key (a number or a fraction).")
@click.option("--x-max", required=True, metavar="X", help="End of the range the table covers.")
@click.option("--delta", required=True, metavar="D", help="Step between keys, e.g. 0.0625 or 1/16.")
@click.option("--interp", type=click.Choice(["nearest", "linear"]), default="linear", show_default=True,
              help="How a value between two keys is looked up.")
@output_option("-o", "--output", type=click.Path(dir_okay=False), kinds=(".json", ".onnx"), files=_lut_files,
              help="The table as JSON; with --apply, the rewritten ONNX model.")
@output_option("--html", "html_path", type=click.Path(dir_okay=False), kinds=(".html", ".htm"),
              help="Error-vs-delta page (default with -o FILE.json: FILE.html).")
@input_option("--apply", "apply_to", type=click.Path(dir_okay=False), metavar="MODEL.onnx",
              help="Replace MODEL's activation nodes by the table lookup and verify the result.")
@input_option("--reference", "reference_path", type=click.Path(dir_okay=False),
              help="With --apply: inputs to verify on (e.g. MODEL's .reference.npz); default: seeded random inputs.")
@click.option("--samples", default=256, show_default=True, type=click.IntRange(1),
              help="With --apply and no --reference: number of random N(0, 1) inputs.")
@click.option("--provider", default="cpu", show_default=True,
              help="With --apply: runtime(s) to verify on, comma-separated: cpu, openvino, cuda, tensorrt.")
@click.option("--gate", "gate_opts", multiple=True, metavar="PREC.LIMIT=VALUE",
              help="With --apply: override the gate (default for the rewritten fp32 model: max |Δ| <= 1e-3, "
                   "agreement >= 99.9%), e.g. fp32.max_abs=1e-4.")
@click.option("--threshold", default=0.5, show_default=True, type=FINITE, help="With --apply: decision threshold.")
@output_option("--report-dir", type=click.Path(file_okay=False), files=report_files, help="With --apply: write report.json and report.html here.")
def lut(activation, x_min, x_max, delta, interp, output, html_path, apply_to, reference_path, samples, provider,
        gate_opts, threshold, report_dir):
    """Quantise an activation function into a lookup table keyed from X-MIN to X-MAX in steps of DELTA.

    Prints the table's size and its max/mean absolute error against the exact function inside
    [X-MIN, X-MAX] and outside it, where the lookup saturates at the table's ends. -o writes the
    table as JSON ({"table": {"-8.0": y, "-7.9375": y, ...}} plus the parameters and errors) and an
    HTML page plotting the error against delta for both interpolations (inline SVG).

    With --apply MODEL.onnx -o OUT.onnx, every activation node of that kind in MODEL (Sigmoid, Tanh,
    Relu, Gelu or torch's erf GELU, Sigmoid*x for silu) becomes Clip/Sub/Div/Floor/Cast/Gather (plus
    Min/Mul/Add for linear interpolation): standard ONNX operators that ONNX Runtime and OpenVINO run
    and TensorRT's ONNX parser lists as supported. OUT is then verified against MODEL on the reference inputs, with the report and gates of optkit verify
    (exit 3 when a gate fails; OUT is kept so it can be inspected).

    \b
    Examples:
      optkit lut --activation sigmoid --x-min -8 --x-max 8 --delta 1/16 -o sigmoid.lut.json
      optkit lut --activation tanh --x-min -4 --x-max 4 --delta 0.01 --interp nearest
      optkit lut --activation sigmoid --x-min -8 --x-max 8 --delta 1/16 --apply xor.onnx -o xor.lut.onnx \\
          --reference xor.reference.npz --provider cpu,openvino
    """
    from pathlib import Path

    from optkit.lesson import lut as lutlib
    from optkit.cli.common import echo_lines
    from optkit.common.fileio import AtomicFiles, check_output_path

    spec = lutlib.LutSpec(activation.strip().lower(), lutlib.parse_number(x_min), lutlib.parse_number(x_max),
                          lutlib.parse_number(delta), interp)
    for p in (output, html_path):
        if p:
            check_output_path(p)
    if apply_to and not output:
        raise click.UsageError("--apply needs -o OUT.onnx")
    if output and (Path(output).suffix.lower() == ".onnx") != bool(apply_to):
        raise click.UsageError("-o is the table's .json file, or with --apply the rewritten .onnx model")
    if not apply_to and any((reference_path, report_dir, gate_opts)):
        raise click.UsageError("--reference, --report-dir and --gate only apply with --apply")
    table = lutlib.build_table(spec)
    metrics = lutlib.measure(spec, table)
    json_text = None
    if output and not apply_to:
        import json

        json_text = json.dumps(lutlib.to_json(spec, table, metrics), indent=1) + "\n"
    echo_lines(lutlib.summary_lines(metrics, spec, len(json_text.encode()) if json_text else None))
    if apply_to:
        from optkit.lesson.lut_apply import apply_and_verify

        report = apply_and_verify(spec, table, apply_to, output, reference_path=reference_path, samples=samples,
                                  providers=[p.strip() for p in provider.split(",") if p.strip()],
                                  gate_opts=gate_opts, threshold=threshold, report_dir=report_dir,
                                  echo=click.echo)
    if html_path is None and output and not apply_to:
        html_path = str(Path(output).with_suffix(".html"))
    with AtomicFiles() as files:  # the table and its page appear together or not at all
        if json_text is not None:
            files.write_text(output, json_text)
        if html_path:
            files.write_text(html_path, lutlib.render_html(spec, metrics, lutlib.delta_sweep(spec)))
    for path in (output if json_text is not None else None, html_path):
        if path:
            click.echo(f"wrote {path}")
    if apply_to and not report.passed:
        from optkit.common.errors import VerificationFailed

        raise VerificationFailed(f"the table lookup changed {Path(apply_to).name}'s outputs beyond the gate: "
                                 + "; ".join(f for r in report.results for f in r.failures))
