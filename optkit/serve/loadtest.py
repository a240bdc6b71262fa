"""Load-testing a running service: the reference owners' method, raise the load until requests
time out or fail, and read off the minimum latency and the saturation throughput.

The ramp is closed-loop: at each step, ``concurrency`` virtual users each send a request, wait for
the answer, and send the next one, for ``step_seconds``; the concurrency grows by ``step`` until a
step sees a timeout or a failed request (a 503 the server shed, any other non-200, a dropped
connection), or ``max_concurrency`` is reached. Per step: QPS of answered requests, min/p50/p90/p99
latency measured by the client, errors, 503s, dropped connections, timeouts. Then the minimum
latency (over all answered requests) and the saturation QPS (the best step), with the sustained QPS
(the median step) beside it. An optional open-loop step at a fixed arrival rate (half the sustained
QPS) shows the latency a service has when it is not saturated.

Requests go through aiohttp's async client (one keep-alive connection per virtual user), never to
anything but a loopback address; every loop is bounded by a count and a time. The generator runs
in its own process, never inside the server it measures.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import html
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError, OptkitError
from optkit.common.lazy import lazy_import
from optkit.serve.gcfreeze import frozen_gc

LOADTEST_FORMAT_VERSION = 1
SHED_BACKOFF_S = 0.02  # a virtual user that got a 503 pauses this long, so it does not spin
WARMUP_REQUESTS = 5
MAX_TOTAL_SECONDS = 3600.0  # no ramp runs longer than this, whatever the options say
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}


@dataclass(frozen=True)
class RampConfig:
    start: int = 1
    step: int = 1
    max_concurrency: int = 32
    step_seconds: float = 5.0
    timeout: float = 10.0
    keep_going: bool = False  # continue past the first failing step (up to max_concurrency)
    half_rate_check: bool = False  # after the ramp: one open-loop step at half the saturation QPS

    def __post_init__(self) -> None:
        if self.start < 1 or self.step < 1 or self.max_concurrency < self.start:
            raise InputError(f"need 1 <= start <= max and step >= 1 (start {self.start}, step {self.step}, "
                             f"max {self.max_concurrency})")
        if not (0 < self.step_seconds <= 600):
            raise InputError(f"step seconds must be in (0, 600], got {self.step_seconds}")
        if not (0 < self.timeout <= 600):
            raise InputError(f"timeout must be in (0, 600] seconds, got {self.timeout}")
        steps = len(range(self.start, self.max_concurrency + 1, self.step))
        if steps * (self.step_seconds + self.timeout) > MAX_TOTAL_SECONDS:
            raise InputError(f"{steps} steps of {self.step_seconds:g} s would run longer than "
                             f"{MAX_TOTAL_SECONDS:.0f} s; raise --step or lower --max")

    def concurrencies(self) -> list[int]:
        return list(range(self.start, self.max_concurrency + 1, self.step))


@dataclass
class Payload:
    body: bytes
    content_type: str
    description: str
    length: int | None = None  # the time-axis length of a --lengths body


MAX_LENGTH_ROWS = 12  # more distinct lengths than this (e.g. a real set's): rows per length bucket
LENGTH_BUCKETS = 6


class LengthMix:
    """Requests of several lengths (``--lengths``): each request's body is drawn from ``lengths`` (a
    list, so a real set's lengths weight themselves) by a seeded generator, one body per distinct
    length; every answer is also recorded under its length (or, beyond ``MAX_LENGTH_ROWS`` distinct
    lengths, its length bucket: ``LENGTH_BUCKETS`` equal-width ranges), over the whole run."""

    def __init__(self, payloads: dict[int, Payload], lengths: Sequence[int], seed: int = 0) -> None:
        self.payloads = payloads
        self.lengths = [int(n) for n in lengths]
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.buckets = length_buckets(sorted(payloads))
        self.bucket_of = {n: i for i, (lo, hi) in enumerate(self.buckets) for n in payloads if lo <= n <= hi}
        self.latencies: list[list[float]] = [[] for _ in self.buckets]
        self.sent = [0] * len(self.buckets)
        self.failed = [0] * len(self.buckets)
        self.description = (f"seeded random .npy of {len(payloads)} lengths drawn from {len(self.lengths)} "
                            f"(seed {seed}): {_lengths_text(sorted(payloads))}")

    def fresh(self) -> LengthMix:
        """The same bodies and list with the generator restarted and nothing recorded: every row of a
        --compare, every step of a capacity search, gets the same seeded sequence of lengths."""
        return LengthMix(self.payloads, self.lengths, self.seed)

    def draw(self) -> Payload:
        return self.payloads[self.lengths[int(self.rng.integers(len(self.lengths)))]]

    def record(self, length: int, kind: str, latency: float) -> None:
        i = self.bucket_of[length]
        self.sent[i] += 1
        if kind == "ok":
            self.latencies[i].append(latency)
        else:
            self.failed[i] += 1

    def mix_json(self) -> dict[str, Any]:
        """Which length mix ran: how many lengths it drew from, the seed, mean and share per row."""
        n = len(self.lengths)
        share = [sum(1 for v in self.lengths if lo <= v <= hi) / n for lo, hi in self.buckets]
        return {"drawn_from": n, "distinct": len(self.payloads), "seed": self.seed,
                "mean_length": round(sum(self.lengths) / n, 3),
                "rows": [{"length": lo, "max_length": hi, "share": round(w, 4)}
                         for (lo, hi), w in zip(self.buckets, share)]}

    def mix_line(self) -> str:
        m = self.mix_json()
        share = ", ".join(f"{_bucket_text(r['length'], r['max_length'])}: {r['share']:.0%}" for r in m["rows"])
        return (f"length mix: {m['distinct']} lengths drawn (seed {self.seed}) from a list of {m['drawn_from']}, "
                f"mean {m['mean_length']:g}; share {share}")

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for (lo, hi), lat, sent, failed in zip(self.buckets, self.latencies, self.sent, self.failed):
            ms = np.asarray(lat, dtype=np.float64) * 1e3
            out.append({"length": lo, "max_length": hi, "count": int(ms.size), "sent": sent, "failed": failed,
                        "min_ms": _r(ms.min()) if ms.size else None,
                        "p50_ms": _r(np.percentile(ms, 50)) if ms.size else None,
                        "p99_ms": _r(np.percentile(ms, 99)) if ms.size else None})
        return out

    def table_lines(self, title: str = "per length (every step):") -> list[str]:
        lines = ["", title, f"{'length':>9}  {'sent':>6}  {'ok':>6}  {'failed':>6}  {'min ms':>8}  {'p50 ms':>8}  "
                 f"{'p99 ms':>8}"]
        return lines + [f"{_bucket_text(r['length'], r['max_length']):>9}  {r['sent']:>6}  {r['count']:>6}  "
                        f"{r['failed']:>6}  {_f(r['min_ms']):>8}  {_f(r['p50_ms']):>8}  {_f(r['p99_ms']):>8}"
                        for r in self.rows()]


def length_buckets(distinct: Sequence[int]) -> list[tuple[int, int]]:
    """One (lo, hi) row per distinct length, or ``LENGTH_BUCKETS`` equal-width ranges over them
    (empty ones dropped) when there are more than ``MAX_LENGTH_ROWS``."""
    if len(distinct) <= MAX_LENGTH_ROWS:
        return [(n, n) for n in distinct]
    edges = np.linspace(distinct[0], distinct[-1], LENGTH_BUCKETS + 1)
    out = []
    for i in range(LENGTH_BUCKETS):
        inside = [n for n in distinct if (edges[i] <= n < edges[i + 1]) or (i == LENGTH_BUCKETS - 1 and n == distinct[-1])]
        if inside:
            out.append((inside[0], inside[-1]))
    return out


def _bucket_text(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _lengths_text(distinct: Sequence[int]) -> str:
    if len(distinct) <= MAX_LENGTH_ROWS:
        return ", ".join(map(str, distinct))
    return f"{distinct[0]}..{distinct[-1]}"


@dataclass
class StepResult:
    concurrency: int | None  # closed-loop users; None for an open-loop (fixed-rate) step
    offered_rate: float | None  # requests per second offered by an open-loop step
    duration_s: float
    sent: int
    ok: int
    shed: int  # 503 answers (the server refused load it could not take)
    errors: int  # other non-200 answers
    dropped: int  # connection errors: reset, refused, closed without an answer
    timeouts: int  # no answer within the timeout
    status_counts: dict[str, int]
    qps: float  # answered (200) requests per second
    min_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    server_ms_p50: float | None = None  # the server's own latency_ms, median
    # ... and its 99th percentile: a client p99 far above it was lost outside the request handler
    # (the network stack, the event loops, the load generator, the scheduler), not in the service
    server_ms_p99: float | None = None
    # the 99th percentile over every request sent, a failed one (503, other error, dropped, timed out)
    # counting as infinitely slow (inf when more than 1 % failed): what a p99 SLO promises to callers
    p99_all_ms: float | None = None

    @property
    def failed(self) -> int:
        return self.shed + self.errors + self.dropped + self.timeouts

    @property
    def load(self) -> str:
        return f"c={self.concurrency}" if self.concurrency is not None else f"{self.offered_rate:.1f}/s"


@dataclass
class LoadReport:
    url: str
    payload: str
    config: RampConfig
    steps: list[StepResult]
    stopped_because: str
    server: dict[str, Any] = field(default_factory=dict)  # GET /metadata
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    half_rate: StepResult | None = None
    lengths: LengthMix | None = None  # --lengths: latency per length beside the overall rows

    @property
    def ramp(self) -> list[StepResult]:
        return [s for s in self.steps if s.concurrency is not None]

    @property
    def min_latency_ms(self) -> float | None:
        mins = [s.min_ms for s in self.steps if s.min_ms is not None]
        return min(mins) if mins else None

    @property
    def saturation(self) -> StepResult | None:
        ramp = [s for s in self.ramp if s.ok]
        return max(ramp, key=lambda s: s.qps) if ramp else None

    @property
    def saturation_qps(self) -> float:
        sat = self.saturation
        return sat.qps if sat else 0.0

    @property
    def sustained_qps(self) -> float:
        """The median QPS of the ramp's steps: what the service kept up under load. The saturation
        QPS (the best step, the reference owners' figure) is what one lucky step reached; on a shared
        machine neighbouring steps differ by 2x, so "half the load" is taken from this one."""
        qps = [s.qps for s in self.ramp if s.ok]
        return float(np.median(qps)) if qps else 0.0

    def totals(self) -> dict[str, int]:
        every = self.steps + ([self.half_rate] if self.half_rate else [])
        out = {k: sum(getattr(s, k) for s in every) for k in ("sent", "ok", "shed", "errors", "dropped", "timeouts")}
        out["status_500"] = sum(int(s.status_counts.get("500", 0)) for s in every)
        return out

    def summary(self) -> dict[str, Any]:
        sat = self.saturation
        out: dict[str, Any] = {
            "min_latency_ms": _r(self.min_latency_ms),
            "saturation_qps": round(self.saturation_qps, 3),
            "saturation_concurrency": sat.concurrency if sat else None,
            "sustained_qps": round(self.sustained_qps, 3),
            "stopped_because": self.stopped_because,
            **self.totals(),
        }
        if self.half_rate is not None:
            h = self.half_rate
            out["half_rate"] = {"offered_qps": _r(h.offered_rate), "p99_ms": _r(h.p99_ms), "p50_ms": _r(h.p50_ms),
                                "server_p99_ms": _r(h.server_ms_p99), "answered": h.ok, "shed": h.shed,
                                "p99_over_min": _r(h.p99_ms / self.min_latency_ms)
                                if h.p99_ms and self.min_latency_ms else None}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "optkit_loadtest_version": LOADTEST_FORMAT_VERSION,
            "created": self.created,
            "url": self.url,
            "payload": self.payload,
            "config": asdict(self.config),
            "method": METHOD_NOTE,
            "summary": self.summary(),
            "steps": [_step_json(s) for s in self.steps],
            "half_rate_step": _step_json(self.half_rate) if self.half_rate else None,
            **({"per_length": self.lengths.rows(), "length_mix": self.lengths.mix_json()} if self.lengths else {}),
            "server": self.server,
            "environment": self.environment,
        }

    def table_lines(self) -> list[str]:
        head = (f"{'load':>9}  {'sent':>6}  {'ok':>6}  {'QPS':>8}  {'min ms':>8}  {'p50 ms':>8}  {'p90 ms':>8}  "
                f"{'p99 ms':>8}  {'503':>5}  {'errors':>6}  {'dropped':>7}  {'timeouts':>8}")
        lines = [f"Load test of {self.url}/verify ({self.payload}); {METHOD_NOTE}", "", head]
        for s in self.steps + ([self.half_rate] if self.half_rate else []):
            lines.append(f"{s.load:>9}  {s.sent:>6}  {s.ok:>6}  {s.qps:>8.2f}  {_f(s.min_ms):>8}  {_f(s.p50_ms):>8}  "
                         f"{_f(s.p90_ms):>8}  {_f(s.p99_ms):>8}  {s.shed:>5}  {s.errors:>6}  {s.dropped:>7}  "
                         f"{s.timeouts:>8}")
        lines += ["", *self.summary_lines()]
        if self.lengths:
            lines += [*self.lengths.table_lines(), self.lengths.mix_line()]
        return lines

    def summary_lines(self) -> list[str]:
        """The summary under the table: minimum latency, saturation, half-rate step, totals."""
        sm = self.summary()
        lines = [f"minimum latency {_f(self.min_latency_ms)} ms; saturation {self.saturation_qps:.2f} QPS at "
                      f"concurrency {sm['saturation_concurrency']} (sustained, median of the steps: "
                      f"{self.sustained_qps:.2f}); stopped: {self.stopped_because}"]
        if "half_rate" in sm:
            h = sm["half_rate"]
            lines.append(f"at half the sustained rate ({h['offered_qps']}/s offered): p50 {h['p50_ms']} ms, "
                         f"p99 {h['p99_ms']} ms = {h['p99_over_min']}x the minimum (inside the server: p99 "
                         f"{h['server_p99_ms']} ms)")
        t = self.totals()
        lines.append(f"totals: {t['sent']} sent, {t['ok']} answered, {t['shed']} shed with 503, {t['status_500']} "
                     f"answered 500, {t['errors']} other errors, {t['dropped']} dropped, {t['timeouts']} timed out")
        return lines


METHOD_NOTE = ("closed-loop ramp: each virtual user sends the next request when the last one is answered; "
               "latency measured by the client (connection kept alive)")


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(float(v), nd)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _step_json(s: StepResult) -> dict[str, Any]:
    d = asdict(s)
    for k, v in d.items():
        if isinstance(v, float):
            d[k] = round(v, 4)
    return d


# -- payloads ------------------------------------------------------------------------------------
def payload_from_file(path: str | os.PathLike) -> Payload:
    from optkit.common.fileio import require_file

    p = require_file(path, "payload file")
    data = p.read_bytes()
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{p}: not a readable .npy array ({exc})") from None
        return Payload(data, "application/x-npy", f".npy {p.name}")
    if suffix == ".json":
        try:
            json.loads(data)
        except ValueError as exc:
            raise InputError(f"{p}: not valid JSON ({exc})") from None
        return Payload(data, "application/json", f"JSON {p.name}")
    if suffix in AUDIO_TYPES:
        return Payload(data, AUDIO_TYPES[suffix], f"audio {p.name}")
    raise InputError(f"{p}: payload must be .npy, .json or audio ({', '.join(AUDIO_TYPES)})")


def random_payload(shape: Sequence[int], dtype: str = "float32", seed: int = 0) -> Payload:
    x = np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)
    buf = io.BytesIO()
    np.save(buf, x)
    return Payload(buf.getvalue(), "application/x-npy",
                   f"seeded random {dtype} {tuple(shape)} as .npy ({len(buf.getvalue())} bytes)")


def payload_for_server(metadata: dict[str, Any], seed: int = 0) -> Payload:
    """A random input shaped like the served model's (from GET /metadata)."""
    spec = metadata.get("input") or {}
    shape = spec.get("shape") or []
    if not shape or any(d is None for d in shape[1:]):
        raise InputError("the server did not report a fixed input shape; pass --payload FILE")
    return random_payload((1, *shape[1:]), str(spec.get("dtype", "float32")), seed)


def parse_lengths(text: str) -> list[int]:
    """``--lengths 100,241,600``: positive whole numbers, comma-separated."""
    try:
        out = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise InputError(f"--lengths {text!r}: give whole numbers separated by commas, e.g. 100,241,600") from None
    if not out or min(out) < 1:
        raise InputError(f"--lengths {text!r}: give positive whole numbers separated by commas, e.g. 100,241,600")
    return out


def read_lengths_file(path: str | os.PathLike) -> list[int]:
    """``--lengths-file``: one positive whole number a line (blank lines and ``#`` comments skipped)."""
    from optkit.common.fileio import require_file

    p = require_file(path, "lengths file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: cannot read it as text ({exc})") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.isdigit() or int(line) < 1:
            raise InputError(f"{p}:{i}: {line!r} is not a positive whole number (one length a line)")
        out.append(int(line))
    if not out:
        raise InputError(f"{p}: no lengths in it (one positive whole number a line)")
    return out


def length_mix(metadata: dict[str, Any], lengths: Sequence[int], seed: int = 0) -> LengthMix:
    """Bodies for each distinct length (seeded random .npy of the served model's sample shape with the
    time axis at that length), every length checked against ``/metadata`` ``input.length_ranges``."""
    spec = metadata.get("input") or {}
    shape = list(spec.get("shape") or [])
    ranges = spec.get("length_ranges") or []
    if not shape or not ranges:
        raise InputError("the server's model has no dynamic length axis (no input.length_ranges in /metadata); "
                         "--lengths needs one")
    if len(ranges) != 1:
        raise InputError(f"the server's model has {len(ranges)} dynamic length axes; --lengths sets one")
    axis, lo, hi = int(ranges[0]["axis"]), int(ranges[0]["min"]), int(ranges[0]["max"])
    outside = sorted({n for n in lengths if not lo <= n <= hi})
    if outside:
        raise InputError(f"length {', '.join(map(str, outside))} is outside the served model's length range "
                         f"{lo}..{hi} (axis {axis})")
    dims = [1, *shape[1:]]
    payloads = {}
    for n in sorted(set(lengths)):
        dims[axis] = n
        if any(d is None for d in dims):
            raise InputError(f"the server reported another dynamic dimension besides axis {axis}: {shape}")
        p = random_payload(dims, str(spec.get("dtype", "float32")), seed + n)
        payloads[n] = Payload(p.body, p.content_type, p.description, length=n)
    return LengthMix(payloads, lengths, seed)


# -- running -------------------------------------------------------------------------------------
class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.status: dict[str, int] = {}
        self.shed = self.errors = self.dropped = self.timeouts = self.sent = 0
        self.last_latency = 0.0

    def add(self, kind: str, status: int | None, latency: float, server_ms: float | None = None) -> None:
        self.sent += 1
        self.last_latency = latency
        if status is not None:
            self.status[str(status)] = self.status.get(str(status), 0) + 1
        if kind == "ok":
            self.latencies.append(latency)
            if server_ms is not None:
                self.server_ms.append(server_ms)
        elif kind == "shed":
            self.shed += 1
        elif kind == "timeout":
            self.timeouts += 1
        elif kind == "dropped":
            self.dropped += 1
        else:
            self.errors += 1

    def result(self, concurrency: int | None, rate: float | None, duration: float) -> StepResult:
        ms = np.asarray(self.latencies, dtype=np.float64) * 1e3
        pct = np.percentile(ms, [50, 90, 99]) if ms.size else [None] * 3
        return StepResult(
            concurrency=concurrency, offered_rate=rate, duration_s=duration, sent=self.sent, ok=int(ms.size),
            shed=self.shed, errors=self.errors, dropped=self.dropped, timeouts=self.timeouts,
            status_counts=dict(sorted(self.status.items())), qps=float(ms.size / duration) if duration > 0 else 0.0,
            min_ms=float(ms.min()) if ms.size else None,
            p50_ms=None if pct[0] is None else float(pct[0]), p90_ms=None if pct[1] is None else float(pct[1]),
            p99_ms=None if pct[2] is None else float(pct[2]), max_ms=float(ms.max()) if ms.size else None,
            server_ms_p50=float(np.median(self.server_ms)) if self.server_ms else None,
            server_ms_p99=float(np.percentile(self.server_ms, 99)) if self.server_ms else None,
            p99_all_ms=self.p99_all_ms(ms),
        )

    def p99_all_ms(self, ms: np.ndarray) -> float | None:
        failed = self.sent - int(ms.size)
        if self.sent == 0:
            return None
        every = np.concatenate([ms, np.full(failed, np.inf)])
        # inverted_cdf: an observed value (no interpolation towards inf), the one 99 % of requests do not exceed
        return float(np.percentile(every, 99, method="inverted_cdf"))


async def _one_request(session: Any, url: str, source: Payload | LengthMix, timeout: float, rec: _Recorder) -> str:
    if isinstance(source, LengthMix):
        payload = source.draw()
        kind = await _send(session, url, payload, timeout, rec)
        source.record(int(payload.length or 0), kind, rec.last_latency)
        return kind
    return await _send(session, url, source, timeout, rec)


async def _send(session: Any, url: str, payload: Payload, timeout: float, rec: _Recorder) -> str:
    aiohttp = lazy_import("aiohttp", extra="serve")
    headers = {"Content-Type": payload.content_type}

    async def exchange() -> tuple[int, bytes]:
        async with session.post(url, data=payload.body, headers=headers, allow_redirects=False) as r:
            return r.status, await r.read()

    t0 = time.perf_counter()
    try:
        status, body = await asyncio.wait_for(exchange(), timeout)  # bounds the whole exchange
    except asyncio.TimeoutError:  # aiohttp's own timeouts are TimeoutErrors too
        rec.add("timeout", None, time.perf_counter() - t0)
        return "timeout"
    except aiohttp.ClientError:  # reset, refused, closed without an answer, broken payload
        rec.add("dropped", None, time.perf_counter() - t0)
        return "dropped"
    latency = time.perf_counter() - t0
    if status == 200:
        server_ms = None
        try:
            server_ms = float(json.loads(body)["latency_ms"])
        except (ValueError, TypeError, KeyError):
            pass
        rec.add("ok", 200, latency, server_ms)
        return "ok"
    kind = "shed" if status == 503 else "error"
    rec.add(kind, status, latency)
    return kind


def _client(concurrency: int, timeout: float) -> Any:
    """aiohttp's client: measured here at ~0.3 ms of CPU per request against httpx's 1.3-2 ms, which
    matters when the generator shares a 2-core machine with the server it measures. One keep-alive
    connection per virtual user; no proxy from the environment (trust_env=False)."""
    aiohttp = lazy_import("aiohttp", extra="serve")
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                 timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False)


