"""``optkit loadtest``: ramp the load on a running service until requests time out or fail."""
from __future__ import annotations

import click

from optkit.cli.bench_cmd import _providers
from optkit.cli.common import echo_lines
from optkit.cli.declared import InputArgument, command, input_option, output_option


def _compared(target: str, params: dict) -> list:
    """TARGETS are artifacts (read) with --compare, else a URL (no file)."""
    from pathlib import Path

    return [Path(target)] if params.get("compare") else []


@command("loadtest")
@click.argument("targets", nargs=-1, cls=InputArgument, files=_compared, required=True, metavar="URL | --compare ARTIFACT...")
@click.option("--compare", is_flag=True,
              help="TARGETS are artifacts: serve each on 127.0.0.1 in turn (optkit serve) and ramp it.")
@click.option("--provider", "providers", default="cpu", callback=_providers, show_default=True,
              help="With --compare: runtime(s) to serve each ONNX artifact on, comma-separated.")
@click.option("--serve-arg", "serve_args", multiple=True, metavar="ARG",
              help="With --compare: extra argument for optkit serve (repeat), e.g. --serve-arg=--max-batch=8.")
@click.option("--variant", "variants", multiple=True, metavar="FLAGS",
              help="With --compare: a serving variant, optkit serve flags in one string (repeat; '' for none): "
                   "one row per artifact, provider and variant, e.g. --variant '' --variant '--max-batch 8' "
                   "--variant '--streams 2'.")
@click.option("--interleave", is_flag=True,
              help="With --compare: start every server first, then ramp them step by step in turn (fair "
                   "ratios on a machine whose load drifts).")
@click.option("--start", type=click.IntRange(min=1), default=1, show_default=True, help="First concurrency.")
@click.option("--step", type=click.IntRange(min=1), default=1, show_default=True, help="Concurrency increment.")
@click.option("--step-seconds", type=click.FloatRange(min=0.1, max=600), default=5.0, show_default=True,
              help="Duration of each step.")
@click.option("--max", "max_concurrency", type=click.IntRange(min=1, max=1024), default=32, show_default=True,
              help="Highest concurrency tried.")
@click.option("--timeout", type=click.FloatRange(min=0.01, max=600), default=10.0, show_default=True,
              help="Seconds after which a request counts as timed out.")
@input_option("--payload", type=click.Path(dir_okay=False), default=None,
              help="Request body: .npy, .json or audio (.wav/.flac/.ogg). Default: seeded random features "
                   "shaped like the served model's input (from GET /metadata).")
@click.option("--lengths", "lengths_text", default=None, metavar="N,N,...",
              help="A model with a dynamic time axis: draw each request's length from these (seeded), e.g. "
                   "100,241,600; each checked against the server's length range; latency also per length. With "
                   "--compare and --slo-p99 too: every row (and capacity step) gets the same seeded draw.")
@input_option("--lengths-file", type=click.Path(dir_okay=False), default=None,
              help="Like --lengths, one length a line (e.g. a real set's lengths: repeats weight the draw).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --lengths draw and bodies.")
@click.option("--keep-going", is_flag=True, help="Go on to --max after steps with failures (default: stop there).")
@click.option("--half-rate", is_flag=True,
              help="After the ramp, send at half the sustained rate (the median step's QPS; open loop) and "
                   "report p99 there.")
@click.option("--slo-p99", "slo_p99", type=float, default=None, metavar="MS",
              help="Capacity mode (with --target-rps): find the highest request rate whose p99 stays under MS "
                   "(open-loop fixed-rate steps, bisection, a confirming repeat) and the nodes that load needs. "
                   "Replaces the ramp.")
@click.option("--target-rps", "target_rps", type=float, default=None, metavar="N",
              help="Capacity mode: the load to carry; nodes needed = ceil(N / rate x (1 + headroom)).")
@click.option("--headroom", type=float, default=0.3, show_default=True,
              help="Capacity mode: spare share per node (0.3 = each node runs at most ~77 % of its rate).")
@click.option("--start-rate", type=float, default=None, metavar="RPS",
              help="Capacity mode: first rate tried (default: half the rate of one back-to-back user).")
@click.option("--max-rate", type=float, default=1000.0, show_default=True,
              help="Capacity mode: highest rate tried; a service passing there is reported as at least this.")
@click.option("--tolerance", type=float, default=0.05, show_default=True,
              help="Capacity mode: bisection stops when passing and failing rates are this close (relative).")
