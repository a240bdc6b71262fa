from __future__ import annotations

import click

from optkit.cli.bench_cmd import _providers
from optkit.cli.common import FINITE, ci_output_options
from optkit.cli.declared import (baseline_files, command, input_argument, input_option, output_option,
                                 report_files)
from optkit.common.defaults import BATCH_SIZE, DECISION_THRESHOLD
from optkit.runtime.registry import PROVIDERS


@command(short_help="Compare artifacts with the PyTorch reference; exit 3 if a gate fails.")
@input_argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@input_option("--reference", "reference_path", required=True, type=click.Path(dir_okay=False),
              help="<model>.reference.npz written by `optkit export`.")
@input_option("--reference-data", "reference_data", type=click.Path(file_okay=False),
              help="Where the data directory of a reference that links its inputs is (export --reference-inputs "
                   "link), when it is not where it was when the reference was made. Read shard by shard.")
@click.option("--provider", "providers", default="cpu", show_default=True, callback=_providers,
              help=f"Runtime(s) for .onnx artifacts, comma-separated: {', '.join(PROVIDERS)} (.engine files "
                   "always use TensorRT, verified once).")
@click.option("--threshold", default=DECISION_THRESHOLD, show_default=True, type=FINITE, help="Decision threshold.")
@click.option("--gate", "gate_opts", multiple=True, metavar="PREC.LIMIT=VALUE",
              help="Override a gate, e.g. int8.min_agreement=0.99 or fp32.max_abs=1e-3 (repeatable; "
                   "'off' disables a limit).")
@click.option("--output-kind", "output_kind", multiple=True, metavar="NAME=KIND",
              help="What output NAME is, instead of the detected kind (repeatable): probability, logit, "
                   "embedding, frames or other; each kind is judged by what means something for it.")
@click.option("--output-gate", "output_gate", multiple=True, metavar="NAME:PREC.LIMIT=VALUE",
              help="A gate limit for output NAME only, on top of --gate (repeatable; 'off' disables it), e.g. "
                   "emb:int8.min_sample_cosine=0.97: the recipe's verify: outputs: NAME: {gates: ...}.")
@output_option("--report-dir", type=click.Path(file_okay=False, readable=False), files=report_files,
               help="Write report.json and report.html here.")