async def closed_loop_step(url: str, payload: Payload | LengthMix, concurrency: int, seconds: float, timeout: float) -> StepResult:
    """``concurrency`` users sending back-to-back for ``seconds`` (each request bounded by ``timeout``)."""
    rec = _Recorder()
    with frozen_gc():  # no generator gen-2 pause recorded against the server
        return await _closed_loop(url, payload, concurrency, seconds, timeout, rec)


async def _closed_loop(url: str, payload: Payload | LengthMix, concurrency: int, seconds: float, timeout: float,
                       rec: _Recorder) -> StepResult:
    async with _client(concurrency, timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + seconds

        async def user() -> None:
            while loop.time() < deadline:
                kind = await _one_request(client, url, payload, timeout, rec)
                if kind == "shed":
                    await asyncio.sleep(SHED_BACKOFF_S)

        await asyncio.gather(*(user() for _ in range(concurrency)))
        duration = loop.time() - t0
    return rec.result(concurrency, None, duration)


async def open_loop_step(url: str, payload: Payload | LengthMix, rate: float, seconds: float, timeout: float,
                         max_outstanding: int = 256) -> StepResult:
    """Requests started at a fixed rate (evenly spaced) for ``seconds``, whatever the answers do."""
    if not (rate > 0 and math.isfinite(rate)):
        raise InputError(f"rate must be a positive number of requests per second, got {rate}")
    rec = _Recorder()
    with frozen_gc():  # no generator gen-2 pause recorded against the server
        return await _open_loop(url, payload, rate, seconds, timeout, max_outstanding, rec)


async def _open_loop(url: str, payload: Payload | LengthMix, rate: float, seconds: float, timeout: float, max_outstanding: int,
                     rec: _Recorder) -> StepResult:
    n = max(1, int(rate * seconds))
    async with _client(max_outstanding, timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one_request(client, url, payload, timeout, rec)))
        await asyncio.gather(*tasks)
        duration = max(loop.time() - t0, n / rate)
    return rec.result(None, rate, duration)