@click.option("--max-trials", type=int, default=12, show_default=True,
              help="Capacity mode: fixed-rate steps per row at most (bracket + bisection + confirmation).")
@output_option("--json", "json_path", type=click.Path(dir_okay=False), default=None, kinds=(".json",), help="Write results as JSON.")
@output_option("--html", "html_path", type=click.Path(dir_okay=False), default=None, kinds=(".html", ".htm"),
              help="Write a self-contained HTML page with the plots (latency and QPS vs load).")
@click.pass_context
def loadtest(ctx, targets, compare, providers, serve_args, variants, interleave, start, step, step_seconds,
             max_concurrency, timeout, payload, lengths_text, lengths_file, seed, keep_going, half_rate, slo_p99, target_rps, headroom, start_rate,
             max_rate, tolerance, max_trials, json_path, html_path) -> None:
    """Raise the load on URL (an optkit serve instance on this machine) step by step until requests
    time out or fail; report per step QPS, min/p50/p90/p99 latency, 503s, errors, dropped
    connections and timeouts, then the minimum latency and the saturation QPS.

    Only loopback addresses are load-tested (127.0.0.1, ::1, localhost). The generator runs in this
    process, the server in its own.

    \b
    Examples:
      optkit loadtest http://127.0.0.1:8000 --max 16 --step-seconds 5 --html load.html
      optkit loadtest http://127.0.0.1:8000 --payload sample.npy --half-rate --json load.json
      optkit loadtest http://127.0.0.1:8000 --lengths 100,241,600 --max 8 --json lengths.json
      optkit loadtest --compare model.onnx model.int8.onnx --provider cpu,openvino --json compare.json
      optkit loadtest --compare model.onnx model.int8.onnx --interleave --max 4 --step-seconds 10
      optkit loadtest --compare model.int8.onnx --variant '' --variant '--max-batch 8' --variant '--streams 2' --interleave

    \b
    Capacity (how many nodes a load needs at a latency):
      optkit loadtest http://127.0.0.1:8000 --slo-p99 50 --target-rps 2000 --json capacity.json
      optkit loadtest --compare model.onnx model.int8.onnx --provider cpu,openvino --slo-p99 50 --target-rps 2000
      optkit loadtest --compare dyn.onnx dyn.int8.onnx --lengths-file lengths.txt --slo-p99 50 --target-rps 500
    """
    from optkit.serve import loadtest as lt
    from optkit.common.fileio import check_output_path, write_json_atomically, write_text_atomically

    for path in (json_path, html_path):
        if path:
            check_output_path(path)  # fail before a long run, not after it
    if not compare and len(targets) != 1:
        raise click.UsageError("give one URL, or --compare with artifacts")
    if not compare and (serve_args or providers != ("cpu",) or interleave or variants):
        raise click.UsageError("--provider, --serve-arg, --variant and --interleave apply to --compare only")
    if compare:
        _prepare_compare(targets, variants)
        lt.check_serve_args(serve_args)
    else:
        lt.target_url(targets[0])  # one line for a URL that is not one, before anything else
    lengths = _lengths(lengths_text, lengths_file, payload)
    if slo_p99 is not None or target_rps is not None:
        _capacity(ctx, targets, compare, providers, serve_args, variants, step_seconds, timeout, payload,
                  dict(slo_p99_ms=slo_p99, target_rps=target_rps, headroom=headroom, start_rate=start_rate,
                       max_rate=max_rate, tolerance=tolerance, max_trials=max_trials), json_path, lengths, seed)
        return
    given = [n for n in ("headroom", "start_rate", "max_rate", "tolerance", "max_trials")
             if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} needs --slo-p99 and --target-rps")
    cfg = lt.RampConfig(start=start, step=step, max_concurrency=max_concurrency, step_seconds=step_seconds,
                        timeout=timeout, keep_going=keep_going, half_rate_check=half_rate)
    body = lt.payload_from_file(payload) if payload else None
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if compare:
        rows = lt.compare_services(targets, providers, cfg, serve_args=serve_args, payload=body, progress=say,
                          interleave=interleave, variants=variants or ("",), lengths=lengths, seed=seed)
        if not any(row.report for row in rows):  # nothing measured: a failure, not a table of "not run"
            from optkit.common.errors import InputError

            raise InputError(f"no server started: {'; '.join(f'{r.key}: {r.error}' for r in rows)}")
        lines = lt.compare_lines(rows)
        for row in rows:
            if row.report is not None:
                click.echo("")
                echo_lines([f"== {row.artifact} [{row.provider}]" + (f" {row.variant}" if row.variant else ""),
                            *row.report.table_lines()])
        click.echo("")
        echo_lines(lines)
        if json_path:
            write_json_atomically(json_path, lt.compare_json(rows))
            click.echo(f"wrote {json_path}")
        if html_path:
            page = lt.render_html([(f"{r.artifact} [{r.provider}]" + (f" {r.variant}" if r.variant else ""), r.report)
                                   for r in rows if r.report], lines)
            write_text_atomically(html_path, page)
            click.echo(f"wrote {html_path}")
        return
    report = lt.run_ramp(targets[0], cfg, body, progress=say, lengths=lengths, seed=seed)
    echo_lines(report.table_lines())
    if json_path:
        write_json_atomically(json_path, report.to_json())
        click.echo(f"wrote {json_path}")
    if html_path:
        write_text_atomically(html_path, lt.render_html([(report.url, report)]))
        click.echo(f"wrote {html_path}")


