"""How many nodes: the capacity answer of ``optkit loadtest --slo-p99 MS --target-rps N`` for the
bundled model, fp32 vs int8 on ONNX Runtime (CPU) vs OpenVINO, run twice: are the two node counts
the same?

1. prepare the artifacts with ``benchmarks/latency.py``'s ``prepare`` (cached in ``benchmarks/cache/``):
   fp32 export and int8 in the ``cpu`` QDQ form (u8 activations: the fast form on both runtimes);
2. twice, one whole pass after the other (as someone running the command twice would): for each
   artifact x runtime, ``optkit serve`` on 127.0.0.1 (its own process, ``--threads 2 --no-audio``)
   and the capacity search of ``optkit.serve.capacity`` against it (open-loop fixed-rate steps,
   bracket, bisection, confirming repeat);
3. per row: the rate of each pass, the nodes of each pass, and whether they agree.

    python benchmarks/serve_capacity.py --quick        # short steps: checks the script (~2 min)
    nice -n 5 python benchmarks/serve_capacity.py      # the stated settings (< 10 min)

The load generator and the servers share this machine's cores; on a shared machine (the load
average is recorded before and after each pass) rates drift between passes, and a node count that
differs between the passes says exactly that. Writes the JSON and a Markdown table beside it.
"""
from __future__ import annotations

import argparse
import os
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

from optkit.common.fileio import write_json_atomically, write_text_atomically  # noqa: E402
from optkit.serve import capacity as cap  # noqa: E402

SLO_P99_MS = 100.0  # well above the single-request tail here (p99 40-55 ms at 5-25/s on a busy 2-core host)
TARGET_RPS = 1000.0
HEADROOM = 0.3
SERVE_ARGS = ["--threads", "2", "--no-audio"]
EXTRA_SERVE_ARGS: list[str] = []  # --serve-arg


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def pin_apart(spec: str) -> None:
    """Servers under ``taskset -c SERVER``, this process (the load generator) on GENERATOR: on a
    small host, a generator on the server's cores takes whatever it needs from the server's rate
    at that moment, and the capacity moves with it."""
    import shutil

    from optkit.serve.server import ServerProcess

    server, _, generator = spec.partition(":")
    cpus = {int(c) for c in generator.split(",") if c.strip()}
    if not server or not cpus or shutil.which("taskset") is None:
        raise SystemExit(f"--pin {spec}: need SERVER:GENERATOR CPU lists (e.g. 1:0) and taskset")
    os.sched_setaffinity(0, cpus)
    command = ServerProcess.command
    ServerProcess.command = lambda self: ["taskset", "-c", server, *command(self)]


