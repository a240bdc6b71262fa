"""What serving costs besides inference: `optkit serve` of a model that does almost nothing, loaded
by `optkit loadtest` on the same machine.

The model (built here with onnx.helper: ReduceMean over the MFCC window, then Sigmoid) takes
microseconds, so the saturation QPS is the ceiling set by everything else a request costs: HTTP
parsing on both sides, reading the .npy body, the queue, the hand-off to the inference thread and
back, the JSON answer, and the load generator itself (which shares the cores, as in
`serve_load.py`). 2 / QPS is the CPU time per request on a 2-core machine; a model's served
saturation QPS can reach at most 1 / (its inference core time + that).

    python benchmarks/serve_overhead.py --out benchmarks/results/serve_overhead/serve_overhead.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from optkit.serve import loadtest as lt  # noqa: E402
from optkit.runtime import sysinfo  # noqa: E402
from optkit.common.errors import OptkitError  # noqa: E402
from optkit.common.fileio import check_output_path, write_json_atomically  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402
from optkit.common.workspace import work_dir  # noqa: E402

SHAPE = (1, 40, 241)  # the MFCC window of the reference model


def build_trivial_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_mfcc", TensorProto.FLOAT, ["batch", *SHAPE])
    y = helper.make_tensor_value_info("output_wvp", TensorProto.FLOAT, ["batch", 1])
    nodes = [helper.make_node("Flatten", ["input_mfcc"], ["flat"], axis=1),
             helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Sigmoid", ["mean"], ["output_wvp"])]
    model = helper.make_model(helper.make_graph(nodes, "trivial", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "serve_overhead" / "serve_overhead.json"))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 12, 16])
    p.add_argument("--step-seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=2, help="ramps, one after the other (the best step of each is kept)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        check_output_path(out)
        env = sysinfo.collect()
        env["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ramps = []
        with work_dir("optkit-overhead-") as tmp:
            model = build_trivial_model(Path(tmp) / "trivial.onnx")
            with ServerProcess(model, "cpu", ["--threads", "2", "--max-queue", "64", "--no-audio"],
                               startup_timeout=120) as srv:
                for r in range(args.repeats):
                    for c in args.concurrency:
                        cfg = lt.RampConfig(start=c, step=1, max_concurrency=c, step_seconds=args.step_seconds)
                        rep = lt.run_ramp(srv.url, cfg)
                        s = rep.steps[0]
                        ramps.append({"repeat": r, "concurrency": c, "qps": round(s.qps, 1),
                                      "min_ms": s.min_ms, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                                      "ok": s.ok, "errors": s.errors + s.dropped + s.timeouts})
                        log(f"repeat {r + 1}, concurrency {c}: {s.qps:.0f} QPS, min {s.min_ms:.2f} ms, "
                            f"p50 {s.p50_ms:.2f} ms")
        best = max(ramps, key=lambda x: x["qps"])
        cpus = sysinfo.usable_cpus()
        result = {"benchmark": "serve_overhead", "argv": sys.argv[1:] if argv is None else list(argv),
                  "environment": env, "steps": ramps, "ceiling_qps": best["qps"],
                  "ceiling_concurrency": best["concurrency"],
                  "cpu_ms_per_request": round(cpus * 1e3 / best["qps"], 3), "usable_cpus": cpus,
                  "min_latency_ms": min(x["min_ms"] for x in ramps)}
        write_json_atomically(out, result)
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"serving ceiling: {result['ceiling_qps']:.0f} QPS at concurrency {result['ceiling_concurrency']} "
          f"= {result['cpu_ms_per_request']:.2f} ms of CPU per request on {cpus} CPUs (server + generator); "
          f"minimum round trip {result['min_latency_ms']:.2f} ms; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
