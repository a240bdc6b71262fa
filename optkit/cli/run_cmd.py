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
@click.option("--export-to-repository", "export_to", metavar="DIR/NAME[:STEP]",
              help="When verification passes, write the next version of model NAME in the model repository DIR: "
                   "the artifact of recipe step STEP (default: the last verified step), its side files, "
                   "manifest.json and this run's report, ready for `optkit serve --model-repository DIR`.")
@ci_output_options
@click.option("--wait/--no-wait", default=False, show_default=True,
              help="When another optkit run holds OUTPUT: wait for it to finish, or exit 1 at once.")
def run(recipe, out_dir, force, no_verify, ray_address, baseline, export_to, junit_path, summary_path, wait):
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
      optkit run -o out/ --export-to-repository models/voice        # the last verified step (int8)
      optkit run -o out/ --export-to-repository models/voice:fold   # a chosen step
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
    if no_verify and (baseline or junit_path or summary_path or export_to):
        raise click.UsageError("--baseline, --junit, --summary and --export-to-repository need verification "
                               "(drop --no-verify)")
    if export_to and not r.verify.get("enabled", True):
        raise click.UsageError("--export-to-repository needs verification; the recipe turns it off (verify: enabled)")
    export = parse_export_target(export_to, [s.name for s in r.steps]) if export_to else None
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
        if export:
            click.echo(f"not exported to {export_to}: verification failed", err=True)
        raise VerificationFailed(failure_line(outcome.report))
    if export:
        from optkit.release.report import write_reports
        from optkit.serve.repository import export_version

        model_dir, step = export
        artifact = exported_artifact(outcome, step)
        dest = export_version(model_dir, artifact, lambda d: write_reports(outcome.report, d))
        click.echo(f"exported {artifact.name} as {dest}")


def parse_export_target(text: str, steps: list[str]) -> tuple[str, str | None]:
    """``DIR/NAME[:STEP]`` -> (DIR/NAME, STEP or None), checked before the run: STEP is a step of
    the recipe, NAME a model name. A colon followed by a path separator is part of the path."""
    from pathlib import Path

    from optkit.common.errors import InputError
    from optkit.serve.repository import NAME_RE

    head, sep, tail = text.rpartition(":")
    model_dir, step = (head, tail) if sep and tail and not any(c in tail for c in "/\\") else (text, None)
    if step is not None and step not in steps:
        raise InputError(f"--export-to-repository: {step!r} is not a step of this recipe ({', '.join(steps)})")
    if not NAME_RE.match(Path(model_dir).name):
        raise InputError(f"--export-to-repository: {Path(model_dir).name!r} is not a model name (letters, digits, "
                         "'.', '_', '-'; 128 at most)")
    return model_dir, step


def exported_artifact(outcome, step: str | None):  # noqa: ANN001, ANN201
    """The artifact of ``step``, or of the last step in recipe order whose artifact was verified."""
    from pathlib import Path

    from optkit.common.errors import InputError

    verified = {Path(r.path).resolve() for r in outcome.report.results}
    done = [o for o in outcome.steps if o.artifact is not None and Path(o.artifact.path).resolve() in verified]
    if step is None:
        if not done:
            raise InputError("--export-to-repository: no step's artifact was verified")
        return Path(done[-1].artifact.path)
    chosen = next(o for o in outcome.steps if o.step == step)
    if chosen not in done:
        why = f"it was skipped: {chosen.reason}" if chosen.status == "skipped" else "it is not in verify.artifacts"
        raise InputError(f"--export-to-repository: step {step!r} has no verified artifact ({why})")
    return Path(chosen.artifact.path)
