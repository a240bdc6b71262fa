"""Python half of benchmarks/gpu_check.sh: optkit.runtime.gpu status, and PyTorch CUDA latency/accuracy.

    python benchmarks/gpu_check.py status --out gpu_check_out/gpu_status.json
    python benchmarks/gpu_check.py torch  --out gpu_check_out/torch_cuda.json [--model voice-resnet-seed]
    python benchmarks/gpu_check.py torch  --cpu-only --model voice-resnet   # the CPU-side parts only

``torch`` builds the zoo model, computes CPU outputs on a few seeded inputs, then on CUDA (eval,
inference_mode) times fp32 and fp16 autocast at batch 1 and 8: warm-up, then per-iteration
wall time with ``torch.cuda.synchronize()``, reported as min / median / p90 in ms, once with
the input already on the GPU ("compute") and once including the host->device copy of the input
and the device->host copy of the output ("with copies", what ONNX Runtime's CUDA EP numbers
include when fed numpy). The reference user measured 22.4 ms (ORT CUDA EP) and 13.0 ms (ORT
TensorRT EP) minimum latency under load, on their GPU. Accuracy: max |CUDA - CPU| per precision
and decision agreement at 0.5.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

REFERENCE_USER_MS = {"ort_cpu_ep": 102.4, "ort_cuda_ep": 22.4, "ort_tensorrt_ep": 13.0}


def _write_json(path: str | None, obj: Any) -> None:
    if not path:
        return
    from optkit.common.fileio import write_json_atomically

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, obj)
    print(f"wrote {path}")


def cmd_status(args: argparse.Namespace) -> int:
    from optkit.runtime.gpu import gpu_status

    st = gpu_status()
    for key in ("cpu", "cuda", "tensorrt", "tensorrt-engine"):
        e = st[key]
        hint = f"  -> {e['install_hint']}" if e["install_hint"] else ""
        print(f"{key:16s} {'usable' if e['usable'] else 'NOT usable':11s} {e['reason']}{hint}")
    print(f"device: {json.dumps(st['device'])}")
    print(f"versions: {json.dumps(st['versions'])}")
    _write_json(args.out, st)
    return 0


def _stats(times_s: list[float]) -> dict[str, float]:
    ms = sorted(t * 1e3 for t in times_s)
    return {"min_ms": round(ms[0], 3), "median_ms": round(statistics.median(ms), 3),
            "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3)}


def cmd_torch(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from optkit import zoo

    info: dict[str, Any] = {
        "model": args.model, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "reference_user_ms": REFERENCE_USER_MS, "results": [], "accuracy": {},
    }
    t0 = time.perf_counter()
    model = zoo.build(args.model)
    info["build_s"] = round(time.perf_counter() - t0, 2)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((args.samples, 1, 40, 241)).astype(np.float32)
    with torch.inference_mode():
        t0 = time.perf_counter()
        cpu_out = model(torch.from_numpy(x_np)).numpy()
        info["cpu_forward_s"] = round(time.perf_counter() - t0, 2)
    print(f"{args.model}: built in {info['build_s']} s; CPU forward of {args.samples} samples "
          f"{info['cpu_forward_s']} s; outputs {cpu_out.ravel()[:4].round(4).tolist()}...")
    cuda_ok = (not args.cpu_only) and torch.version.cuda is not None and torch.cuda.is_available()
    info["cuda_used"] = cuda_ok
    if not cuda_ok:
        why = "--cpu-only" if args.cpu_only else f"torch {torch.__version__} sees no CUDA GPU"
        print(f"GPU parts skipped ({why})")
        _write_json(args.out, info)
        return 0

    dev = torch.device("cuda")
    info["gpu"] = torch.cuda.get_device_name(0)
    info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
    torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick its fastest convs
    info["settings"] = {
        "cudnn.benchmark": True,
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    model = model.to(dev).eval()
    modes = ("fp32", "fp16")  # fp16 = torch.autocast(float16): PyTorch's usual mixed precision

    # accuracy: CUDA vs CPU on the same inputs
    for name in modes:
        with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.float16) if name == "fp16"
                                      else torch.autocast("cuda", enabled=False)):
            out = model(torch.from_numpy(x_np).to(dev)).float().cpu().numpy()
        diff = float(np.abs(out - cpu_out).max())
        agree = float(((out >= 0.5) == (cpu_out >= 0.5)).mean())
        info["accuracy"][name] = {"max_abs_diff_vs_cpu": diff, "decision_agreement": agree}
        print(f"accuracy {name}: max|cuda-cpu| = {diff:.3e}, decision agreement {agree:.3f}")

    for name in modes:
        for batch in args.batches:
            xb_np = rng.standard_normal((batch, 1, 40, 241)).astype(np.float32)
            xb = torch.from_numpy(xb_np).to(dev)
            for copies in (False, True):
                times = []
                with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.float16) if name == "fp16"
                                              else torch.autocast("cuda", enabled=False)):
                    for i in range(args.warmup + args.iterations):
                        torch.cuda.synchronize()
                        t = time.perf_counter()
                        if copies:
                            y = model(torch.from_numpy(xb_np).to(dev)).float().cpu()
                        else:
                            y = model(xb)
                            torch.cuda.synchronize()
                        if i >= args.warmup:
                            times.append(time.perf_counter() - t)
                del y
                row = {"precision": name, "batch": batch, "with_copies": copies, "iterations": len(times),
                       **_stats(times)}
                row["per_sample_median_ms"] = round(row["median_ms"] / batch, 3)
                info["results"].append(row)
                print(f"torch cuda {name:4s} batch {batch:2d} {'with copies' if copies else 'compute    '}: "
                      f"min {row['min_ms']:8.3f} ms  median {row['median_ms']:8.3f} ms  p90 {row['p90_ms']:8.3f} ms")
    print(f"reference user (their GPU, ORT, under load): CUDA EP {REFERENCE_USER_MS['ort_cuda_ep']} ms, "
          f"TensorRT EP {REFERENCE_USER_MS['ort_tensorrt_ep']} ms")
    info["max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated() / (1 << 20), 1)
    _write_json(args.out, info)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="print optkit.runtime.gpu.gpu_status()")
    s.add_argument("--out")
    t = sub.add_parser("torch", help="PyTorch CUDA latency and CUDA-vs-CPU accuracy of a zoo model")
    t.add_argument("--model", default="voice-resnet-seed")
    t.add_argument("--batches", default="1,8", type=lambda v: [int(b) for b in v.split(",")])
    t.add_argument("--iterations", type=int, default=50)
    t.add_argument("--warmup", type=int, default=10)
    t.add_argument("--samples", type=int, default=4, help="inputs for the CUDA-vs-CPU comparison")
    t.add_argument("--cpu-only", action="store_true", help="build and run on CPU only (tests the script)")
    t.add_argument("--out")
    args = ap.parse_args(argv)
    return {"status": cmd_status, "torch": cmd_torch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
