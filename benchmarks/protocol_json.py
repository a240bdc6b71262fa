"""The protocol bodies' JSON parsing, the standard library's json against orjson, side by side.

One V2 infer body (JSON tensors) and one TF Serving "instances" body of the bundled model's input
(1 x 1 x 40 x 241 float32, 9,640 numbers, random normal), and a V2 binary-extension body for
comparison. Timed in interleaved rounds (each codec once per round, so load on the machine hits
both alike): the bare ``loads`` of the body, and optkit's whole parser
(``optkit.serve.protocols.parse_v2_request`` / ``parse_tf_request``: byte-level limits, loads,
checks, the float32 array) with each codec. Medians over the rounds, in microseconds, and the
ratio json / orjson. Also the byte-level limits check in front of both parsers
(``optkit.serve.payload.check_json_size``: brackets and commas picked out with ``bytes.translate``)
against the numpy scan of every byte it replaced (kept here as ``every_byte_check``).

    python benchmarks/protocol_json.py --out benchmarks/results/protocol_json/protocol_json.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from optkit.common.fileio import write_json_atomically  # noqa: E402
from optkit.runtime import sysinfo  # noqa: E402
from optkit.serve import protocols  # noqa: E402

SAMPLE = (1, 40, 241)
OUTPUTS = ["output_wvp", "accepted"]


def bodies(x: np.ndarray) -> dict[str, tuple[bytes, str | None]]:
    tensor = {"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32"}
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return {"v2_json": (json.dumps({"inputs": [{**tensor, "data": x.ravel().tolist()}]}).encode(), None),
            "v2_binary": (head + x.tobytes(), str(len(head))),
            "tf_instances": (json.dumps({"instances": x.tolist()}).encode(), None)}


def every_byte_check(body: bytes) -> tuple[int, int]:
    """The limits check as it was: numpy compares every byte of the body (depth, values)."""
    b = np.frombuffer(body, np.uint8)
    step = ((b == 0x5B) | (b == 0x7B)).astype(np.int32) - ((b == 0x5D) | (b == 0x7D))
    return int(np.cumsum(step).max()) if b.size else 0, int(np.count_nonzero(b == 0x2C)) + 1


def per_call_us(fn: Callable[[], Any], seconds: float) -> float:
    """The mean time of one call over a ``seconds`` window, in microseconds."""
    fn()  # warm
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        fn()
        n += 1
    return elapsed / n * 1e6


def measure(rounds: int, seconds: float) -> dict[str, Any]:
    x = np.random.default_rng(0).standard_normal((1, *SAMPLE)).astype(np.float32)
    cases = bodies(x)
    codecs = {name: protocols.json_codec(name) for name in ("json", "orjson")}

    def parse(case: str) -> Callable[[], Any]:
        body, header = cases[case]
        if case.startswith("v2"):
            return lambda: protocols.parse_v2_request(body, header, "input_mfcc", SAMPLE, "float32", OUTPUTS)
        return lambda: protocols.parse_tf_request(body, "input_mfcc", SAMPLE, "float32")

    work = {f"loads {case}": (lambda case: lambda loads: loads(cases[case][0]))(case) for case in ("v2_json", "tf_instances")}
    for case in cases:
        work[f"parse {case}"] = (lambda case: lambda loads: parse(case)())(case)
    times: dict[str, dict[str, list[float]]] = {k: {c: [] for c in codecs} for k in work}
    saved = protocols.loads, protocols.dumps
    try:
        for _ in range(rounds):
            for key, fn in work.items():
                for name, (loads, dumps) in codecs.items():
                    protocols.loads, protocols.dumps = loads, dumps
                    times[key][name].append(per_call_us(lambda: fn(loads), seconds))
    finally:
        protocols.loads, protocols.dumps = saved
    from optkit.serve.payload import DEFAULT_LIMITS, check_json_size

    checks: dict[str, dict[str, list[float]]] = {c: {"every_byte": [], "translate": []}
                                                 for c in ("v2_json", "tf_instances")}
    for _ in range(rounds):
        for case, per in checks.items():
            body = cases[case][0]
            per["every_byte"].append(per_call_us(lambda: every_byte_check(body), seconds))
            per["translate"].append(per_call_us(lambda: check_json_size(body, DEFAULT_LIMITS), seconds))
    limits = {}
    for case, per in checks.items():
        old, new = statistics.median(per["every_byte"]), statistics.median(per["translate"])
        limits[f"limits {case}"] = {"every_byte_us": round(old, 1), "translate_us": round(new, 1),
                                    "every_byte_over_translate": round(old / new, 2)}
    rows = {}
    for key, per in times.items():
        med = {name: statistics.median(v) for name, v in per.items()}
        rows[key] = {"json_us": round(med["json"], 1), "orjson_us": round(med["orjson"], 1),
                     "json_over_orjson": round(med["json"] / med["orjson"], 2)}
    return {"body_bytes": {k: len(v[0]) for k, v in cases.items()}, "rows": rows, "limits_check": limits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    p.add_argument("--seconds", type=float, default=0.3, help="time window per case and codec per round")
    p.add_argument("--out", default=str(HERE / "results" / "protocol_json" / "protocol_json.json"))
    args = p.parse_args(argv)
    import orjson

    result = {"command": "python benchmarks/protocol_json.py " + " ".join(argv or sys.argv[1:]),
              "versions": {"numpy": np.__version__, "orjson": orjson.__version__, "python": sys.version.split()[0]},
              "machine": sysinfo.collect(),
              **measure(args.rounds, args.seconds)}
    print(f"{'case':<20} {'json us':>9} {'orjson us':>10} {'json/orjson':>12}")
    for key, row in result["rows"].items():
        print(f"{key:<20} {row['json_us']:>9.1f} {row['orjson_us']:>10.1f} {row['json_over_orjson']:>12.2f}")
    print(f"{'limits check':<20} {'every byte us':>13} {'translate us':>13} {'ratio':>6}")
    for key, row in result["limits_check"].items():
        print(f"{key:<20} {row['every_byte_us']:>13.1f} {row['translate_us']:>13.1f} "
              f"{row['every_byte_over_translate']:>6.2f}")
    write_json_atomically(Path(args.out), result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
