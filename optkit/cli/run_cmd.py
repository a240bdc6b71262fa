from __future__ import annotations

import click

from optkit.cli.common import ci_output_options
from optkit.cli.declared import baseline_files, command, input_argument, input_option, output_option


def _run_files(out_dir: str, params: dict) -> list:
    """What `optkit run` itself writes into -o (the steps' files are checked by the recipe)."""
    from pathlib import Path

    return [Path(out_dir) / n for n in ("manifest.json", "report.json", "report.html")]


@command(short_help="Run a recipe: the whole chain, cached, verified, with a manifest.")
@input_argument("recipe", required=False, type=click.Path(dir_okay=False))
@output_option("-o", "--output", "out_dir", files=_run_files, default="optkit-out", show_default=True, type=click.Path(file_okay=False, readable=False),
              help="Output directory (artifacts, manifest.json, report.json, report.html).")
@click.option("--force", is_flag=True, help="Re-run every step even when the cache is valid.")
@click.option("--no-verify", is_flag=True, help="Build the artifacts without verifying them.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Verify on Ray (overrides the recipe's `ray:`): no ADDRESS = a local Ray instance; 'auto', "
                   "'ray://HOST:PORT' or 'HOST:PORT' = an existing cluster. Needs optkit[ray].")
@input_option("--baseline", type=click.Path(), metavar="PREVIOUS", files=baseline_files,
              help="A previous release's report.json or output directory to compare with (overrides the "
                   "recipe's verify: baseline:); a regression exits 3.")
@ci_output_options
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="When another optkit run holds OUTPUT: wait for it to finish, or exit 1 at once.")
def run(recipe, out_dir, force, no_verify, ray_address, baseline, junit_path, summary_path, wait):
    """Execute RECIPE (default: recipes/voice_verification.yaml, the bundled voice model and data;
    outside a source checkout, the copy shipped in the package on a demo subset of that data).

    Steps whose pass, parameters, parent artifact, external inputs and tool versions are
    unchanged are reused from OUTPUT (manifest.json); a changed parameter re-runs that step and
    everything after it. Steps that cannot run here (e.g. build-engine without TensorRT) are
    reported as skipped with the reason. Exit 3 when a verification gate fails.

    A run holds an exclusive lock on OUTPUT (a second run into it exits 1, or waits with --wait),
    and first removes what a killed run left behind: partial files in OUTPUT and orphaned optkit
    work directories in the temp folder. A directory holding another recipe's artifacts is refused.

    \b
    Examples:
      optkit run                                  # default recipe into ./optkit-out
      optkit run recipes/voice_verification.yaml -o out/
      optkit run recipes/voice_verification.yaml -o out/ --wait   # queue behind a running one
      optkit run -o out/ --ray auto                 # verify on an existing Ray cluster
      optkit run -o release-2 --baseline release-1/ --junit junit.xml --summary summary.md
    """
    import time
    from pathlib import Path

    from optkit.cli.verify_cmd import failure_line, write_all
    from optkit.common.errors import VerificationFailed
    from optkit.common.fileio import check_output_path
    from optkit.pipeline.recipe import default_recipe_path, load_recipe, run_recipe
    from optkit.release.report import format_table

    t0 = time.perf_counter()
    path = Path(recipe) if recipe else default_recipe_path()
    r = load_recipe(path)
    if no_verify and (baseline or junit_path or summary_path):
        raise click.UsageError("--baseline, --junit and --summary need verification (drop --no-verify)")
    for out in (junit_path, summary_path):
        if out:
            check_output_path(out)  # fail before a long run, not after it
    click.echo(f"recipe {r.name} ({path}) -> {out_dir}")
    ray = dict(r.ray or {}, address=ray_address) if ray_address else None
    outcome = run_recipe(r, out_dir, force=force, echo=click.echo, verify=not no_verify, ray=ray, baseline=baseline,
                         wait=wait)
    ran = sum(o.status == "ran" for o in outcome.steps)
    cached = sum(o.status == "cached" for o in outcome.steps)
    skipped = [o for o in outcome.steps if o.status == "skipped"]
    click.echo("")
    click.echo(f"steps: {ran} ran, {cached} cached, {len(skipped)} skipped")
    for o in skipped:
        click.echo(f"  skipped {o.step}: {o.reason}")
    if outcome.report is not None:
        click.echo(format_table(outcome.report))
        j, h = outcome.report_paths
        click.echo(f"manifest: {Path(out_dir) / 'manifest.json'}; report: {j}, {h}")
        write_all(outcome.report, None, junit_path, summary_path)
    click.echo(f"done in {time.perf_counter() - t0:.1f} s")
    if outcome.report is not None and not outcome.report.passed:
        raise VerificationFailed(failure_line(outcome.report))
