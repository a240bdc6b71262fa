"""The default int8 command on seven trained model families: one row per model.

    python benchmarks/model_suite.py [--models cnn_norm,gru [--keep-other-rows]] [--rounds 100]

For each model of benchmarks/suite_models/ (trained briefly and deterministically on the bundled
MFCC data, cached): write its calibration directory (192 .npy files) in three file orders (named
by class so a sorted listing puts the impostors first - the case of issue 21 -, that order
reversed, and shuffled with renamed files), run the default ``optkit quantize --int8`` (the
quantize-int8 pass with its default config, in this process so its info is at hand; timed end to
end; from scratch in its own directory) on each and record whether the three written models are
byte-identical (sha256); then, for the by-class run, measure on 96 test samples the search never saw: decision agreement at 0.5
(probabilities, per frame for frame outputs) or the mean cosine per sample (embeddings) of the
written model against fp32, and the latency of fp32 and the written model (chosen int8, or the
best failed one) at batch 1 on ONNX Runtime CPU and OpenVINO, interleaved in one run each.

Writes benchmarks/results/model_suite/model_suite.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "model_suite"


ORDERS = ("by_class", "reversed", "shuffled")


def calibration_dir(order: str, x: np.ndarray, y: np.ndarray, d: Path) -> Path:
    """The same samples as .npy files whose sorted listing is in one of three orders: ``by_class``
    (named by class: every impostor first, the target speaker last, the case of issue 21),
    ``reversed`` (that listing reversed) and ``shuffled`` (seeded permutation, renamed files)."""
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    by_class = np.argsort(y, kind="stable")
    if order == "by_class":
        for i in by_class:
            np.save(d / f"{'target' if y[i] else 'impostor'}_{i:03d}.npy", x[i])
    elif order == "reversed":
        for rank, i in enumerate(by_class[::-1]):
            np.save(d / f"utt_{rank:03d}.npy", x[i])
    else:
        rng = np.random.default_rng(1)
        for i in rng.permutation(len(x)):
            np.save(d / f"{rng.integers(1 << 40):010x}.npy", x[i])
    return d


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def quantize(onnx_path: Path, calib: Path, out: Path) -> tuple[object, bool, Path, float]:
    """The default int8 command (the pass with its default config): (result, passed, the written
    model - the chosen int8 or the best failed one, seconds)."""
    from optkit.model.artifact import Artifact
    from optkit.passes import get_pass
    from optkit.passes.quantize_int8 import Int8SearchFailed, QuantizeInt8Config

    shutil.rmtree(out.parent, ignore_errors=True)  # no settings or statistics of an earlier run
    out.parent.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        result = get_pass("quantize-int8")(Artifact.from_file(onnx_path), QuantizeInt8Config(calibration=str(calib)),
                                           out)
        passed, written = True, out
    except Int8SearchFailed as exc:
        result, passed, written = exc.result, False, out.with_name(f"{out.stem}.failed.onnx")
    return result, passed, written, time.perf_counter() - t0


def run_model(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"input_mfcc": x[i:i + 16]})[0] for i in range(0, len(x), 16)])


def agreement(kind: str, ref: np.ndarray, got: np.ndarray) -> dict:
    if kind == "embedding":
        cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-12)
        return {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}
    return {"agreement": round(float(((ref >= 0.5) == (got >= 0.5)).mean()), 5),
            "mean_abs": round(float(np.abs(ref - got).mean()), 5)}


def speed(fp32: Path, model: Path, rounds: int) -> dict:
    from optkit.runtime.bench import BenchConfig, benchmark, make_bench_items

    out = {}
    for provider in ("cpu", "openvino"):
        try:
            items = make_bench_items([fp32, model], providers=(provider,))
            rep = benchmark(items, BenchConfig(batches=(1,), warmup=10, iterations=rounds))
            a, b = (rep.result(i.label, 1).stats.p50_ms for i in items)
            out[provider] = {"fp32_p50_ms": round(a, 4), "model_p50_ms": round(b, 4), "speedup": round(a / b, 3)}
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model: say so in the row
            out[provider] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    return out


def one(name: str, data: dict, work: Path, rounds: int) -> dict:
    from benchmarks.suite_models import train

    onnx_path, kind = train.train_and_export(name, data, log=lambda s: print(s, flush=True))
    runs = {}
    for order in ORDERS:  # the same calibration samples in three file orders, each run from scratch
        calib = calibration_dir(order, *data["calib"], work / name / order / "calib")
        runs[order] = quantize(onnx_path, calib, work / name / order / "out" / f"{name}.int8.onnx")
        print(f"   {order}: {'pass' if runs[order][1] else 'fail'} in {runs[order][3]:.1f} s, "
              f"sha256 {sha256(runs[order][2])[:16]}", flush=True)
    hashes = {order: sha256(r[2]) for order, r in runs.items()}
    result, passed, written, seconds = runs[ORDERS[0]]
    info = result.info
    search = info["int8_search"]
    chosen = search["chosen"] if search["chosen"] is not None else max(
        range(len(search["trials"])), key=lambda i: (search["trials"][i]["agreement"]
                                                     or search["trials"][i]["sample_cosine_mean"] or 0))
    row = search["trials"][chosen]
    xt, _ = data["test"]
    test = agreement(kind, run_model(onnx_path, xt), run_model(written, xt))
    return {"model": name, "output": kind, "verdict": "pass" if passed else "fail (exit 3)",
            "seconds": round(seconds, 1), "seconds_per_order": {o: round(r[3], 1) for o, r in runs.items()},
            "order_independent": len(set(hashes.values())) == 1 and len({r[1] for r in runs.values()}) == 1,
            "sha256_per_order": hashes,
            "trials": len(search["trials"]), "chosen_trial": search["chosen"],
            "chosen_name": row["name"], "int8_mac_share": round(info["macs"]["share"]["int8"], 4),
            "validation": {"agreement": row["agreement"], "mean_abs": row["mean_abs_dp"],
                           "cosine_mean": row["sample_cosine_mean"], "cosine_min": row["sample_cosine_min"]},
            "test": test,
            "speed": speed(onnx_path, written, rounds), "recommendation": info["recommendation"]["line"],
            "ship": info["recommendation"]["ship"]}


def held(r: dict) -> bool:
    """The unseen-test target: no worse than on the validation part by more than 0.5 pt of
    agreement (embeddings: 0.005 of mean cosine)."""
    v, t = r["validation"], r["test"]
    if "cosine_mean" in t:
        return v["cosine_mean"] is None or t["cosine_mean"] >= v["cosine_mean"] - 0.005
    return v["agreement"] is None or t["agreement"] >= v["agreement"] - 0.005


def markdown(rows: list[dict]) -> str:
    lines = ["| model | output | verdict | trials | chosen | int8 MACs | validation | test (unseen) | test within "
             "0.5 pt | same bytes in 3 orders | ORT CPU fp32 ms | ORT CPU x fp32 | OpenVINO x fp32 | s (max of 3) "
             "| ship |", "|" + "---|" * 15]
    for r in rows:
        t, v = r["test"], r["validation"]
        if "cosine_mean" in t:
            test = f"cos {t['cosine_mean']:.4f} (min {t['cosine_min']:.3f})"
            val = "-" if v["cosine_mean"] is None else f"cos {v['cosine_mean']:.4f} (min {v['cosine_min']:.3f})"
        else:
            test = f"{100 * t['agreement']:.2f} %"
            val = "-" if v["agreement"] is None else f"{100 * v['agreement']:.2f} %"
        sp = {p: (f"{s['speedup']:.2f}x" if "speedup" in s else "n/a") for p, s in r["speed"].items()}
        fp32 = r["speed"]["cpu"].get("fp32_p50_ms")
        lines.append(f"| {r['model']} | {r['output']} | {r['verdict']} | {r['trials']} | {r['chosen_name']} | "
                     f"{100 * r['int8_mac_share']:.1f} % | {val} | {test} | {'yes' if held(r) else 'NO'} | "
                     f"{'yes' if r['order_independent'] else 'NO'} | {'-' if fp32 is None else f'{fp32:.2f}'} | "
                     f"{sp['cpu']} | {sp['openvino']} | {max(r['seconds_per_order'].values())} | {r['ship']} |")
    lines.append("")
    runs = {}
    for r in rows:
        runs.setdefault(r.get("run", "?"), []).append(r["model"])
    if len(runs) > 1:
        lines += ["Runs: " + "; ".join(f"{when}: {', '.join(names)}" for when, names in runs.items()), ""]
    lines += [f"- **{r['model']}**: {r['recommendation']}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    from benchmarks.suite_models import models, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(models.NAMES))
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--keep-other-rows", action="store_true",
                    help="keep the rows of models not run from the existing results (each row records its run)")
    args = ap.parse_args()
    data = train.split()
    work = train.CACHE / "runs"
    rows = []
    for name in args.models.split(","):
        print(f"== {name}", flush=True)
        rows.append(one(name, data, work, args.rounds))
        print(json.dumps(rows[-1]), flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    from optkit.runtime import sysinfo

    for r in rows:
        r["run"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.keep_other_rows and (OUT / "model_suite.json").exists():  # a rerun of some models: the others as they were
        done = {r["model"] for r in rows}
        old = [r for r in json.loads((OUT / "model_suite.json").read_text())["rows"] if r["model"] not in done]
        rows = sorted(old + rows, key=lambda r: models.NAMES.index(r["model"]))
    payload = {"cpu": sysinfo.cpu_info().model, "usable_cpus": sysinfo.usable_cpus(), "rows": rows}
    (OUT / "model_suite.json").write_text(json.dumps(payload, indent=1) + "\n")
    (OUT / "model_suite.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
