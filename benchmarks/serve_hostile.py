"""The service under a hostile mix: issue 22's hostile requests interleaved with normal traffic.

On the bundled model (`optkit export voice-resnet`), served by `optkit serve` on 127.0.0.1:

1. saturation: closed-loop steps of normal requests (.npy bodies); the best QPS;
2. a clean run: normal requests only, open loop at half that rate, ``--seconds`` (default 60);
3. a hostile run: the same normal traffic, with the hostile requests of ``hostile_requests()`` (deep
   JSON, crafted .npy headers, 2 hours of FLAC, inputs the model overflows on, ...) sent in turn
   between them at ``--hostile-rate`` per second.

Reported: every status code of both runs (target: no 5xx), the normal requests' p50/p99 in each run
(target: hostile p99 within 2x of clean), and the server's peak RSS sampled from /proc every 20 ms
in each run (the bound: clean peak + 256 MiB). Loopback only.

    python benchmarks/serve_hostile.py --out benchmarks/results/serve_hostile/serve_hostile.json
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPE = (1, 40, 241)  # the bundled model's per-sample input
RSS_BOUND_MIB = 256  # the hostile run's peak RSS may exceed the clean run's by at most this


@dataclass(frozen=True)
class Hostile:
    name: str
    content_type: str
    body: bytes
    allowed: tuple[int, ...]  # statuses that are a correct answer (a 4xx; 200 where the input is valid)


def npy_with_header(shape: str, descr: str = "'<f4'", data: bytes = b"\0" * 4 * 9640, fortran: bool = False) -> bytes:
    h = ("{'descr': %s, 'fortran_order': %s, 'shape': %s, }" % (descr, fortran, shape)).encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def multipart(fields: list[tuple[str, str | None, str, bytes]]) -> tuple[str, bytes]:
    """(content type, body) of a multipart/form-data upload: (field, file name or None, type, data)."""
    boundary = "optkit-hostile-boundary"
    parts = []
    for name, filename, ctype, data in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode()
                     + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def flac(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as f:
        left = int(seconds * rate)
        block = np.zeros((rate * 60, channels), np.int16)
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


def hostile_requests(shape: tuple[int, ...] = SHAPE) -> list[Hostile]:
    """Issue 22's service cases (7, 8 and their neighbours) for a float32 model of ``shape``."""
    n = int(np.prod(shape))
    cases: list[Hostile] = []
    J = "application/json"
    for levels in (33, 1_000, 100_000):
        cases += [Hostile(f"JSON array nested {levels}", J, b"[" * levels + b"]" * levels, (400,)),
                  Hostile(f"JSON object nested {levels}", J, b'{"mfcc":' * levels + b"1" + b"}" * levels, (400,))]
        ct, body = multipart([("mfcc", None, "text/plain", b"[" * levels + b"]" * levels)])
        cases.append(Hostile(f"multipart field nested {levels}", ct, body, (400,)))
    cases.append(Hostile("JSON of 1.2 M values", J, b"[" + b"0," * 1_200_000 + b"0]", (413,)))
    for v in ("3e38", "-3e38", "1e39", "1e400"):
        body = ("[" + ",".join([v] * n) + "]").encode()
        cases.append(Hostile(f"JSON inputs of {v}", J, body, (200, 422)))  # 200 where the model stays finite
    big = np.full((1, *shape), 3e38, np.float32)
    cases.append(Hostile("npy inputs of 3e38", "application/x-npy", npy_bytes(big), (200, 422)))
    full = ", ".join(map(str, shape))
    backwards = ", ".join(map(str, shape[::-1]))
    for dims, status in ((f"(-1, {full})", 400), ("(-1, -40, 241)", 400), ("(1, -40, -241)", 400),
                         (f"(99999999999999999999999, {full})", 400), (f"({2 ** 63}, {full})", 400),
                         (f"({2 ** 64}, 1)", 400), (f"(0, {full})", 422), ("(" + "1, " * 40 + ")", 400),
                         (f"({backwards})", 422), ("()", 422)):
        cases.append(Hostile(f"npy shape {dims[:40]}", "application/x-npy", npy_with_header(dims), (status,)))
    for descr in ("('<f4', (40, 241))", "[('a', '<f4'), ('b', '<f4')]", "'<f8'", "'>f4'", "'<U10'", "'<c8'",
                  "'|O'", "'<i4'"):
        cases.append(Hostile(f"npy descr {descr}", "application/x-npy",
                             npy_with_header("(1,)" if "(" in descr else f"(1, {full})", descr), (400, 422)))
    cases.append(Hostile("npy fortran order, cut short", "application/x-npy",
                         npy_with_header(f"(1, {full})", fortran=True, data=b"\0" * 100), (400,)))
    cases.append(Hostile("npy header of 70 KB", "application/x-npy",
                         b"\x93NUMPY\x02\x00" + (70_000).to_bytes(4, "little") + b" " * 70_000, (400,)))
    long_flac = flac(120 * 60)
    cases.append(Hostile("FLAC of 120 minutes of silence", "audio/flac", long_flac, (413,)))
    cases.append(Hostile("FLAC of 61 s", "audio/flac", flac(61), (413,)))
    cases.append(Hostile("FLAC of 20 s, 8 channels at 48 kHz", "audio/flac", flac(20, 48000, 8), (413,)))
    ct, body = multipart([("audio", "long.flac", "audio/flac", long_flac)])
    cases.append(Hostile("multipart FLAC of 120 minutes", ct, body, (413,)))
    wav = bytearray(b"RIFF" + (2**32 - 1).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
                    + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
                    + (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
                    + b"data" + (2**32 - 100).to_bytes(4, "little") + b"\0" * 2000)
    cases.append(Hostile("WAV header claiming 4 GB of data", "audio/wav", bytes(wav), (200, 400, 413, 422)))
    cases.append(Hostile("FLAC cut after the header", "audio/flac", long_flac[:200], (400, 413)))
    ct, body = multipart([(f"f{i}", None, "text/plain", b"1") for i in range(20)])
    cases.append(Hostile("multipart with 20 fields", ct, body, (400,)))
    return cases


# -- the run -------------------------------------------------------------------------------------
class RssSampler:
    """Peak VmRSS of a process (and its children), sampled from /proc every ``period`` s."""

    def __init__(self, pid: int, period: float = 0.02):
        self.pid, self.period, self.peak_kib = pid, period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        pids = [self.pid]
        try:
            for task in Path(f"/proc/{self.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self._rss())
            self._stop.wait(self.period)

    def __enter__(self) -> "RssSampler":
        self.peak_kib = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def mixed_run(url: str, normal: bytes, rate: float, seconds: float, hostile: list[Hostile],
                    hostile_rate: float) -> dict:
    """Normal .npy requests at ``rate`` (open loop) and, between them, the hostile cases in turn at
    ``hostile_rate`` (0: none). Returns statuses and the normal requests' latencies."""
    import aiohttp

    normal_ms: list[float] = []
    statuses: dict[str, dict[str, int]] = {"normal": {}, "hostile": {}}
    wrong: list[str] = []
    failures = {"normal": 0, "hostile": 0}

    async def send(session, kind: str, ctype: str, body: bytes, case: Hostile | None) -> None:
        t0 = time.perf_counter()
        try:
            async with session.post(f"{url}/verify", data=body, headers={"Content-Type": ctype}) as r:
                text = await r.read()
                status = r.status
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failures[kind] += 1
            if case is not None:
                wrong.append(f"{case.name}: no answer ({type(exc).__name__})")
            return
        ms = (time.perf_counter() - t0) * 1e3
        statuses[kind][str(status)] = statuses[kind].get(str(status), 0) + 1
        if kind == "normal" and status == 200:
            normal_ms.append(ms)
        if case is not None:
            one_line = True
            if status != 200:
                try:
                    detail = json.loads(text)["detail"]
                    one_line = isinstance(detail, str) and "\n" not in detail
                except (ValueError, KeyError, TypeError):
                    one_line = False
            if status not in case.allowed or not one_line:
                wrong.append(f"{case.name}: {status} {text[:120]!r}")

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        events = [(i / rate, "normal") for i in range(int(rate * seconds))]
        if hostile_rate > 0:
            events += [(0.5 / hostile_rate + i / hostile_rate, "hostile") for i in range(int(hostile_rate * seconds))]
        events.sort()
        tasks, h = [], 0
        for at, kind in events:
            delay = t0 + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if kind == "normal":
                tasks.append(asyncio.create_task(send(session, "normal", "application/x-npy", normal, None)))
            else:
                case = hostile[h % len(hostile)]
                h += 1
                tasks.append(asyncio.create_task(send(session, "hostile", case.content_type, case.body, case)))
        await asyncio.gather(*tasks)
    ms = np.asarray(normal_ms)
    return {"statuses": statuses, "failures": failures, "hostile_sent": h, "wrong_answers": wrong,
            "normal_ok": int(ms.size), "normal_p50_ms": round(float(np.percentile(ms, 50)), 3) if ms.size else None,
            "normal_p99_ms": round(float(np.percentile(ms, 99)), 3) if ms.size else None}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from optkit.common.errors import OptkitError
    from optkit.common.fileio import check_output_path, write_json_atomically
    from optkit.common.workspace import work_dir
    from optkit.runtime import sysinfo
    from optkit.serve import loadtest as lt
    from optkit.serve.server import ServerProcess, get_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results" / "serve_hostile" / "serve_hostile.json"))
    p.add_argument("--seconds", type=float, default=60.0, help="length of the clean and of the hostile run")
    p.add_argument("--hostile-rate", type=float, default=5.0, help="hostile requests per second")
    p.add_argument("--model", default=None, help="an exported bundled model (default: export voice-resnet here)")
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        check_output_path(out)
        cases = hostile_requests()
        with work_dir("optkit-hostile-") as tmp:
            model = Path(args.model) if args.model else Path(tmp) / "vr.onnx"
            if not args.model:
                from click.testing import CliRunner

                from optkit.cli import cli

                res = CliRunner().invoke(cli, ["export", "voice-resnet", "-o", str(model)])
                if res.exit_code != 0:
                    raise OptkitError(f"export failed: {res.output.strip().splitlines()[-1]}")
            with ServerProcess(model, "cpu", ["--max-queue", "64"], startup_timeout=180) as srv:
                normal = npy_bytes(np.random.default_rng(0).standard_normal((1, *SHAPE)).astype(np.float32))
                payload = lt.Payload(normal, "application/x-npy", "random .npy")
                sat = 0.0
                for c in (1, 2, 4, 8):
                    step = asyncio.run(lt.closed_loop_step(f"{srv.url}/verify", payload, c, 5.0, 10.0))
                    sat = max(sat, step.qps)
                    log(f"saturation step, concurrency {c}: {step.qps:.1f} QPS")
                rate = sat / 2
                runs = {}
                for name, hrate in (("clean", 0.0), ("hostile", args.hostile_rate)):
                    with RssSampler(srv.proc.pid) as rss:
                        base_kib = rss.peak_kib
                        runs[name] = asyncio.run(mixed_run(srv.url, normal, rate, args.seconds, cases, hrate))
                    runs[name]["rss_start_mib"] = round(base_kib / 1024, 1)
                    runs[name]["rss_peak_mib"] = round(rss.peak_kib / 1024, 1)
                    log(f"{name}: {json.dumps(runs[name])[:600]}")
                metrics = get_json(f"{srv.url}/metrics")[1]
        five: dict[str, int] = {}
        for run in runs.values():
            for kind in run["statuses"].values():
                for k, v in kind.items():
                    if k.startswith("5"):
                        five[k] = five.get(k, 0) + v
        errors_5xx = {k: v for k, v in five.items() if k != "503"}  # 503: load shed with Retry-After
        served_5xx = [ln for ln in str(metrics).splitlines()
                      if ln.startswith("optkit_requests_total") and 'status="5' in ln]
        ratio = runs["hostile"]["normal_p99_ms"] / runs["clean"]["normal_p99_ms"]
        growth = runs["hostile"]["rss_peak_mib"] - runs["clean"]["rss_peak_mib"]
        result = {
            "benchmark": "serve_hostile", "argv": sys.argv[1:] if argv is None else list(argv),
            "environment": sysinfo.collect(), "saturation_qps": round(sat, 1), "normal_rate": round(rate, 1),
            "hostile_rate": args.hostile_rate, "seconds": args.seconds, "hostile_cases": [c.name for c in cases],
            "runs": runs, "client_5xx": five, "server_5xx_metrics": served_5xx,
            "shed_503": five.get("503", 0),
            "p99_ratio_hostile_over_clean": round(ratio, 3),
            "rss_peak_growth_mib": round(growth, 1), "rss_bound_mib": RSS_BOUND_MIB,
            "targets": {"no 5xx but 503 load shedding": not errors_5xx and not any('status="503"' not in ln
                                                                                  for ln in served_5xx),
                        "p99 within 2x": ratio <= 2.0,
                        f"peak RSS within clean + {RSS_BOUND_MIB} MiB": growth <= RSS_BOUND_MIB,
                        "every hostile request answered as expected": not runs["hostile"]["wrong_answers"]},
        }
        write_json_atomically(out, result)
    except OptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"saturation {sat:.1f} QPS; normal traffic at {rate:.1f}/s, hostile {args.hostile_rate:g}/s "
          f"({len(cases)} cases in turn) for {args.seconds:g} s")
    for name, run in runs.items():
        print(f"  {name:8s} normal p50 {run['normal_p50_ms']} ms, p99 {run['normal_p99_ms']} ms; statuses "
              f"{run['statuses']}; peak RSS {run['rss_peak_mib']} MiB (start {run['rss_start_mib']})")
    print(f"  5xx: {five or 'none'} (503 = shed by the queue); p99 hostile/clean {ratio:.2f}; peak RSS growth {growth:.1f} MiB "
          f"(bound {RSS_BOUND_MIB}); wrong answers: {runs['hostile']['wrong_answers'] or 'none'}")
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in result["targets"].items()))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