async def _warm_up(url: str, source: Payload | LengthMix, timeout: float) -> None:
    aiohttp = lazy_import("aiohttp", extra="serve")
    bodies = list(source.payloads.values()) if isinstance(source, LengthMix) else [source]
    async with _client(1, timeout) as session:
        for i in range(max(WARMUP_REQUESTS, len(bodies))):
            payload = bodies[i % len(bodies)]
            try:
                async with session.post(url, data=payload.body, headers={"Content-Type": payload.content_type},
                                        allow_redirects=False) as r:
                    status, text = r.status, await r.text()
            except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
                raise OptkitError(f"{url}: no answer to a warm-up request ({type(exc).__name__}: {exc})") from None
            if status != 200:
                raise InputError(f"{url} answered the warm-up request with {status}: {' '.join(text.split())[:300]}")


def fetch_metadata(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    from optkit.serve.server import get_json

    status, data = get_json(f"{base_url}/metadata", timeout)
    if status is None:
        raise OptkitError(f"{base_url}: cannot reach the server ({data})")
    if status != 200:
        raise OptkitError(f"{base_url}/metadata answered {status}; is it an optkit server, and ready?")
    if not isinstance(data, dict):
        raise OptkitError(f"{base_url}/metadata did not answer a JSON object; is it an optkit server?")
    return data


def run_ramp(base_url: str, cfg: RampConfig, payload: Payload | None = None,
             progress: Callable[[str], None] | None = None, environment: dict[str, Any] | None = None,
             lengths: Sequence[int] | None = None, seed: int = 0) -> LoadReport:
    """The whole load test against ``base_url`` (loopback only): warm-up, ramp, optional half-rate step.
    ``lengths``: each request's time-axis length drawn from this list (seeded), checked against the
    served model's range before anything is sent; the report then has latency per length too."""
    base_url = target_url(base_url)
    say = progress or (lambda msg: None)
    server = fetch_metadata(base_url)
    mix = length_mix(server, lengths, seed) if lengths else None
    payload = mix or payload or payload_for_server(server)
    url = f"{base_url}/verify"
    asyncio.run(_warm_up(url, payload, cfg.timeout))
    steps: list[StepResult] = []
    stopped = f"reached the maximum concurrency {cfg.max_concurrency}"
    started = time.monotonic()
    for c in cfg.concurrencies():
        step = asyncio.run(closed_loop_step(url, payload, c, cfg.step_seconds, cfg.timeout))
        steps.append(step)
        say(f"concurrency {c}: {step.qps:.2f} QPS, p50 {_f(step.p50_ms)} ms, p99 {_f(step.p99_ms)} ms, "
            f"503 {step.shed}, errors {step.errors}, dropped {step.dropped}, timeouts {step.timeouts}")
        if step.failed and not cfg.keep_going:
            what = [f"{n} {k}" for k, n in (("timed out", step.timeouts), ("shed with 503", step.shed),
                                            ("failed", step.errors), ("dropped", step.dropped)) if n]
            stopped = f"requests failed at concurrency {c} ({', '.join(what)})"
            break
        if time.monotonic() - started > MAX_TOTAL_SECONDS:
            stopped = f"time limit of {MAX_TOTAL_SECONDS:.0f} s"
            break
    report = LoadReport(base_url, payload.description, cfg, steps, stopped, server,
                        environment if environment is not None else _environment(),
                        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), lengths=mix)
    if cfg.half_rate_check and report.sustained_qps > 0:
        rate = report.sustained_qps / 2
        say(f"half the sustained rate: {rate:.2f} requests/s for {cfg.step_seconds:g} s")
        report.half_rate = asyncio.run(open_loop_step(url, payload, rate, cfg.step_seconds, cfg.timeout))
    return report