@input_option("--fp32-model", type=click.Path(dir_okay=False),
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
@click.option("--bench", "bench", is_flag=True,
              help="Also time every artifact (min/p50, one interleaved run) and report the speed-up over fp32.")
@click.option("--bench-iterations", default=50, show_default=True, type=click.IntRange(1),
              help="Timed rounds of --bench (after 5 warm-up rounds).")
@input_option("--baseline", type=click.Path(), metavar="PREVIOUS", files=baseline_files,
              help="A previous release's report.json (or its output directory): compare each artifact with its "
                   "counterpart there and gate on regressions (exit 3).")
@click.option("--max-regression", "max_regression", multiple=True, metavar="LIMIT=VALUE",
              help="Regression limit vs --baseline (repeatable): decision_changes (default 0.2%), accuracy_drop "
                   "(default 0.2%, i.e. points), p50_latency / min_latency (opt-in, e.g. 10%); 'off' disables.")
@click.option("--export-to-repository", "export_to", type=click.Path(file_okay=False, readable=False),
              metavar="DIR/NAME", help="When verification passes, write the next version of model NAME in the model "
              "repository DIR (the artifact, its side files, manifest.json and this report), ready for `optkit serve "
              "--model-repository DIR`. One ARTIFACT only.")
@click.option("--loadtest-json", "loadtest_json", type=click.Path(dir_okay=False), metavar="FILE",
              help="A capacity result (optkit loadtest --slo-p99 MS --target-rps N --json FILE): the report "
                   "shows its rows (rate under the SLO, nodes needed, the machine), marking the ones whose "
                   "artifact is in this report.")
@ci_output_options
def verify(artifacts, reference_path, reference_data, providers, threshold, gate_opts, output_kind, output_gate,
           report_dir,
           fp32_model, localize,
           batch_size, threads, ray_address, ray_workers, shards, bench, bench_iterations, baseline, max_regression,
           loadtest_json, junit_path, summary_path, export_to):
    """Run every ARTIFACT on the reference inputs and compare with the PyTorch outputs.

    Per artifact and output: max/mean absolute error, max relative error, cosine similarity,
    SNR (dB), decision agreement at the threshold, and accuracy/EER/FAR/FRR when the reference
    has labels. Default gates: fp32 max|Δ| <= 1e-4; fp16 max|Δ| <= 0.01 and agreement >= 99.9%;
    int8 mean|Δ| <= 0.01, agreement >= 99.5% and accuracy within 0.5 points of PyTorch.

    Each output's kind is detected from the reference (one line each): a probability (decisions at
    the threshold), a logit (decisions at 0, |Δp| of its sigmoid), an embedding (per-sample cosine:
    worst >= 0.95 and mean >= 0.99 for int8, worst >= 0.999 for fp16), frame scores (per-frame
    decisions) or other; --output-kind NAME=KIND says it instead. --output-gate
    NAME:PREC.LIMIT=VALUE sets a limit for one output (e.g. emb:int8.min_sample_cosine=0.97).

    \b
    Examples:
      optkit verify model.sim.onnx model.int8.onnx --reference model.reference.npz --report-dir report/
      optkit verify model.int8.onnx --reference model.reference.npz --gate int8.min_agreement=0.99
      optkit verify model.fold.onnx model.int8.onnx --reference model.reference.npz --provider cpu,openvino
      optkit verify model.int8.onnx --reference big.reference.npz --ray auto   # on a Ray cluster
      optkit verify model.int8.onnx --reference big.reference.npz --reference-data /mnt/data/val_shards

    \b
    With --baseline, each artifact is compared with its counterpart in the previous release (same
    recipe step name, else same file name, else the only artifact of its precision on the same
    runtime) on the same reference set: decisions that changed, metric deltas, latency change.
    Default regression gate: <= 0.2 % of decisions changed, accuracy drop <= 0.2 points.
      optkit verify out/*.onnx --reference out/export.reference.npz --bench --report-dir rel2/ \\
          --baseline rel1/report.json --junit junit.xml --summary summary.md

    Exit codes: 0 all gates pass, 3 a gate failed or a regression, 1 input error.
    """
    from pathlib import Path

    from optkit.common.errors import VerificationFailed
    from optkit.common.fileio import check_output_dir, check_output_path, require_file
    from optkit.verification.reference import load_reference
    from optkit.release.report import format_table
    from optkit.pipeline.distributed import executor_for
    from optkit.release.regression import make_limits, parse_max_regression, prepare_baseline
    from optkit.release.view import release_view
    from optkit.verification.verify import merge_gates, parse_gate_option, verify_on_providers

    if max_regression and not baseline:
        raise click.UsageError("--max-regression needs --baseline")
    paths = [require_file(a, "artifact") for a in artifacts]
    if export_to and len(paths) != 1:
        raise click.UsageError("--export-to-repository takes one ARTIFACT (a version directory holds one)")
    if report_dir:
        check_output_dir(report_dir, "report directory")  # created only when the reports are written
    for out in (junit_path, summary_path):
        if out:
            check_output_path(out)  # fail before a long run, not after it
    capacity = None
    if loadtest_json:
        from optkit.release.capacity import load_capacity

        capacity = load_capacity(loadtest_json)  # a bad file fails before the run, not after it
    gate_overrides = parse_gate_option(gate_opts)
    gates = merge_gates(gate_overrides, where="--gate")
    from optkit.verification.output_kinds import (check_output_names, detect_kinds, parse_output_gate_option,
                                                  parse_output_kind_option)
    from optkit.verification.verify import output_gates

    overrides = parse_output_kind_option(output_kind)
    per_output = output_gates(parse_output_gate_option(output_gate), gate_overrides, "--output-gate {name}")
    reference = load_reference(reference_path, data=reference_data, mixed_length=True)
    limits = make_limits(parse_max_regression(max_regression), where="--max-regression")
    base = prepare_baseline(baseline, reference) if baseline else None
    if fp32_model is None:
        from optkit.verification.verify import precision_of

        fp32 = [p for p in paths if p.suffix == ".onnx" and precision_of(p) == "fp32"]
        fp32_model = fp32[0] if fp32 else None
    kinds = detect_kinds(reference.outputs, Path(fp32_model) if fp32_model else (paths[0] if paths else None), overrides)
    check_output_names(per_output, list(reference.outputs), "--output-gate {name}")
    with executor_for(ray_address, ray_workers, shards) as executor:  # a cluster that is not there: one line first
        for k in kinds.values():
            click.echo(k.line(threshold, reference.labels is not None), err=True)
        report = verify_on_providers(
            paths, reference, providers, reference_path=str(reference_path), threshold=threshold,
            gates=gates, batch_size=batch_size, threads=threads, localize=localize,
            fp32_model=Path(fp32_model) if fp32_model else None,
            progress=lambda p, msg: click.echo(msg if len(providers) == 1 else f"[{p}] {msg}", err=True),
            executor=executor, output_kinds=kinds, output_gates=per_output,
        )
    bench_cfg = None
    if bench:
        from optkit.runtime.bench import BenchConfig

        bench_cfg = BenchConfig(warmup=5, iterations=bench_iterations)
    release_view(report, reference, bench=bench_cfg, threads=threads, baseline=base, limits=limits,
                 progress=lambda msg: click.echo(msg, err=True))
    if capacity is not None:
        from optkit.release.capacity import attach

        shas = {f.get("sha256") for f in (report.release.get("facts") or {}).values()} - {None}
        report.release["capacity"] = attach(capacity, shas)
    click.echo(format_table(report))
    write_all(report, report_dir, junit_path, summary_path)
    if not report.passed:
        if export_to:
            click.echo(f"not exported to {export_to}: verification failed", err=True)
        raise VerificationFailed(failure_line(report))
    if export_to:
        from optkit.release.report import write_reports
        from optkit.serve.repository import export_version

        dest = export_version(export_to, paths[0], lambda d: write_reports(report, d))
        click.echo(f"exported {paths[0].name} as {dest}")


def write_all(report, report_dir, junit_path, summary_path) -> None:  # noqa: ANN001
    """report.json, report.html, the JUnit XML and the summary appear together or not at all (a full
    disk leaves none of them, nor a report directory this run created)."""
    from pathlib import Path

    from optkit.common.fileio import AtomicFiles, ensure_output_dir
    from optkit.release.report import write_reports

    made = report_dir is not None and not Path(report_dir).exists()
    wrote = []
    try:
        with AtomicFiles() as files:
            if report_dir:
                wrote += write_reports(report, ensure_output_dir(report_dir, "report directory"), files)
            wrote += write_ci_files(report, junit_path, summary_path, files)
    except BaseException:
        if made:
            import contextlib

            with contextlib.suppress(OSError):
                Path(report_dir).rmdir()  # only if empty
        raise
    for path in wrote:
        click.echo(f"wrote {path}")


def write_ci_files(report, junit_path, summary_path, files) -> list:  # noqa: ANN001
    from optkit.release.report_ci import write_junit, write_summary

    return ([write_junit(report, junit_path, files)] if junit_path else []) + \
        ([write_summary(report, summary_path, files)] if summary_path else [])


def failure_line(report) -> str:  # noqa: ANN001
    """The one line the CLI exits 3 with: which artifacts failed a gate, and any regression."""
    from pathlib import Path

    failed = list(dict.fromkeys(Path(r.path).name for r in report.results if not r.passed))
    parts = [f"verification failed for {', '.join(failed)}"] if failed else []
    reg = report.release.get("regression") or {}
    if reg and not reg.get("passed", True):
        bad = list(dict.fromkeys(p["artifact"] for p in reg["pairs"] if not p.get("passed", True)))
        parts.append(f"regression against the baseline for {', '.join(bad)}")
    return "; ".join(parts)