def _capacity(ctx, targets, compare, providers, serve_args, variants, step_seconds, timeout, payload, opts,
              json_path, lengths, seed) -> None:  # noqa: ANN001
    """--slo-p99 / --target-rps: the capacity search on the URL or on each --compare row."""
    from optkit.common.errors import InputError
    from optkit.common.fileio import write_json_atomically
    from optkit.serve import capacity as cap
    from optkit.serve import loadtest as lt

    if opts["slo_p99_ms"] is None or opts["target_rps"] is None:
        raise InputError("--slo-p99 and --target-rps go together (the latency to keep and the load to carry)")
    ramp_only = [n for n in ("start", "step", "max_concurrency", "keep_going", "half_rate", "interleave", "html_path")
                 if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
    if ramp_only:
        flag = {"max_concurrency": "--max", "html_path": "--html"}.get(ramp_only[0], "--" + ramp_only[0].replace("_", "-"))
        raise click.UsageError(f"{flag} belongs to the ramp; with --slo-p99 the load is open-loop fixed-rate steps")
    cfg = cap.CapacityConfig(step_seconds=step_seconds, timeout=timeout, **opts)
    body = lt.payload_from_file(payload) if payload else None
    say = lambda msg: click.echo(msg, err=True)  # noqa: E731
    if compare:
        machine = cap.machine_facts()
        rows = cap.capacity_services(targets, providers, cfg, serve_args=serve_args, payload=body, progress=say,
                                     variants=variants or ("",), lengths=lengths, seed=seed)
        if not any(r.search for r in rows):
            raise InputError(f"no server started: {'; '.join(f'{r.key}: {r.error}' for r in rows)}")
    else:
        machine = cap.machine_facts()
        search, server = cap.capacity_at_url(targets[0], cfg, body, say, lengths, seed)
        rows = [cap.CapacityRow(str(server.get("artifact", targets[0])), str(server.get("provider_requested", "?")),
                                search=search, server=server)]
    echo_lines(cap.table_lines(rows, cfg, machine))
    if json_path:
        write_json_atomically(json_path, cap.capacity_json(rows, cfg, machine))
        click.echo(f"wrote {json_path}")


def _lengths(text, path, payload) -> list[int] | None:  # noqa: ANN001
    """--lengths / --lengths-file (with --compare and the capacity mode too: the same seeded draw for
    every row and step), refused together or with --payload (one line each)."""
    from optkit.common.errors import InputError
    from optkit.serve import loadtest as lt

    if text is None and path is None:
        return None
    for given, what in ((text is not None and path is not None, "--lengths-file"), (payload, "--payload")):
        if given:
            raise InputError(f"--lengths/--lengths-file cannot go with {what} (the lengths make the request bodies)")
    return lt.parse_lengths(text) if text is not None else lt.read_lengths_file(path)


def _prepare_compare(targets, variants) -> None:  # noqa: ANN001
    """Before any server starts: the artifacts exist, the variants parse (one line each), and a
    SIGTERM stops the servers this command starts on the way out."""
    import signal

    from optkit.common.fileio import require_file
    from optkit.serve import loadtest as lt

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    for art in targets:
        require_file(art, "artifact")
    for text in variants:
        lt.parse_variant(text)