def run_interleaved_ramps(base_urls: dict[str, str], cfg: RampConfig, payload: Payload | None = None,
                          progress: Callable[[str], None] | None = None,
                          environment: dict[str, Any] | None = None, lengths: Sequence[int] | None = None,
                          seed: int = 0) -> dict[str, LoadReport]:
    """The ramp of :func:`run_ramp` on several servers at once, step by step in turn: concurrency c on
    the first, then on the second, ..., then c + step on the first. Only one server is loaded at a
    time, and slow drifts of a shared machine's load hit every server alike, so their ratios stay fair
    (the servers' own idle threads sleep: ONNX Runtime's spinning is off). ``lengths``: as in
    :func:`run_ramp`, the same seeded draw for every server."""

    say = progress or (lambda msg: None)
    env = environment if environment is not None else _environment()
    urls = {label: target_url(url) for label, url in base_urls.items()}
    servers = {label: fetch_metadata(url) for label, url in urls.items()}
    mixes = {label: length_mix(md, lengths, seed) for label, md in servers.items()} if lengths else {}
    payloads = {label: mixes.get(label) or payload or payload_for_server(servers[label]) for label in urls}
    for label, url in urls.items():
        asyncio.run(_warm_up(f"{url}/verify", payloads[label], cfg.timeout))
    steps: dict[str, list[StepResult]] = {label: [] for label in urls}
    stopped = {label: f"reached the maximum concurrency {cfg.max_concurrency}" for label in urls}
    active = list(urls)
    started = time.monotonic()
    for c in cfg.concurrencies():
        for label in list(active):
            step = asyncio.run(closed_loop_step(f"{urls[label]}/verify", payloads[label], c, cfg.step_seconds,
                                                cfg.timeout))
            steps[label].append(step)
            say(f"{label}: concurrency {c}: {step.qps:.2f} QPS, p50 {_f(step.p50_ms)} ms, p99 {_f(step.p99_ms)} ms, "
                f"503 {step.shed}, errors {step.errors}, dropped {step.dropped}, timeouts {step.timeouts}")
            if step.failed and not cfg.keep_going:
                stopped[label] = f"requests failed at concurrency {c}"
                active.remove(label)
        if not active or time.monotonic() - started > MAX_TOTAL_SECONDS:
            break
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    reports = {label: LoadReport(urls[label], payloads[label].description, cfg, steps[label], stopped[label],
                                 servers[label], env, created, lengths=mixes.get(label)) for label in urls}
    if cfg.half_rate_check:
        for label, rep in reports.items():
            if rep.sustained_qps > 0:
                rate = rep.sustained_qps / 2
                say(f"{label}: half the sustained rate, {rate:.2f} requests/s for {cfg.step_seconds:g} s")
                rep.half_rate = asyncio.run(open_loop_step(f"{urls[label]}/verify", payloads[label], rate,
                                                           cfg.step_seconds, cfg.timeout))
    return reports