def one_pass(artifacts: list[Path], providers: list[str], cfg: cap.CapacityConfig, index: int) -> dict[str, Any]:
    before, t0 = load_average(), time.perf_counter()
    rows = cap.capacity_services(artifacts, providers, cfg, serve_args=SERVE_ARGS + EXTRA_SERVE_ARGS,
                                 progress=lambda m: log(f"pass {index}: {m}"))
    return {"load_average_before": before, "load_average_after": load_average(),
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    out = [f"# Capacity of the bundled model: p99 <= {c['slo_p99_ms']:g} ms, {c['target_rps']:g} requests/s, "
           f"{c['headroom']:.0%} headroom, two passes", "",
           f"`{result['command']}`; steps of {c['step_seconds']:g} s, bisection to {c['tolerance']:.0%}, at most "
           f"{c['max_trials']} steps per row; servers `optkit serve {' '.join(SERVE_ARGS + EXTRA_SERVE_ARGS)}` on 127.0.0.1, one at "
           "a time.", "",
           f"{result['machine_text']}. The machine is shared with other engineers' jobs: load average "
           + "; ".join(f"pass {i + 1} {p['load_average_before']} -> {p['load_average_after']}"
                       for i, p in enumerate(result["passes"])) + ".", "",
           "| artifact | runtime | precision | rate pass 1 (/s) | rate pass 2 (/s) | p99 at it (ms) | nodes pass 1 | "
           "nodes pass 2 | same nodes | rate 2 / rate 1 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        a, b = r["passes"]
        out.append(f"| {r['artifact']} | {r['provider']} | {r['precision']} | {a['rate']} | {b['rate']} | "
                   f"{a['p99_ms']} / {b['p99_ms']} | {a['nodes']} | {b['nodes']} | "
                   f"{'yes' if r['same_nodes'] else 'NO'} | {r['rate_ratio']} |")
    out += ["", f"Same node count in both passes: {result['same_nodes_rows']} of {len(result['rows'])} rows. "
                "Rates marked `?` were not confirmed by a repeat, `+` are lower bounds. At about N nodes, two "
                "passes agree only when their rates are within about 1/N of each other."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "serve_capacity" / "serve_capacity.json"))
    p.add_argument("--work-dir", default=str(HERE / "cache"))
    p.add_argument("--quick", action="store_true", help="short steps and few of them: checks the script")
    p.add_argument("--providers", default="cpu,openvino")
    p.add_argument("--step-seconds", type=float, default=3.0, help="length of each fixed-rate step")
    p.add_argument("--target-rps", type=float, default=TARGET_RPS, help="the load the node count is for")
    p.add_argument("--serve-arg", action="append", default=[],
                   help="one more optkit serve argument for every server, e.g. --serve-arg=--max-queue=32")
    p.add_argument("--pin", metavar="SERVER:GENERATOR", default=None,
                   help="CPU lists for the servers and for this process (the load generator), e.g. 1:0, so that "
                        "neither takes the other's cores (taskset)")
    args = p.parse_args(argv)
    EXTRA_SERVE_ARGS[:] = args.serve_arg
    if args.pin:
        pin_apart(args.pin)
    work = Path(args.work_dir)
    calib, _ = prep.calibration_source(None, 64)
    prep.prepare("voice-resnet", work, calib, 64, int8_targets=("cpu",))
    artifacts = [work / "voice-resnet" / "fp32.onnx", work / "voice-resnet" / "int8_cpu.onnx"]
    providers = [x.strip() for x in args.providers.split(",") if x.strip()]
    cfg = cap.CapacityConfig(slo_p99_ms=SLO_P99_MS, target_rps=args.target_rps, headroom=HEADROOM,
                             step_seconds=1.0 if args.quick else args.step_seconds, timeout=5.0, tolerance=0.1,
                             max_trials=5 if args.quick else 10, max_rate=2000.0)
    machine = cap.machine_facts()
    passes = [one_pass(artifacts, providers, cfg, i + 1) for i in range(2)]
    keyed = [{r.key: r for r in ps["rows"]} for ps in passes]
    rows = []
    for key, first in keyed[0].items():
        both = [first, keyed[1].get(key)]
        per = [{"rate": None if r is None or r.search is None else
                f"{r.search.rate:.4g}" + ("+" if r.search.lower_bound else "" if r.search.confirmed else "?"),
                "p99_ms": None if r is None or r.search is None or r.search.p99_ms is None
                else round(r.search.p99_ms, 2),
                "nodes": None if r is None else r.nodes(cfg), "error": None if r is None else r.error,
                "trials": [] if r is None or r.search is None else [t.to_json() for t in r.search.trials]}
               for r in both]
        rates = [r.search.rate if r is not None and r.search is not None else 0.0 for r in both]
        rows.append({"artifact": Path(first.artifact).name, "provider": first.provider,
                     "precision": first.server.get("precision"), "passes": per,
                     "rate_ratio": round(rates[1] / rates[0], 3) if rates[0] > 0 else None,
                     "same_nodes": per[0]["nodes"] is not None and per[0]["nodes"] == per[1]["nodes"]})
    result = {"command": "python benchmarks/serve_capacity.py" + (" --quick" if args.quick else
                                                                  f" --step-seconds {args.step_seconds:g}")
              + (f" --target-rps {args.target_rps:g}" if args.target_rps != TARGET_RPS else "")
              + "".join(f" --serve-arg={a}" for a in args.serve_arg) + (f" --pin {args.pin}" if args.pin else ""),
              "config": {k: getattr(cfg, k) for k in ("slo_p99_ms", "target_rps", "headroom", "step_seconds",
                                                      "tolerance", "max_trials", "max_rate", "timeout")},
              "machine": machine, "machine_text": cap.machine_line(machine),
              "passes": [{k: v for k, v in ps.items() if k != "rows"} for ps in passes],
              "rows": rows, "same_nodes_rows": sum(r["same_nodes"] for r in rows)}
    md = markdown(result)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, result)
    write_text_atomically(out.with_suffix(".md"), md)
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
