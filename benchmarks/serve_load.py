"""The voice-verification service under load, per artifact and runtime, on this machine's CPU.

For each model (the bundled ``voice-resnet`` and the production-size ``voice-resnet-seed``):

1. prepare the artifacts with ``benchmarks/latency.py``'s ``prepare`` (cached in ``benchmarks/cache/``):
   fp32 export, int8 in the ``cpu`` form (ONNX Runtime) and in the ``openvino`` form (and the others
   that function makes);
2. time them in-process with ``optkit bench`` (interleaved, back-to-back calls, 2 threads): the
   minimum a server could reach;
3. serve them all with ``optkit serve`` (child processes on 127.0.0.1, 2 threads each; idle ones
   sleep) and load them from this process with ``optkit loadtest``'s ramp, interleaved step by step
   (only one server loaded at a time): minimum latency, saturation QPS, p99 at half the saturation
   rate (open loop); then one step far above saturation per server (all excess must be clean 503s);
4. on the bundled model, the same with micro-batching (``--max-batch 8``, no batch wait).

``--throughput`` (bundled model) compares the ways to more requests per second on the CPU, for ORT
fp32, ORT int8 and OpenVINO int8: none, micro-batching 8, 2 streams (``--streams 2``), 2 streams +
micro-batching 4; first in-process (samples/s of 1 or 2 threads calling one runner, batch 1/8/4,
interleaved rounds: the ceiling without HTTP), then served as above.

    python benchmarks/serve_load.py --quick                  # bundled model, short steps: checks the script
    nice -n 5 python benchmarks/serve_load.py --throughput --out benchmarks/results/serve_load/serve_throughput.json
    nice -n 10 python benchmarks/serve_load.py --out benchmarks/results/serve_load/serve_load.json

``--gpu`` measures the services on ONNX Runtime's CUDA execution provider instead (fp32 and fp16,
each with and without micro-batching, plus the fp32 CPU service on the same machine for the
reference owners' table); its artifacts are only exported and converted to fp16 (no int8, no
OpenVINO), so it needs PyTorch, onnxruntime-gpu and the serve extra on the GPU machine
(``benchmarks/serve_gpu.sh`` runs it there). ``--gpu-provider cpu`` runs the same plan on the CPU:
a dry run of the script where no GPU is present.

The load generator and the server share this machine's cores (as a sidecar load generator would);
ratios measured in one run are what to compare. Writes the JSON and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import latency as prep  # noqa: E402  (artifact preparation shared with the latency benchmark)

from optkit.runtime import bench as bench_lib  # noqa: E402
from optkit.serve import loadtest as lt  # noqa: E402
from optkit.runtime import sysinfo  # noqa: E402
from optkit.common.errors import OptkitError  # noqa: E402
from optkit.common.fileio import check_output_path, write_json_atomically, write_text_atomically  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402

THREADS = 2  # the CPU targets are for a 2-core machine; --gpu uses every usable core for its CPU service
# label, artifact file, runtime, extra serve arguments
CONFIGS = [
    ("ORT fp32", "fp32", "cpu", []),
    ("ORT int8 (cpu form)", "int8_cpu", "cpu", []),
    ("OpenVINO fp32", "fp32", "openvino", []),
    ("OpenVINO int8 (openvino form)", "int8_openvino", "openvino", []),
]
BATCHED = [
    ("ORT fp32, micro-batching 8", "fp32", "cpu", ["--max-batch", "8"]),
    ("OpenVINO int8, micro-batching 8", "int8_openvino", "openvino", ["--max-batch", "8"]),
]
# per model: ramp (start, step, max, step seconds), bench iterations, and the server's queue: deep
# enough that the ramp saturates the server before it sheds load, short enough that a full queue
# drains well inside the client's 10 s timeout (seed fp32: ~0.3 s per request here)
PLANS = {
    "voice-resnet": {"ramp": (1, 3, 22, 3.0), "iterations": 60, "queue": 32},
    "voice-resnet-seed": {"ramp": (1, 1, 4, 8.0), "iterations": 12, "queue": 6},
}
QUICK = {"ramp": (1, 4, 9, 1.0), "iterations": 10, "queue": 16}
OVERLOAD_EXTRA_USERS = 16  # the overload step: queue + this many users
MICRO_BATCH = ["--max-batch", "8", "--max-wait-ms", "2"]  # the GPU plan (measured so); the CPU plans wait 0
CPU_MICRO_BATCH = ["--max-batch", "8"]
# --gpu: on a GPU the per-request HTTP work is small beside a batch's gain, and a machine with a GPU
# has the cores for the load generator: deeper ramps, deeper queues
GPU_PLANS = {
    "voice-resnet": {"ramp": (1, 8, 49, 2.0), "iterations": 100, "queue": 64},
    "voice-resnet-seed": {"ramp": (1, 4, 25, 2.0), "iterations": 30, "queue": 32},
}
GPU_QUICK = {"ramp": (1, 4, 5, 1.0), "iterations": 5, "queue": 16}
# --throughput: the services (one set per base) and the in-process variants (streams, batch)
STREAMS = ["--streams", "2"]
THROUGHPUT_BASES = [("ORT fp32", "fp32", "cpu"), ("ORT int8 (cpu form)", "int8_cpu", "cpu"),
                    ("OpenVINO int8 (openvino form)", "int8_openvino", "openvino")]
THROUGHPUT_VARIANTS = [("", [], (1, 1)), (", micro-batching 8", CPU_MICRO_BATCH, (1, 8)), (", 2 streams", STREAMS, (2, 1)),
                       (", 2 streams + micro-batching 4", STREAMS + ["--max-batch", "4"], (2, 4))]
# --batch-wait: micro-batching with and without the first request waiting 2 ms for company
BATCH_WAIT_CONFIGS = [(f"{label}{suffix}", art, provider, extra)
                      for label, art, provider in THROUGHPUT_BASES[1:]
                      for suffix, extra in (("", []), (", micro-batching 8, wait 2 ms", MICRO_BATCH),
                                            (", micro-batching 8, wait 0", CPU_MICRO_BATCH))]
BATCH_WAIT_PLAN = {"ramp": (1, 3, 16, 3.0), "iterations": 20, "queue": 32}
THROUGHPUT_ROUNDS, THROUGHPUT_SECONDS = 5, 2.0  # in-process: interleaved rounds of this many seconds each


GPU_LABELS = ("ORT CUDA ", "ORT cpu ")  # the --gpu plan's services (cpu: its dry run)


def gpu_configs(provider: str) -> list[tuple]:
    """The GPU table: fp32 and fp16 on ``provider`` (cuda), with and without micro-batching, and
    the fp32 CPU service on the same machine (the reference owners compared exactly these)."""
    name = "ORT CUDA" if provider == "cuda" else f"ORT {provider}"
    return [
        (f"{name} fp32", "fp32", provider, []),
        (f"{name} fp32, micro-batching 8", "fp32", provider, MICRO_BATCH),
        (f"{name} fp16", "fp16", provider, []),
        (f"{name} fp16, micro-batching 8", "fp16", provider, MICRO_BATCH),
        ("ORT CPU fp32 (all cores)", "fp32", "cpu", []),
    ]


def throughput_configs(quick: bool) -> list[tuple]:
    bases = THROUGHPUT_BASES[:1] if quick else THROUGHPUT_BASES
    return [(f"{label}{suffix}", art, provider, extra) for label, art, provider in bases
            for suffix, extra, _ in THROUGHPUT_VARIANTS]


def inprocess_throughput(model_dir: Path, rounds: int, seconds: float, quick: bool,
                         threads: int = THREADS) -> dict[str, dict[str, Any]]:
    """Samples/s of ``streams`` Python threads calling one runner (made with that many streams and
    ``threads`` threads in all) back to back at a fixed batch: what the runtime gives before any HTTP.
    Every variant is timed once per round, rounds interleaved; the median round is reported."""
    import statistics
    import threading

    import numpy as np

    from optkit.runtime.registry import make_runner

    bases = THROUGHPUT_BASES[:1] if quick else THROUGHPUT_BASES
    runners, cases = {}, []
    for label, art, provider in bases:
        for suffix, _, (streams, batch) in THROUGHPUT_VARIANTS:
            key = (art, provider, streams)
            if key not in runners:
                extra = {"streams": streams} if streams > 1 else {}
                runners[key] = make_runner(model_dir / f"{art}.onnx", provider=provider, threads=threads, **extra)
                runners[key].__enter__()
            cases.append((f"{label}{suffix}", key, streams, batch))

    def rate(runner: Any, streams: int, batch: int) -> float:
        spec = runner.inputs[0]
        x = np.random.default_rng(0).standard_normal((batch, *spec.shape[1:])).astype(spec.dtype)
        counts = [0] * streams
        stop = time.perf_counter() + seconds

        def loop(i: int) -> None:
            while time.perf_counter() < stop:
                runner.infer({spec.name: x})
                counts[i] += 1

        workers = [threading.Thread(target=loop, args=(i,)) for i in range(streams)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(counts) * batch / (time.perf_counter() - t0)

    try:
        for label, key, streams, batch in cases:  # warm-up: OpenVINO compiles per shape
            spec = runners[key].inputs[0]
            for _ in range(3):
                runners[key].infer({spec.name: np.zeros((batch, *spec.shape[1:]), spec.dtype)})
        samples: dict[str, list[float]] = {c[0]: [] for c in cases}
        for r in range(rounds):
            for label, key, streams, batch in cases:
                samples[label].append(rate(runners[key], streams, batch))
            log(f"  in-process round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in samples.items()))
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)
    return {label: {"streams": key[2], "batch": batch, "samples_per_s": round(statistics.median(samples[label]), 1),
                    "rounds": [round(v, 1) for v in samples[label]]}
            for label, key, _, batch in cases}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_minima(model_dir: Path, configs: list[tuple], iterations: int,
                 threads: int = THREADS) -> dict[str, dict[str, float]]:
    """In-process latency of every (artifact, runtime), interleaved, back-to-back calls."""
    from optkit.runtime.registry import make_runner

    items, seen = [], set()
    for _, art, provider, _ in configs:
        key = f"{art} [{provider}]"
        if key in seen:
            continue
        seen.add(key)
        items.append(bench_lib.BenchItem(key, make_runner(model_dir / f"{art}.onnx", provider=provider,
                                                          threads=threads), model_dir / f"{art}.onnx"))
    cfg = bench_lib.BenchConfig(batches=(1,), warmup=3, iterations=iterations)
    report = bench_lib.benchmark(items, cfg, progress=log)
    return {r.label: {"min_ms": r.stats.min_ms, "p50_ms": r.stats.p50_ms} for r in report.results}


def overload_step(url: str, concurrency: int, seconds: float, timeout: float) -> lt.StepResult:
    meta = lt.fetch_metadata(url)
    return asyncio.run(lt.closed_loop_step(f"{url}/verify", lt.payload_for_server(meta), concurrency, seconds, timeout))


def serve_and_load_all(model_dir: Path, configs: list[tuple], plan: dict[str, Any],
                       env: dict[str, Any], threads: int = THREADS) -> list[dict[str, Any]]:
    """Start every service of this model at once (idle servers sleep), ramp them interleaved step by
    step, then push each one far past saturation in turn."""
    import contextlib

    start, step, top, seconds = plan["ramp"]
    queue = plan["queue"]
    cfg = lt.RampConfig(start=start, step=step, max_concurrency=top, step_seconds=seconds, timeout=10.0,
                        half_rate_check=True)
    servers: dict[str, ServerProcess] = {}
    runs = []
    with contextlib.ExitStack() as stack:
        for label, art, provider, extra in configs:
            args = ["--threads", str(threads), "--max-queue", str(queue), "--no-audio", *extra]
            log(f"{label}: starting optkit serve {art}.onnx --provider {provider} {' '.join(args)}")
            servers[label] = stack.enter_context(ServerProcess(model_dir / f"{art}.onnx", provider, args,
                                                               startup_timeout=600))
            runs.append({"label": label, "artifact": art, "provider": provider, "serve_args": args})
        reports = lt.run_interleaved_ramps({label: srv.url for label, srv in servers.items()}, cfg,
                                           progress=lambda m: log(f"  {m}"), environment=env)
        over_c = queue + OVERLOAD_EXTRA_USERS
        for run in runs:
            url = servers[run["label"]].url
            log(f"  {run['label']}: overload, {over_c} users for {seconds:g} s")
            over = overload_step(url, over_c, seconds, 10.0)
            log(f"  {run['label']}: overload: {over.ok} answered, {over.shed} shed (503), statuses "
                f"{over.status_counts}, dropped {over.dropped}, timeouts {over.timeouts}")
            run.update(report=reports[run["label"]], overload=over)
    return runs


def run_model(model: str, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    if args.gpu:
        return run_model_gpu(model, args, env)
    plan = QUICK if args.quick else PLANS[model]
    work = Path(args.work_dir)
    calib, _ = prep.calibration_source(None, 64)
    d = work / model
    prep.prepare(model, work, calib, 64)  # the latency benchmark's artifacts, through optkit's recipe cache
    configs = CONFIGS + (BATCHED if model == "voice-resnet" else [])
    if args.quick:
        configs = [CONFIGS[0], CONFIGS[1], BATCHED[0]]
    inprocess = None
    if args.batch_wait:
        configs, plan = BATCH_WAIT_CONFIGS, (QUICK if args.quick else BATCH_WAIT_PLAN)
    if args.throughput:
        configs = throughput_configs(args.quick)
        log(f"{model}: in-process throughput, {THROUGHPUT_ROUNDS} interleaved rounds")
        inprocess = inprocess_throughput(d, 2 if args.quick else THROUGHPUT_ROUNDS,
                                         0.5 if args.quick else THROUGHPUT_SECONDS, args.quick)
    log(f"{model}: in-process bench")
    minima = bench_minima(d, configs, plan["iterations"])
    runs = serve_and_load_all(d, configs, plan, env)
    return {"model": model, "bench": minima, "runs": runs, "plan": plan,
            **({"inprocess_throughput": inprocess} if inprocess else {})}


def run_model_gpu(model: str, args: argparse.Namespace, env: dict[str, Any]) -> dict[str, Any]:
    plan = GPU_QUICK if args.quick else GPU_PLANS[model]
    d = Path(args.work_dir) / model
    # fp32 (dynamic batch) and fp16 only: no calibration data, int8 or OpenVINO on the GPU machine
    prep.prepare(model, Path(args.work_dir), None, 0, int8_targets=())
    configs = gpu_configs(args.gpu_provider)
    if args.no_cpu_service:
        configs = [c for c in configs if c[2] != "cpu" or args.gpu_provider == "cpu"]
    threads = sysinfo.usable_cpus()
    log(f"{model}: in-process bench ({threads} threads for the CPU runtime)")
    minima = bench_minima(d, configs, plan["iterations"], threads)
    runs = serve_and_load_all(d, configs, plan, env, threads)
    return {"model": model, "bench": minima, "runs": runs, "plan": plan, "threads": threads}


def summarise(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in result["runs"]:
        rep: lt.LoadReport = run["report"]
        over: lt.StepResult = run["overload"]
        bench = result["bench"][f"{run['artifact']} [{run['provider']}]"]
        sm = rep.summary()
        t = rep.totals()
        rows.append({
            "label": run["label"], "artifact": f"{run['artifact']}.onnx", "provider": run["provider"],
            "provider_in_use": rep.server.get("provider_in_use"), "precision": rep.server.get("precision"),
            "bench_min_ms": round(bench["min_ms"], 3), "served_min_ms": sm["min_latency_ms"],
            "served_minus_bench_ms": round(sm["min_latency_ms"] - bench["min_ms"], 3),
            "saturation_qps": sm["saturation_qps"], "saturation_concurrency": sm["saturation_concurrency"],
            "sustained_qps": sm["sustained_qps"],
            "half_rate_answered_shed": [(sm.get("half_rate") or {}).get("answered"), (sm.get("half_rate") or {}).get("shed")],
            "half_rate_p99_ms": (sm.get("half_rate") or {}).get("p99_ms"),
            "half_rate_p99_over_min": (sm.get("half_rate") or {}).get("p99_over_min"),
            "half_rate_server_p99_ms": (sm.get("half_rate") or {}).get("server_p99_ms"),
            "ramp_stopped": sm["stopped_because"],
            "overload": {"concurrency": over.concurrency, "ok": over.ok, "shed_503": over.shed,
                         "statuses": over.status_counts, "dropped": over.dropped, "timeouts": over.timeouts},
            "status_500": t["status_500"] + int(over.status_counts.get("500", 0)),
            "other_errors": t["errors"] + over.errors, "dropped": t["dropped"] + over.dropped,
            "timeouts": t["timeouts"] + over.timeouts,
            "steps": [lt._step_json(s) for s in rep.steps],
            "half_rate_step": lt._step_json(rep.half_rate) if rep.half_rate else None,
        })
    return rows


def targets(model: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {r["label"]: r for r in rows}
    out = []

    def ratio(a: str, b: str, goal: float, what: str) -> None:
        if a in by and b in by and by[b]["saturation_qps"]:
            v = by[a]["saturation_qps"] / by[b]["saturation_qps"]
            out.append({"target": what, "value": round(v, 2), "goal": f">= {goal}x", "met": v >= goal})

    gpu_table = any(r["label"].startswith(GPU_LABELS) for r in rows)
    throughput_table = any(", 2 streams" in r["label"] for r in rows)
    if throughput_table:  # every variant against its base (streams: what the CPU offers besides batching)
        for label, _, _ in THROUGHPUT_BASES:
            if label not in by:
                continue
            ratio(f"{label}, micro-batching 8", label, 1.5, f"bundled: micro-batching / none, {label} saturation QPS")
            for suffix in (", 2 streams", ", 2 streams + micro-batching 4"):
                if f"{label}{suffix}" in by and by[label]["saturation_qps"]:
                    v = by[f"{label}{suffix}"]["saturation_qps"] / by[label]["saturation_qps"]
                    out.append({"target": f"bundled: {suffix[2:]} / none, {label} saturation QPS (no target)",
                                "value": round(v, 2), "goal": "-", "met": None})
    elif gpu_table:  # every micro-batched service against its unbatched twin (no int8, no OpenVINO here)
        for r in rows:
            if r["label"].endswith(", micro-batching 8"):
                base = r["label"].removesuffix(", micro-batching 8")
                ratio(r["label"], base, 1.5, f"{model}: micro-batching / none, {base} saturation QPS")
    elif model == "voice-resnet-seed":
        ratio("ORT int8 (cpu form)", "ORT fp32", 2.5, "seed int8 / fp32 saturation QPS, ONNX Runtime")
        ratio("OpenVINO int8 (openvino form)", "OpenVINO fp32", 2.5, "seed int8 / fp32 saturation QPS, OpenVINO")
    else:
        ratio("ORT fp32, micro-batching 8", "ORT fp32", 1.5, "bundled: micro-batching / none, ORT fp32 saturation QPS")
        ratio("OpenVINO int8, micro-batching 8", "OpenVINO int8 (openvino form)", 1.5,
              "bundled: micro-batching / none, OpenVINO int8 saturation QPS")
        for r in rows:  # --batch-wait
            if ", micro-batching 8, wait" in r["label"]:
                base = r["label"][:r["label"].index(", micro-batching")]
                ratio(r["label"], base, 1.5, f"bundled: {r['label'][len(base) + 2:]} / none, {base} saturation QPS")
    for r in rows:
        # micro-batching (the batch wait) and streams (fewer threads per inference) trade latency for
        # throughput: no latency targets for them
        batched = "batching" in r["label"] or "streams" in r["label"]
        if not batched:
            out.append({"target": f"{r['label']}: served min - bench min", "value": r["served_minus_bench_ms"],
                        "goal": "<= 3 ms", "met": r["served_minus_bench_ms"] <= 3.0})
        if r["half_rate_p99_over_min"] is not None and not batched:
            out.append({"target": f"{r['label']}: p99 at half the sustained rate / min", "value": r["half_rate_p99_over_min"],
                        "goal": "<= 2x", "met": r["half_rate_p99_over_min"] <= 2.0})
        bad = r["status_500"] + r["dropped"] + r["timeouts"] + r["other_errors"]
        out.append({"target": f"{r['label']}: 500s + dropped + hung + other errors (overload included)",
                    "value": bad, "goal": "0", "met": bad == 0})
    return out


def markdown(results: list[dict[str, Any]], env: dict[str, Any], argv: list[str], load: dict[str, Any]) -> str:
    cpu = env.get("cpu", {})
    gpu = any("threads" in r for r in results)
    threads = next((r["threads"] for r in results if "threads" in r), THREADS)
    lines = [
        "# The voice-verification service under load (" + ("GPU: " + str(env.get("gpu", "?")) if gpu else "CPU") + ")", "",
        f"`python benchmarks/serve_load.py {' '.join(argv)}`, {env.get('created', '')}.", "",
        f"- CPU: {cpu.get('model', '?')}, {env.get('usable_cpus', '?')} usable CPUs; int8: "
        f"{cpu.get('int8_acceleration', '?')}; OpenVINO bf16 by default: {cpu.get('openvino_bf16_by_default')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env.get('libraries', {}).items() if v)}",
        f"- load average (1/5/15 min) before: {load.get('before')}, after: {load.get('after')} (this benchmark's own "
        "server and generator load 2 cores to about 2; more means other jobs shared the machine): compare ratios "
        "within this run, not absolute numbers.",
        f"- server: `optkit serve --threads {threads} --max-queue QUEUE --no-audio` in its own process on "
        f"127.0.0.1; load generator: this process (aiohttp), on the same {env.get('usable_cpus', '?')} cores.",
        f"- bench: `optkit bench` in-process minimum, batch 1, back-to-back calls, {threads} CPU threads, interleaved.",
        "- ramp: closed loop, concurrency steps, all services of a model interleaved step by step; half rate: open loop (evenly spaced arrivals) at half the "
        f"sustained QPS (the median step; the best step on this shared machine is often a lucky outlier); overload: QUEUE + {OVERLOAD_EXTRA_USERS} users for one step.", "",
    ]
    for res in results:
        start, step, top, seconds = res["plan"]["ramp"]
        lines += [f"## {res['model']}", "",
                  f"Ramp: concurrency {start} to {top} in steps of {step}, {seconds:g} s each; QUEUE = "
                  f"{res['plan']['queue']}; bench: {res['plan']['iterations']} interleaved rounds.", "",
                  "| service | bench min ms | served min ms | Δ ms | saturation QPS | at c | sustained QPS | "
                  "p99 @ half sustained ms | p99/min | server-side p99 @ half ms | overload: ok / 503 | 500s | "
                  "dropped | timeouts |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["rows"]:
            o = r["overload"]
            lines.append(f"| {r['label']} | {r['bench_min_ms']:.2f} | {r['served_min_ms']:.2f} | "
                         f"{r['served_minus_bench_ms']:+.2f} | {r['saturation_qps']:.2f} | {r['saturation_concurrency']} | "
                         f"{r['sustained_qps']:.2f} | "
                         f"{r['half_rate_p99_ms']} | {r['half_rate_p99_over_min']} | "
                         f"{r.get('half_rate_server_p99_ms')} | {o['ok']} / {o['shed_503']} | "
                         f"{r['status_500']} | {r['dropped']} | {r['timeouts']} |")
        lines += ["", "| target | value | goal | met |", "|---|---:|---|---|"]
        lines += [f"| {t['target']} | {t['value']} | {t['goal']} | "
                  f"{'-' if t['met'] is None else 'yes' if t['met'] else '**no**'} |" for t in res["targets"]]
        if res.get("inprocess_throughput"):
            lines += ["", f"In-process, no HTTP ({THREADS} threads per runner in all; samples/s, median of "
                      "interleaved rounds; x: against the same runtime's 1 stream, batch 1):", "",
                      "| variant | streams | batch | samples/s | x | rounds |", "|---|---:|---:|---:|---:|---|"]
            ip = res["inprocess_throughput"]
            for label, v in ip.items():
                base = next((ip[b]["samples_per_s"] for b, _, _ in THROUGHPUT_BASES if label.startswith(b)), None)
                x = f"{v['samples_per_s'] / base:.2f}x" if base else "-"
                lines.append(f"| {label} | {v['streams']} | {v['batch']} | {v['samples_per_s']:.0f} | {x} | "
                             f"{', '.join(f'{r:.0f}' for r in v['rounds'])} |")
        lines.append("")
    return "\n".join(lines)


def gpu_name() -> str:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"none ({type(exc).__name__})"
    return out.stdout.strip() or f"none (nvidia-smi exit {out.returncode})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", choices=list(PLANS), help="repeatable; default both (quick: bundled)")
    p.add_argument("--out", default=None, help="JSON output (a .md table is written beside it)")
    p.add_argument("--work-dir", default=str(HERE / "cache"))
    p.add_argument("--quick", action="store_true", help="bundled model, 3 services, 1 s steps: checks the script")
    p.add_argument("--gpu", action="store_true", help="the services on ONNX Runtime's CUDA provider (fp32, fp16, "
                   "with and without micro-batching) and the fp32 CPU service beside them")
    p.add_argument("--gpu-provider", default="cuda", choices=["cuda", "cpu"],
                   help="with --gpu: cpu runs the GPU plan on the CPU (a dry run of the script)")
    p.add_argument("--no-cpu-service", action="store_true", help="with --gpu: leave out the CPU service")
    p.add_argument("--batch-wait", action="store_true", help="bundled model: ORT int8 and OpenVINO int8 without "
                   "micro-batching, with it and a 2 ms batch wait, with it and no wait")
    p.add_argument("--throughput", action="store_true", help="bundled model: none vs micro-batching vs 2 streams vs "
                   "both, for ORT fp32, ORT int8 and OpenVINO int8, in-process and served")
    args = p.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds the ServerProcess contexts: no server is left running

    signal.signal(signal.SIGTERM, interrupted)
    if (args.throughput or args.batch_wait) and args.gpu:
        p.error("--throughput and --batch-wait are CPU plans; leave out --gpu")
    if args.throughput and args.batch_wait:
        p.error("choose one of --throughput and --batch-wait")
    models = args.model or (["voice-resnet"] if args.quick or args.throughput or args.batch_wait else list(PLANS))
    out = Path(args.out or HERE / "results" / ("serve_gpu" if args.gpu else "serve_load") / (("serve_load_gpu" if args.gpu else "serve_throughput"
                                                if args.throughput else "serve_batch_wait" if args.batch_wait
                                                else "serve_load")
                                               + ("_quick" if args.quick else "") + ".json"))
    try:
        check_output_path(out)
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / ".gitignore").exists():
            (work / ".gitignore").write_text("*\n")
        env = sysinfo.collect()
        if args.gpu:
            env["gpu"] = gpu_name()
        env["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        env["nice"] = os.nice(0)
        load = {"before": [round(v, 2) for v in os.getloadavg()]}
        results = []
        for model in models:
            res = run_model(model, args, env)
            res["rows"] = summarise(res)
            res["targets"] = targets(model, res["rows"])
            res.pop("runs")
            results.append(res)
        load["after"] = [round(v, 2) for v in os.getloadavg()]
        argv_list = sys.argv[1:] if argv is None else list(argv)
        write_json_atomically(out, {"benchmark": "serve_load", "argv": argv_list, "environment": env,
                                    "load_average": load, "results": results})
        write_text_atomically(out.with_suffix(".md"), markdown(results, env, argv_list, load))
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log(f"wrote {out} and {out.with_suffix('.md')}")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