def _environment() -> dict[str, Any]:
    from optkit.runtime import sysinfo

    env = sysinfo.collect()
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return env


# -- compare: one server per artifact, one after the other -------------------------------------
@dataclass
class CompareRow:
    artifact: str
    provider: str
    report: LoadReport | None
    error: str | None = None
    variant: str = ""  # the serving variant's own optkit serve flags ("" = none beyond the common ones)

    @property
    def key(self) -> str:
        return f"{Path(self.artifact).name} [{self.provider}]" + (f" {self.variant}" if self.variant else "")


def target_url(url: str) -> str:
    """A URL the load generator may target, or one InputError line: http(s), a loopback host, a
    port that is a number in range (urllib raises ValueError for ``:notaport``, ``[::1``)."""
    from urllib.parse import urlsplit

    from optkit.serve.server import require_loopback_url

    if any(ord(c) < 33 or ord(c) == 127 for c in url):  # urllib keeps them; aiohttp fails deep inside
        raise InputError(f"{url!r} is not a valid URL (it contains white space or a control character)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise InputError(f"{url!r} is not a valid URL ({exc})") from None
    return require_loopback_url(url)


# compare_services picks the address and port of the servers it starts; flags that change them
# would serve on another interface than the 127.0.0.1 that compare promises.
RESERVED_SERVE_FLAGS = ("--host", "--port")


def check_serve_args(args: Sequence[str], what: str = "--serve-arg") -> list[str]:
    for a in args:
        flag = a.split("=", 1)[0]
        if flag in RESERVED_SERVE_FLAGS:
            raise InputError(f"{what} {a}: --compare serves on 127.0.0.1 on a port it picks; {flag} cannot be set")
    return list(args)


def parse_variant(text: str) -> list[str]:
    """A serving variant's flags, split like a shell command ("--max-batch 8 --streams 2")."""
    import shlex

    try:
        return check_serve_args(shlex.split(text), "--variant")
    except ValueError as exc:
        raise InputError(f"serving variant {text!r}: {exc}") from None


def plan_rows(artifacts: Sequence[str | os.PathLike], providers: Sequence[str], serve_args: Sequence[str] = (),
              variants: Sequence[str] = ("",)) -> tuple[list[CompareRow], dict[str, list[str]]]:
    """The rows of a --compare run (artifact x provider x serving variant; an engine runs on
    TensorRT only) and each row's optkit serve flags, by row key."""
    parsed = {v: parse_variant(v) for v in dict.fromkeys(variants or ("",))}
    plan: list[CompareRow] = []
    args: dict[str, list[str]] = {}
    for art in artifacts:
        for provider in (["tensorrt"] if Path(art).suffix.lower() in (".engine", ".plan", ".trt") else providers):
            for flags in parsed.values():
                row = CompareRow(str(art), provider, None, variant=" ".join(flags))
                plan.append(row)
                args[row.key] = [*serve_args, *flags]
    return plan, args


def compare_services(artifacts: Sequence[str | os.PathLike], providers: Sequence[str], cfg: RampConfig,
            serve_args: Sequence[str] = (), payload: Payload | None = None,
            progress: Callable[[str], None] | None = None, startup_timeout: float = 300.0,
            interleave: bool = False, variants: Sequence[str] = ("",), lengths: Sequence[int] | None = None,
            seed: int = 0) -> list[CompareRow]:
    """Start ``optkit serve`` on 127.0.0.1 for each artifact, provider and serving variant in turn,
    ramp each, stop it. A server that cannot start (e.g. a GPU provider absent here) is a row with
    its reason. ``serve_args`` go to every server; each of ``variants`` (flags in one string, ""
    for none) adds its own, one row per variant: e.g. none vs ``--max-batch 8`` vs ``--streams 2``.

    ``interleave``: start every server first, then ramp them step by step in turn
    (:func:`run_interleaved_ramps`), so a shared machine's load drifts hit all of them alike.
    ``lengths`` (a model with a dynamic time axis): every row draws its requests' lengths from this
    list with the same ``seed``, so each row's n-th request has the same length."""
    from optkit.serve.server import ServerProcess

    say = progress or (lambda msg: None)
    env = _environment()
    plan, args = plan_rows(artifacts, providers, serve_args, variants)
    if interleave:
        return _compare_interleaved(plan, args, cfg, payload, say, startup_timeout, env, lengths, seed)
    for row in plan:
        say(f"serving {row.key}")
        try:
            with ServerProcess(row.artifact, row.provider, args[row.key], startup_timeout=startup_timeout) as srv:
                row.report = run_ramp(srv.url, cfg, payload, progress, environment=env, lengths=lengths, seed=seed)
        except OptkitError as exc:
            say(f"{row.key}: {exc}")
            row.error = " ".join(str(exc).split())
    return plan


def _compare_interleaved(plan: list[CompareRow], args: dict[str, list[str]], cfg: RampConfig,
                         payload: Payload | None, say: Callable[[str], None], startup_timeout: float,
                         env: dict[str, Any], lengths: Sequence[int] | None = None, seed: int = 0) -> list[CompareRow]:
    import contextlib

    from optkit.serve.server import ServerProcess

    urls: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        for row in plan:
            say(f"starting a server for {row.key}")
            try:
                srv = stack.enter_context(ServerProcess(row.artifact, row.provider, args[row.key],
                                                        startup_timeout=startup_timeout))
            except OptkitError as exc:
                row.error = " ".join(str(exc).split())
                continue
            urls[row.key] = srv.url
        reports = run_interleaved_ramps(urls, cfg, payload, say, env, lengths, seed) if urls else {}
    for row in plan:
        row.report = reports.get(row.key, row.report)
    return plan


def compare_json(rows: Sequence[CompareRow]) -> dict[str, Any]:
    return {
        "optkit_loadtest_version": LOADTEST_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": METHOD_NOTE + "; one server at a time on 127.0.0.1, started by optkit serve",
        "rows": [
            {"artifact": Path(r.artifact).name, "provider": r.provider, "variant": r.variant, "error": r.error,
             "precision": (r.report.server.get("precision") if r.report else None),
             "provider_in_use": (r.report.server.get("provider_in_use") if r.report else None),
             "summary": r.report.summary() if r.report else None,
             "run": r.report.to_json() if r.report else None}
            for r in rows
        ],
    }


def compare_lines(rows: Sequence[CompareRow]) -> list[str]:
    first = next((r.report for r in rows if r.report and r.report.saturation_qps > 0), None)
    width = max([len("artifact")] + [len(Path(r.artifact).name) for r in rows])
    variants = any(r.variant for r in rows)  # a serving column only when variants were compared
    vwidth = max([len("serving")] + [len(r.variant or "-") for r in rows])
    vhead = f"{'serving':<{vwidth}}  " if variants else ""
    lines = [f"{'artifact':<{width}}  {'provider':<9}  {vhead}{'precision':<9}  {'min ms':>8}  {'sat. QPS':>9}  "
             f"{'x QPS':>6}  {'at c':>4}  {'500s':>4}  {'dropped':>7}  {'timeouts':>8}"]
    for r in rows:
        name = Path(r.artifact).name
        vcol = f"{(r.variant or '-'):<{vwidth}}  " if variants else ""
        if r.report is None:
            lines.append(f"{name:<{width}}  {r.provider:<9}  {vcol}not run: {r.error}")
            continue
        rep, t = r.report, r.report.totals()
        ratio = rep.saturation_qps / first.saturation_qps if first else float("nan")
        sat = rep.saturation
        lines.append(f"{name:<{width}}  {r.provider:<9}  {vcol}{str(rep.server.get('precision', '?')):<9}  "
                     f"{_f(rep.min_latency_ms):>8}  {rep.saturation_qps:>9.2f}  {ratio:>5.2f}x  "
                     f"{(sat.concurrency if sat else '-'):>4}  {t['status_500']:>4}  {t['dropped']:>7}  {t['timeouts']:>8}")
    return lines + per_length_lines([(r.key, r.report.lengths) for r in rows if r.report and r.report.lengths])


def per_length_lines(mixes: Sequence[tuple[str, LengthMix]], what: str = "every step",
                     with_mix: bool = True) -> list[str]:
    """p99 per length (bucket) of several rows side by side, with the mix they drew from."""
    if not mixes:
        return []
    heads = [_bucket_text(lo, hi) for lo, hi in mixes[0][1].buckets]
    width = max(len(k) for k, _ in mixes)
    lines = ["", f"p99 ms per length ({what}; the same seeded draw in every row):",
             f"{'':<{width}}  " + "  ".join(f"{h:>9}" for h in heads)]
    for key, mix in mixes:
        lines.append(f"{key:<{width}}  " + "  ".join(f"{_f(r['p99_ms']):>9}" for r in mix.rows()))
    return lines + ([mixes[0][1].mix_line()] if with_mix else [])


# -- HTML ------------------------------------------------------------------------------------------
def _svg_lines(series: dict[str, list[tuple[float, float]]], x_label: str, y_label: str,
               width: int = 460, height: int = 260) -> str:
    """A small line plot (inline SVG, no library: the report must be one self-contained file)."""
    pad_l, pad_r, pad_t, pad_b = 52, 12, 14, 36
    pts = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return "<p>(no data)</p>"
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_hi = max(p[1] for p in pts) * 1.1 or 1.0
    x_span = (x_hi - x_lo) or 1.0

    def sx(v: float) -> float:
        return pad_l + (v - x_lo) / x_span * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return height - pad_b - v / y_hi * (height - pad_t - pad_b)

    colours = ["#36c", "#d33", "#2a2", "#a3c", "#e80"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
           f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
           'fill="#fafafa" stroke="#999"/>']
    for i in range(5):
        v = y_hi * i / 4
        out.append(f'<text x="{pad_l - 4}" y="{sy(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    for x in sorted({p[0] for p in pts}):
        out.append(f'<text x="{sx(x):.1f}" y="{height - pad_b + 14}" font-size="10" text-anchor="middle">{x:g}</text>')
    for i, (name, s) in enumerate(series.items()):
        good = [(x, y) for x, y in s if y is not None and math.isfinite(y)]
        colour = colours[i % len(colours)]
        if good:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in good]
        out.append(f'<text x="{pad_l + 8 + 110 * i}" y="{pad_t + 12}" font-size="11" fill="{colour}">'
                   f'{html.escape(name)}</text>')
    out += [f'<text x="{(width + pad_l) / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
            f'{html.escape(x_label)}</text>',
            f'<text x="12" y="{height / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {height / 2})">'
            f'{html.escape(y_label)}</text>', "</svg>"]
    return "".join(out)


def _report_section(rep: LoadReport, title: str) -> str:
    ramp = rep.ramp
    lat = _svg_lines({k: [(s.concurrency, getattr(s, f"{k}_ms")) for s in ramp] for k in ("min", "p50", "p99")},
                     "concurrency (virtual users)", "latency ms")
    qps = _svg_lines({"QPS (200)": [(s.concurrency, s.qps) for s in ramp],
                      "503/s": [(s.concurrency, s.shed / s.duration_s) for s in ramp]},
                     "concurrency (virtual users)", "requests per second")
    rows = "".join(
        f"<tr><td>{html.escape(s.load)}</td><td>{s.sent}</td><td>{s.ok}</td><td>{s.qps:.2f}</td><td>{_f(s.min_ms)}</td>"
        f"<td>{_f(s.p50_ms)}</td><td>{_f(s.p90_ms)}</td><td>{_f(s.p99_ms)}</td><td>{s.shed}</td><td>{s.errors}</td>"
        f"<td>{s.dropped}</td><td>{s.timeouts}</td></tr>"
        for s in rep.steps + ([rep.half_rate] if rep.half_rate else []))
    srv = rep.server
    facts = (f"{html.escape(str(srv.get('artifact', '?')))} · {html.escape(str(srv.get('precision', '?')))} · "
             f"{html.escape(str(srv.get('provider_in_use', '?')))} · sha256 {html.escape(str(srv.get('sha256', ''))[:16])}…")
    summary = "<br>".join(html.escape(line) for line in rep.summary_lines())
    return (f"<h2>{html.escape(title)}</h2><p>{facts}</p><p>{summary}</p>"
            f"<div class='plots'>{lat}{qps}</div>"
            "<table><tr><th>load</th><th>sent</th><th>ok</th><th>QPS</th><th>min ms</th><th>p50 ms</th><th>p90 ms</th>"
            f"<th>p99 ms</th><th>503</th><th>errors</th><th>dropped</th><th>timeouts</th></tr>{rows}</table>"
            + (_lengths_section(rep.lengths) if rep.lengths else ""))


def _lengths_section(mix: LengthMix) -> str:
    """Latency per length (bucket) over every step: a plot against the length and the table."""
    data = mix.rows()
    plot = _svg_lines({k: [(r["length"], r[f"{k}_ms"]) for r in data] for k in ("min", "p50", "p99")},
                      "request length (lowest of its row)", "latency ms")
    rows = "".join(f"<tr><td>{html.escape(_bucket_text(r['length'], r['max_length']))}</td><td>{r['sent']}</td>"
                   f"<td>{r['count']}</td><td>{r['failed']}</td><td>{_f(r['min_ms'])}</td><td>{_f(r['p50_ms'])}</td>"
                   f"<td>{_f(r['p99_ms'])}</td></tr>" for r in data)
    return (f"<h3>Per length (every step)</h3><p>{html.escape(mix.mix_line())}</p><div class='plots'>{plot}</div>"
            "<table class='per-length'><tr><th>length</th><th>sent</th><th>ok</th><th>failed</th><th>min ms</th>"
            f"<th>p50 ms</th><th>p99 ms</th></tr>{rows}</table>")


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1000px}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.plots svg{margin-right:1em}")


def render_html(reports: Sequence[tuple[str, LoadReport]], compare_table: Sequence[str] | None = None) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>optkit load test</title><style>{_STYLE}"
             "</style></head><body><h1>optkit load test</h1>", f"<p>{html.escape(METHOD_NOTE)}.</p>"]
    if compare_table:
        parts.append("<pre>" + html.escape("\n".join(compare_table)) + "</pre>")
    for title, rep in reports:
        parts.append(_report_section(rep, title))
    parts.append("</body></html>")
    return "".join(parts)
