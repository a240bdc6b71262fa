"""``optkit bench``: latency percentiles and throughput of artifacts, timed interleaved."""
from __future__ import annotations

import click

from optkit.cli.common import csv_option, echo_lines
from optkit.cli.declared import command, input_argument, input_option, output_option


def _providers(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from optkit.runtime.registry import PROVIDERS as PROVIDER_NAMES

    names = csv_option(ctx, param, value) or ("cpu",)
    bad = [n for n in names if n not in PROVIDER_NAMES]
    if bad:
        raise click.BadParameter(f"unknown provider {', '.join(bad)}; choose from {', '.join(PROVIDER_NAMES)}")
    if len(set(names)) != len(names):
        raise click.BadParameter(f"provider listed twice in {value!r}")
    return names


def _batches(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    items = csv_option(ctx, param, value)
    try:
        batches = tuple(int(v) for v in items)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a list of batch sizes like 1,8") from None
    if not batches or any(b < 1 for b in batches):
        raise click.BadParameter(f"{value!r} is not a list of positive batch sizes like 1,8")
    return tuple(dict.fromkeys(batches))


@command("bench")
@input_argument("artifacts", nargs=-1, required=True, metavar="ARTIFACT...")
@click.option("--provider", "providers", default="cpu", callback=_providers, show_default=True,
              help="Runtime(s) for ONNX artifacts, comma-separated: cpu (ONNX Runtime), openvino, "
                   "cuda, tensorrt (ONNX Runtime EPs). .engine files always run on TensorRT.")
@click.option("--batch", "batches", default="1", callback=_batches, show_default=True,
              help="Batch sizes, comma-separated, e.g. 1,8.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Intra-op threads for every runtime (default: the runtime's own choice).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True,
              help="Untimed interleaved rounds per batch size.")
@click.option("--iterations", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed interleaved rounds per batch size.")
@click.option("--idle-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Untimed sleep before each timed call, mimicking requests arriving one at a time.")
@input_option("--data", type=click.Path(dir_okay=True), default=None,
              help="Inputs from a directory of .npy samples or an .npz (x) instead of seeded random data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--lengths", "lengths_text", default=None, metavar="LIST|MIN:MAX:COUNT",
              help="Time each length of a model's dynamic time axis, e.g. 100,241,500,1000 or 100:1000:5 (5 "
                   "lengths from 100 to 1000), all interleaved; adds the slope of latency vs length. Each must lie "
                   "inside the model's declared --length-range.")
@click.option("--frames-per-second", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Frames per second of audio on the time axis (the slope's unit: ms per second of audio).")
@click.option("--ov-precision", type=click.Choice(["f32", "bf16", "f16", "default"]), default=None,
              help="OpenVINO INFERENCE_PRECISION_HINT [default: f32; 'default' = the plugin's choice, "
                   "bf16 on CPUs that have it].")
@click.option("--ov-hint", type=click.Choice(["LATENCY", "THROUGHPUT", "none"], case_sensitive=False), default=None,
              help="OpenVINO PERFORMANCE_HINT [default: LATENCY].")
@output_option("--json", "json_path", type=click.Path(dir_okay=False), default=None, kinds=(".json",),
              help="Also write the results, versions and CPU features to this JSON file.")
def bench(artifacts, providers, batches, threads, warmup, iterations, idle_ms, data, seed, lengths_text,
          frames_per_second, ov_precision, ov_hint, json_path) -> None:
    """Measure latency (min/p50/p90/p99/mean) and throughput of ARTIFACT... .

    All artifacts run in one process, interleaved round-robin (one call of each per round), so
    the speed-up column (relative to the first artifact) is fair on a busy machine.

    \b
    Examples:
      optkit bench model.onnx model.int8.onnx --batch 1,8 --threads 2
      optkit bench model.int8.onnx --provider cpu,openvino --idle-ms 20 --json bench.json
      optkit bench model.onnx model.int8.onnx --lengths 100,241,500,1000   # a dynamic time axis
    """
    from optkit.runtime import bench as bench_lib
    from optkit.common.fileio import check_output_path, write_json_atomically

    if (ov_precision or ov_hint) and "openvino" not in providers:
        raise click.UsageError("--ov-precision/--ov-hint apply to --provider openvino only")
    if json_path:
        check_output_path(json_path)  # fail before a long run, not after it
    from optkit.runtime.bench_lengths import parse_lengths

    lengths = parse_lengths(lengths_text) if lengths_text else ()
    cfg = bench_lib.BenchConfig(batches=batches, warmup=warmup, iterations=iterations, idle_ms=idle_ms,
                                seed=seed, data=data, lengths=lengths, frames_per_second=frames_per_second)
    ov_options = {}
    if ov_precision:
        ov_options["precision"] = ov_precision
    if ov_hint:
        ov_options["performance_hint"] = "none" if ov_hint.lower() == "none" else ov_hint.upper()
    items = bench_lib.make_bench_items(artifacts, providers, threads=threads, openvino_options=ov_options)
    report = bench_lib.benchmark(items, cfg, progress=lambda msg: click.echo(msg, err=True))
    from optkit.runtime.bench_render import table_lines

    echo_lines(table_lines(report))
    if json_path:
        write_json_atomically(json_path, report.to_json())
        click.echo(f"wrote {json_path}")
