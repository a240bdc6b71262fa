"""Latency of the voice model's artifacts on CPU: ONNX Runtime, OpenVINO and PyTorch eager, interleaved.

One command prepares the artifacts (fp32 export, fp16, int8 in the ``cpu`` form for ONNX Runtime
and the ``openvino`` form for OpenVINO) and times them round-robin in one process, so that the
ratios to ORT fp32 are fair on a shared, noisy machine:

    python benchmarks/latency.py --quick                        # voice-resnet only, a few rounds
    python benchmarks/latency.py --model voice-resnet-seed --batch 1 --iterations 30 \
        --out benchmarks/results/latency/latency_seed.json

Writes the JSON (every number, versions, CPU features, runner settings in effect) and a Markdown
table beside it. Artifacts are cached in ``--work-dir`` (default ``benchmarks/cache/``) and rebuilt
only when their recipe (model, method, calibration data, parent sha256) changes. See README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from optkit.runtime import bench as bench_lib  # noqa: E402
from optkit.common.errors import OptkitError  # noqa: E402
from optkit.common.fileio import check_output_path, write_json_atomically, write_text_atomically  # noqa: E402
from optkit.runtime.base import Runner  # noqa: E402
from optkit.model.onnx_utils import TensorSpec  # noqa: E402

MODELS = ("voice-resnet", "voice-resnet-seed")
INPUT_NAME, OUTPUT_NAME = "input_mfcc", "output_wvp"
SAMPLE_SHAPE = (1, 40, 241)
DEFAULT_CALIBRATION = REPO / "calibration_data" / "calib"
BASELINE = "ORT fp32"
# Targets on voice-resnet-seed, batch 1, 2 threads, vs ORT fp32 in the same run (by minimum latency).
TARGETS = {
    "ORT int8 (cpu form)": (3.0, None),
    "OpenVINO int8 (openvino form, f32 hint)": (3.5, 4.0),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def seed_torch() -> None:
    """zoo.build() initialises a model without bundled weights from torch's global RNG: seed it
    before every build so the exported model and the PyTorch baseline are the same network."""
    import torch

    torch.manual_seed(0)


# -- PyTorch eager as a runner, so it is timed in the same interleaved rounds ------------------
class TorchEagerRunner(Runner):
    name = "pytorch-eager"

    def __init__(self, model_name: str, threads: int | None = None):
        super().__init__(Path(model_name), threads=threads)
        self.model_name = model_name
        self.model: Any = None

    def activate(self) -> None:
        import torch

        from optkit import zoo

        if self.threads:
            torch.set_num_threads(int(self.threads))
        seed_torch()
        self.model = zoo.build(self.model_name)
        self.active = True

    def deactivate(self) -> None:
        self.model = None
        self.active = False

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(INPUT_NAME, (None, *SAMPLE_SHAPE), "float32")]

    @property
    def output_names(self) -> list[str]:
        return [OUTPUT_NAME]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return {OUTPUT_NAME: self.model(torch.from_numpy(feed[INPUT_NAME])).numpy()}

    def describe(self) -> dict[str, Any]:
        import torch

        return {"runner": self.name, "version": torch.__version__, "device": "cpu",
                "precision": "fp32", "threads": torch.get_num_threads()}


# -- artifact preparation (cached by optkit's recipe runner) ------------------------------------
def _rel(path: str | Path) -> str:
    """A path relative to the repository where it is inside it (results carry no machine paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def calibration_source(calibration: str | None, samples: int) -> tuple[str | None, str]:
    """The calibration directory to use, or None for seeded random data, and a note saying which."""
    path = Path(calibration) if calibration else DEFAULT_CALIBRATION
    if path.exists() and (path.is_file() or any(path.glob("*.npy"))):
        return str(path), f"calibration data: {_rel(path)} (first {samples} samples)"
    if calibration:
        raise SystemExit(f"error: calibration data {path} does not exist or has no .npy files")
    return None, (f"calibration data: {DEFAULT_CALIBRATION.relative_to(REPO)} not found; calibrated on "
                  f"{samples} seeded random samples (speed is unaffected; accuracy of the int8 models is not meaningful)")


def _calibration_array(calib: str | None, samples: int) -> np.ndarray:
    from optkit.data.samples import random_samples
    from optkit.data.source import load_samples

    if calib is None:
        return random_samples(samples, SAMPLE_SHAPE, seed=123).x
    return load_samples(calib, sample_shape=SAMPLE_SHAPE, limit=samples).x


# As in recipes/voice_verification.yaml: the first conv (raw MFCCs, 0.1-0.3 % of the MACs) stays
# fp32. Speed does not depend on the calibration method, so the fast minmax is used here.
EXCLUDE_NODES = ("/conv1/Conv",)


INT8_TARGETS = ("cpu", "openvino", "tensorrt")


def prepare(model: str, work: Path, calib: str | None, samples: int,
            int8_targets: tuple[str, ...] = INT8_TARGETS) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the artifacts with optkit's recipe runner: ``work/<model>`` is a recipe
    output directory, so a step is rebuilt exactly when its cache key changes (pass config,
    parent sha256, model sources, calibration data, tool versions) - the same rule as `optkit run`.
    fp32 and fp16 always; the int8 form of each of ``int8_targets``."""
    from optkit.pipeline.recipe import Recipe, Step, run_recipe

    d = work / model
    d.mkdir(parents=True, exist_ok=True)
    calib_path = calib
    if calib_path is None and int8_targets:  # the pass reads a directory: write the random samples as .npy
        calib_path = str(d / "random_calib")
        Path(calib_path).mkdir(exist_ok=True)
        for i, x in enumerate(_calibration_array(None, samples)):
            np.save(Path(calib_path) / f"r{i:03d}.npy", x)

    def int8(target: str) -> Step:
        # A speed benchmark: every int8 form is made with the same fixed settings (minmax, the first
        # conv in float), one quantisation, no gate - the seed-size model has random weights, so
        # its int8 accuracy means nothing and a search would chase near-0.5 outputs; the release
        # recipe is what judges accuracy. The benchmark times the artifacts itself.
        params = {"calibration": calib_path, "target": target, "calibration_limit": samples,
                  "exclude_nodes": list(EXCLUDE_NODES), "search": False, "latency_rounds": 0,
                  "gates": {"mean_abs": None, "min_agreement": None, "max_accuracy_drop": None}}
        return Step(f"int8_{target}", "quantize-int8", params, "fp32", 0, f"int8_{target}.onnx")

    # A small reference set: the seed model takes ~0.3 s per sample in PyTorch.
    steps = [Step("fp32", "export", {"model": model, "reference_samples": 4, "batch_size": 4}, None, 0, "fp32.onnx"),
             Step("fp16", "quantize-fp16", {}, "fp32", 0, "fp16.onnx"),
             *(int8(t) for t in int8_targets)]
    recipe = Recipe(d / "recipe", f"latency-{model}", model, steps, {"enabled": False})
    seed_torch()  # a model without bundled weights is initialised from torch's global RNG
    outcome = run_recipe(recipe, d, echo=log, verify=False)
    arts: dict[str, dict[str, Any]] = {}
    for o in outcome.steps:
        assert o.artifact is not None, f"{o.step} was skipped: {o.reason}"
        a = o.artifact
        cfg = a.config
        how = {"export": "optkit pass export", "quantize-fp16": "optkit pass quantize-fp16 (defaults)",
               "quantize-int8": f"optkit pass quantize-int8 (target={cfg.get('target')!r}, "
                                f"exclude_nodes={cfg.get('exclude_nodes')}, {cfg.get('method')}, "
                                f"{cfg.get('calibration_limit')} samples)"}[str(a.made_by)]
        arts[o.step] = {"sha256": a.sha256, "how": how, "path": _rel(a.path)}
    return arts


# -- measurement --------------------------------------------------------------------------------
def bench_items(work: Path, model: str, threads: int, torch_baseline: bool) -> list[bench_lib.BenchItem]:
    from optkit.runtime.onnxruntime import OnnxRuntimeRunner
    from optkit.runtime.openvino import OpenVINORunner

    d = work / model
    items = [
        bench_lib.BenchItem(BASELINE, OnnxRuntimeRunner(d / "fp32.onnx", threads=threads), d / "fp32.onnx"),
        bench_lib.BenchItem("ORT int8 (cpu form)", OnnxRuntimeRunner(d / "int8_cpu.onnx", threads=threads),
                            d / "int8_cpu.onnx"),
        bench_lib.BenchItem("ORT fp16", OnnxRuntimeRunner(d / "fp16.onnx", threads=threads), d / "fp16.onnx"),
        bench_lib.BenchItem("OpenVINO fp32 (f32 hint)",
                            OpenVINORunner(d / "fp32.onnx", threads=threads, precision="f32", performance_hint="LATENCY"),
                            d / "fp32.onnx"),
        bench_lib.BenchItem("OpenVINO int8 (openvino form, f32 hint)",
                            OpenVINORunner(d / "int8_openvino.onnx", threads=threads, precision="f32",
                                           performance_hint="LATENCY"), d / "int8_openvino.onnx"),
        # The symmetric-s8 (TensorRT) form on OpenVINO too: the alternative to the u8 openvino
        # form, measured side by side (asymmetric s8 ran no faster than fp32; see README.md).
        bench_lib.BenchItem("OpenVINO int8 (symmetric s8 / tensorrt form, f32 hint)",
                            OpenVINORunner(d / "int8_tensorrt.onnx", threads=threads, precision="f32",
                                           performance_hint="LATENCY"), d / "int8_tensorrt.onnx"),
        bench_lib.BenchItem("OpenVINO int8 (openvino form, LATENCY, default precision)",
                            OpenVINORunner(d / "int8_openvino.onnx", threads=threads, precision="default",
                                           performance_hint="LATENCY"), d / "int8_openvino.onnx"),
    ]
    if torch_baseline:
        items.append(bench_lib.BenchItem("PyTorch eager fp32", TorchEagerRunner(model, threads=threads)))
    return items


def usable_items(items: list[bench_lib.BenchItem], work: Path, model: str,
                 threads: int) -> tuple[list[bench_lib.BenchItem], dict[str, str]]:
    """Load each runner once; leave out (with the reason) those that cannot load here.

    Seen with OpenVINO 2026.4 on an AMX CPU: a QDQ model with asymmetric *signed* int8
    activations into Conv does not compile with a bf16 or f16 precision hint ("No suitable
    implementations"). optkit's forms (u8, or symmetric s8 for TensorRT) compile with every hint.
    """
    kept, skipped = [], {}
    for item in items:
        try:
            with item.runner:
                pass
        except OptkitError as exc:
            skipped[item.label] = str(exc)
            log(f"leaving out {item.label}: {exc}")
            continue
        kept.append(item)
    return kept, skipped


def targets_for(report: bench_lib.BenchReport, model: str) -> list[dict[str, Any]]:
    if 1 not in report.config.batches:
        return []
    rows = []
    for label, (target, stretch) in TARGETS.items():
        try:
            r = report.result(label, 1)
        except KeyError:
            continue
        if r.speedup is None:  # bench gives no ratio against a first artifact with other inputs
            continue
        rows.append({
            "artifact": label, "batch": 1, "speedup_min": round(r.speedup["min"], 3),
            "speedup_p50": round(r.speedup["p50"], 3), "target": target, "stretch": stretch,
            "met": r.speedup["min"] >= target, "applies": model == "voice-resnet-seed",
        })
    return rows


def measure(model: str, args: argparse.Namespace, work: Path, calib: str | None, calib_note: str) -> dict[str, Any]:
    arts = prepare(model, work, calib, args.calib_samples)
    items, skipped = usable_items(bench_items(work, model, args.threads, not args.no_torch), work, model, args.threads)
    # Real MFCC windows as inputs where there are some (latency does not depend on them, but the
    # agreement check below is only meaningful on in-distribution inputs); else seeded random data.
    cfg = bench_lib.BenchConfig(batches=tuple(args.batch), warmup=args.warmup, iterations=args.iterations,
                                idle_ms=args.idle_ms, seed=0, data=calib)
    load_before = os.getloadavg()
    log(f"{model}: timing {len(items)} runners, batch {','.join(map(str, args.batch))}, "
        f"{args.iterations} rounds, idle {args.idle_ms:g} ms (load average {load_before[0]:.2f})")
    outputs: dict[tuple[str, int], np.ndarray] = {}
    report = bench_lib.benchmark(items, cfg, progress=log,
                                 on_first_output=lambda label, batch, out: outputs.__setitem__(
                                     (label, batch), next(iter(out.values()))))
    load_after = os.getloadavg()
    # Same seeded inputs for every runner: how far each output is from PyTorch (a fast but
    # broken artifact would otherwise look like a win).
    agreement = {}
    for (label, batch), out in outputs.items():
        ref = outputs.get(("PyTorch eager fp32", batch), outputs.get((BASELINE, batch)))
        agreement.setdefault(label, {})[str(batch)] = float(np.max(np.abs(out.astype(np.float64) - ref)))
    data = report.to_json()
    data["model"] = model
    data["artifact_provenance"] = arts
    data["calibration"] = calib_note
    for art in data["artifacts"]:
        if art.get("artifact"):
            art["artifact"] = _rel(art["artifact"])
    data["config"]["data"] = _rel(calib) if calib else None
    data["inputs"] = (f"batches cut from {_rel(calib)} (cycled through the rounds)" if calib
                      else "seeded standard-normal random inputs (seed 0)")
    data["left_out"] = skipped
    data["max_abs_diff_vs_reference"] = {
        "reference": "PyTorch eager fp32" if not args.no_torch else BASELINE,
        "values": agreement,
    }
    data["load_average_1min"] = {"before": round(load_before[0], 2), "after": round(load_after[0], 2)}
    data["targets"] = targets_for(report, model)
    data["markdown"] = report.markdown_lines()
    for line in report.table_lines():
        print(line)
    return data


def markdown(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    env = next(iter(runs.values()))["environment"]
    cpu = env["cpu"]
    libs = env["libraries"]
    lines = [
        "# CPU latency: ONNX Runtime vs OpenVINO vs PyTorch eager",
        "",
        f"Measured {next(iter(runs.values()))['created']} with `python benchmarks/latency.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        f"- CPU: {cpu['model']}, {env['usable_cpus']} usable CPUs; int8: {cpu['int8_acceleration']}; "
        f"OpenVINO bf16 by default: {cpu['openvino_bf16_by_default']}",
        f"- onnxruntime {libs.get('onnxruntime')}, openvino {libs.get('openvino')}, torch {libs.get('torch')}, "
        f"threads {args.threads}",
        f"- {bench_lib.SPINNING_NOTE}",
    ]
    for model, data in runs.items():
        lines += ["", f"## {model}", "", f"{data['calibration']}. Timed inputs: {data['inputs']}.",
                  f"Load average (1 min) before/after: {data['load_average_1min']['before']} / "
                  f"{data['load_average_1min']['after']} on {env['usable_cpus']} CPUs.", ""]
        lines += data["markdown"]
        for label, why in data["left_out"].items():
            lines += ["", f"Left out: **{label}**: {why}"]
        lines += ["", "Max |output - reference| on the timed inputs (reference: "
                  f"{data['max_abs_diff_vs_reference']['reference']}):", ""]
        for label, vals in data["max_abs_diff_vs_reference"]["values"].items():
            lines.append(f"- {label}: " + ", ".join(f"batch {b}: {v:.2e}" for b, v in vals.items()))
        if data["targets"]:
            lines += ["", "Targets (batch 1, by minimum latency, vs ORT fp32 in the same run"
                      + ("" if model == "voice-resnet-seed" else "; they are set for voice-resnet-seed, shown here for information")
                      + "):", ""]
            for t in data["targets"]:
                stretch = f", stretch {t['stretch']}x" if t["stretch"] else ""
                lines.append(f"- {t['artifact']}: {t['speedup_min']:.2f}x (p50 {t['speedup_p50']:.2f}x), "
                             f"target {t['target']}x{stretch}: {'met' if t['met'] else 'NOT met'}")
        lines += ["", "How each artifact was made:", ""]
        for name, info in data["artifact_provenance"].items():
            lines.append(f"- {name} (`{info['path']}`): {info['how']}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="example: python benchmarks/latency.py --model voice-resnet-seed --batch 1 "
                                       "--iterations 30 --out benchmarks/results/latency/latency_seed.json")
    p.add_argument("--model", action="append", choices=MODELS,
                   help="zoo model (repeatable; default: both, or voice-resnet with --quick)")
    p.add_argument("--out", default=None, help="JSON output; a .md table is written beside it "
                   "(default: benchmarks/results/latency/latency[_quick].json)")
    p.add_argument("--batch", default="1,8", help="batch sizes, comma-separated (default 1,8)")
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--iterations", type=int, default=None, help="timed rounds per batch (default 50; quick 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed rounds per batch (default 5; quick 2)")
    p.add_argument("--idle-ms", type=float, default=20.0,
                   help="untimed idle gap before each timed call (default 20 ms)")
    p.add_argument("--calibration", default=None,
                   help="calibration directory (default calibration_data/calib; seeded random data if absent)")
    p.add_argument("--calib-samples", type=int, default=None, help="calibration samples (default 64; quick 16)")
    p.add_argument("--work-dir", default=str(HERE / "cache"), help="where artifacts are built and cached")
    p.add_argument("--no-torch", action="store_true", help="leave out the PyTorch eager baseline")
    p.add_argument("--quick", action="store_true", help="voice-resnet only, few rounds: to check the script")
    args = p.parse_args(argv)
    try:
        args.batch = [int(b) for b in args.batch.split(",") if b.strip()]
        if not args.batch or min(args.batch) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--batch {args.batch!r} is not a list of positive integers like 1,8")
    args.model = args.model or (["voice-resnet"] if args.quick else list(MODELS))
    args.iterations = args.iterations or (10 if args.quick else 50)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.calib_samples = args.calib_samples or (16 if args.quick else 64)
    args.out = args.out or str(HERE / "results" / "latency" / ("latency_quick.json" if args.quick else "latency.json"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        check_output_path(out)
        work = Path(args.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        if not (work / ".gitignore").exists():  # built artifacts are large: keep them out of git
            (work / ".gitignore").write_text("*\n")
        calib, calib_note = calibration_source(args.calibration, args.calib_samples)
        log(calib_note)
        runs = {model: measure(model, args, work, calib, calib_note) for model in args.model}
        md = markdown(runs, args)
        for data in runs.values():
            data.pop("markdown", None)
        write_json_atomically(out, {"benchmark": "latency", "argv": sys.argv[1:], "runs": runs})
        write_text_atomically(out.with_suffix(".md"), md)
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
