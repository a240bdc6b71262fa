from __future__ import annotations

import click

from optkit.defaults import BATCH_SIZE, DECISION_THRESHOLD
from optkit.runners.registry import PROVIDERS


@click.command(short_help="Compare artifacts with the PyTorch reference; exit 3 if a gate fails.")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--reference", "reference_path", required=True, type=click.Path(dir_okay=False),
              help="<model>.reference.npz written by `optkit export`.")
@click.option("--provider", type=click.Choice(PROVIDERS), default="cpu",
              show_default=True, help="Runtime for .onnx artifacts (.engine files always use TensorRT).")
@click.option("--threshold", default=DECISION_THRESHOLD, show_default=True, type=float, help="Decision threshold.")
@click.option("--gate", "gate_opts", multiple=True, metavar="PREC.LIMIT=VALUE",
              help="Override a gate, e.g. int8.min_agreement=0.99 or fp32.max_abs=1e-3 (repeatable; "
                   "'off' disables a limit).")
@click.option("--report-dir", type=click.Path(file_okay=False, readable=False), help="Write report.json and report.html here.")
@click.option("--fp32-model", type=click.Path(dir_okay=False),
              help="fp32 model the int8 artifacts were made from (for per-layer error localisation).")
@click.option("--localize", type=click.Choice(["on-failure", "always", "never"]), default="on-failure",
              show_default=True, help="When to localise int8 error per layer.")
@click.option("--batch-size", default=BATCH_SIZE, show_default=True, type=click.IntRange(1))
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads of the runtime (with --ray: per worker, default 1).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Split the reference into shards run by Ray workers (one runner each): no ADDRESS = a "
                   "local Ray instance; 'auto', 'ray://HOST:PORT' or 'HOST:PORT' = an existing cluster. "
                   "The report is the same as without --ray. Needs optkit[ray].")
@click.option("--ray-workers", type=click.IntRange(1), help="Ray workers per artifact (default: the cluster's CPUs).")
@click.option("--shards", type=click.IntRange(1), help="Pieces the reference is split into (default: 4 per worker).")
def verify(artifacts, reference_path, provider, threshold, gate_opts, report_dir, fp32_model, localize,
           batch_size, threads, ray_address, ray_workers, shards):
    """Run every ARTIFACT on the reference inputs and compare with the PyTorch outputs.

    Per artifact and output: max/mean absolute error, max relative error, cosine similarity,
    SNR (dB), decision agreement at the threshold, and accuracy/EER/FAR/FRR when the reference
    has labels. Default gates: fp32 max|Δ| <= 1e-4; fp16 max|Δ| <= 0.01 and agreement >= 99.9%;
    int8 mean|Δ| <= 0.01, agreement >= 99.5% and accuracy within 0.5 points of PyTorch.

    \b
    Examples:
      optkit verify model.sim.onnx model.int8.onnx --reference model.reference.npz --report-dir report/
      optkit verify model.int8.onnx --reference model.reference.npz --gate int8.min_agreement=0.99
      optkit verify model.int8.onnx --reference big.reference.npz --ray auto   # on a Ray cluster

    Exit codes: 0 all gates pass, 3 a gate failed, 1 input error.
    """
    from pathlib import Path

    from optkit.errors import VerificationFailed
    from optkit.fileio import check_output_dir, ensure_output_dir, require_file
    from optkit.reference import load_reference
    from optkit.report import format_table, write_reports
    from optkit.distributed import executor_for
    from optkit.verify import merge_gates, parse_gate_option, verify_artifacts

    paths = [require_file(a, "artifact") for a in artifacts]
    if report_dir:
        check_output_dir(report_dir, "report directory")  # created only when the reports are written
    gates = merge_gates(parse_gate_option(gate_opts), where="--gate")
    reference = load_reference(reference_path)
    if fp32_model is None:
        from optkit.verify import precision_of

        fp32 = [p for p in paths if p.suffix == ".onnx" and precision_of(p) == "fp32"]
        fp32_model = fp32[0] if fp32 else None
    with executor_for(ray_address, ray_workers, shards) as executor:
        report = verify_artifacts(
            paths, reference, reference_path=str(reference_path), provider=provider, threshold=threshold,
            gates=gates, batch_size=batch_size, threads=threads, localize=localize,
            fp32_model=Path(fp32_model) if fp32_model else None,
            progress=lambda msg: click.echo(msg, err=True), executor=executor,
        )
    click.echo(format_table(report))
    if report_dir:
        j, h = write_reports(report, ensure_output_dir(report_dir, "report directory"))
        click.echo(f"wrote {j} and {h}")
    if not report.passed:
        failed = [Path(r.path).name for r in report.results if not r.passed]
        raise VerificationFailed(f"verification failed for {', '.join(failed)}")
