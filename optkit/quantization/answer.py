"""The plain answer at the end of an int8 search: what to ship, measured on this machine.

- The search passed and the chosen int8 model is at least :data:`INT8_PAYS_AT` times as fast as
  fp32 (batch 1, ONNX Runtime CPU, the search's interleaved latency check): ship int8.
- It passed but is slower than that: "int8 does not pay for this model here", with the numbers;
  the int8 model is still written (exit 0), and fp32 is what to ship.
- No trial passed: fp16 of the model is judged by the same int8 gate on the same validation data
  and timed against fp32 in one interleaved run (:func:`optkit.quantization.int8_search.time_models`);
  ship fp16 when it passes and is faster, else fp32 (which is the reference: it always "passes").

Every number here is measured in the run that prints it; nothing is estimated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

INT8_PAYS_AT = 1.2  # chosen int8 vs fp32 at p50 on ONNX Runtime CPU below this: int8 does not pay here
RUNTIME = "ONNX Runtime CPU"


def _ms(row: dict[str, Any]) -> str:
    return f"{row['p50_ms']:.3f} ms"


def int8_verdict(latency: dict[str, Any] | None, target: str) -> dict[str, Any]:
    """The answer after a passing search, from its latency check (see :func:`measure_latency`)."""
    if latency is None or "error" in latency:
        why = "not measured" if latency is None else f"not measured: {latency['error']}"
        return {"ship": "int8", "measured": False,
                "line": f"ship the int8 model: it passes the gate (its speed against fp32 was {why})"}
    if target not in ("cpu", "openvino"):
        return {"ship": "int8", "measured": False,
                "line": f"ship the int8 model for {target}: it passes the gate (its speed on {target} is not "
                        f"measured here; {RUNTIME} says little about it)"}
    fp32 = latency["models"][0]
    chosen = latency["models"][-1]
    p50 = latency["speedup"]["chosen_vs_fp32"]["p50"]
    numbers = {"runtime": RUNTIME, "batch": 1, "fp32_p50_ms": fp32["p50_ms"], "int8_p50_ms": chosen["p50_ms"],
               "int8_speedup_p50": p50, "int8_speedup_min": latency["speedup"]["chosen_vs_fp32"]["min"],
               "pays_at": INT8_PAYS_AT}
    if p50 >= INT8_PAYS_AT:
        return {"ship": "int8", "measured": True, **numbers,
                "line": f"ship the int8 model: {p50:.2f}x fp32 at p50 ({_ms(chosen)} vs {_ms(fp32)}, batch 1, "
                        f"{RUNTIME})"}
    return {"ship": "fp32", "measured": True, "verdict": "int8 does not pay for this model here", **numbers,
            "line": f"int8 does not pay for this model here: the int8 model passes the gate but runs at {p50:.2f}x "
                    f"fp32 at p50 ({_ms(chosen)} vs {_ms(fp32)}, batch 1, {RUNTIME}; the bar is "
                    f"{INT8_PAYS_AT:.1f}x); ship fp32"}


def fallback_answer(fp32_path: Path, validation: Any, gate: Any, threshold: float, work: Path, rounds: int,
                    threads: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """No int8 trial passed: judge fp16 of ``fp32_path`` by the same gate on the same validation
    data and time it against fp32 (``rounds`` interleaved rounds; 0: not timed)."""
    from optkit.common.errors import OptkitError, first_line
    from optkit.model.onnx_utils import load_onnx, save_onnx_atomically
    from optkit.quantization.fp16 import convert_fp16
    from optkit.quantization.int8_search import evaluate, time_models

    say = progress or (lambda s: None)
    fp16_path = Path(work) / "fp16.onnx"
    fp16: dict[str, Any] = {}
    try:
        converted, _, _ = convert_fp16(load_onnx(fp32_path), keep_io_types=True, op_block=[], node_block=[],
                                       name=Path(fp32_path).name)
        save_onnx_atomically(converted, fp16_path)
        say(f"no int8 trial passed: judging fp16 of {Path(fp32_path).name} by the same gate")
        metrics, accuracy, _, failures = evaluate(fp16_path, validation, gate, threshold, threads)
        first = next(iter(metrics.values()), {})
        fp16 = {"passed": not failures, "failures": failures, "agreement": first.get("agreement"),
                "mean_abs_dp": first.get("mean_abs"), "accuracy": accuracy}
    except OptkitError as exc:
        fp16 = {"passed": False, "failures": [f"not converted: {first_line(exc)}"], "error": first_line(exc)}
    timing: dict[str, Any] = {}
    if rounds and "error" not in fp16:
        say(f"timing fp32 and fp16: batch 1, {RUNTIME}, {rounds} rounds, interleaved")
        try:
            rows, env = time_models([("fp32", None, Path(fp32_path)), ("fp16", None, fp16_path)], rounds)
            timing = {"runtime": RUNTIME, "batch": 1, "rounds": rounds, "environment": env,
                      "fp32": {k: rows[0][k] for k in ("min_ms", "p50_ms")},
                      "fp16": {k: rows[1][k] for k in ("min_ms", "p50_ms")}}
            timing["fp16_speedup_p50"] = round(rows[0]["p50_ms"] / rows[1]["p50_ms"], 4) if rows[1]["p50_ms"] else None
        except OptkitError as exc:
            timing = {"error": first_line(exc)}
    faster = bool(timing.get("fp16_speedup_p50") and timing["fp16_speedup_p50"] > 1.0)
    if fp16.get("passed") and faster:
        ship, why = "fp16", f"fp16 passes the gate and runs at {timing['fp16_speedup_p50']:.2f}x fp32"
    elif fp16.get("passed"):
        ship = "fp32"
        why = ("fp16 passes the gate but is not faster than fp32 here "
               f"({timing['fp16_speedup_p50']:.2f}x)" if timing.get("fp16_speedup_p50") else
               "fp16 passes the gate; its speed was not measured (latency_rounds 0)")
    else:
        ship, why = "fp32", "fp16 fails the gate too (" + "; ".join(fp16.get("failures") or ["?"]) + ")"
    speed = ""
    if timing.get("fp16_speedup_p50"):
        speed = (f"; {RUNTIME} batch 1 p50: fp32 {timing['fp32']['p50_ms']:.3f} ms, fp16 "
                 f"{timing['fp16']['p50_ms']:.3f} ms")
    quality = ""
    if fp16.get("agreement") is not None:
        quality = f" (fp16 agreement {100 * fp16['agreement']:.2f} %, mean |dp| {fp16['mean_abs_dp']:.4f})"
    return {"ship": ship, "measured": True, "fp16": fp16, "timing": timing,
            "line": f"no int8 model passes; ship {ship} instead: {why}{quality}{speed}"}
