"""How many nodes a load needs: ``optkit loadtest --slo-p99 MS --target-rps N``.

For one service (a URL) or each artifact x runtime x serving variant (``--compare``), the highest
request rate whose p99 latency stays under the SLO, then

    nodes needed = ceil(target rate / that rate x (1 + headroom)).

The rate is found with open-loop fixed-rate steps (``loadtest.open_loop_step``: requests start at
evenly spaced times whatever the answers do, as independent users' requests arrive; a closed loop
would slow down with the server and hide its queueing):

1. bracket: from a start rate (half the rate one back-to-back user reaches, unless given), double
   while a step passes, halve while it fails, until a passing and a failing rate are known;
2. bisect between them until they are within ``tolerance`` of each other;
3. confirm: repeat the step at the highest passing rate. When the repeat fails, that rate counts as
   failing and the search goes on below it (down to the next rate that passed).

Every step is bounded (``step_seconds`` plus the request timeout), and so is the whole search
(``max_trials`` steps, ``max_seconds``). A step passes when the client-measured p99 over every
request sent is at most the SLO, a failed request (503, other non-200, dropped, timed out) counting
as infinitely slow (so more than 1 % failed fails the step), and the service answered at least
``ANSWERED_SHARE`` of the offered rate (a generator or server that cannot keep the rate fails the
step instead of passing a slower one).

perf_analyzer's ``--latency-threshold`` search and model-analyzer's constraints find such a rate per
configuration; neither turns it into a node count for a target load, which is the question here.
The search is pure (:func:`find_capacity` takes the measurement as a function), so it is tested
with a fake service; :func:`capacity_at_url` and :func:`capacity_services` measure real ones.
"""
from __future__ import annotations

import asyncio
import datetime as _dt
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError, OptkitError
from optkit.serve import loadtest as lt

CAPACITY_FORMAT_VERSION = 1
ANSWERED_SHARE = 0.95  # a passing step answered at least this share of the offered rate (its schedule kept)
PROBE_SECONDS = 2.0  # the back-to-back single-user step that picks the start rate
METHOD = ("open-loop fixed-rate steps (requests started at evenly spaced times); bracket by doubling/halving, "
          "bisection to the tolerance, the found rate confirmed by a repeat; p99 measured by the client")


@dataclass(frozen=True)
class CapacityConfig:
    slo_p99_ms: float
    target_rps: float
    headroom: float = 0.3
    step_seconds: float = 5.0
    timeout: float = 10.0
    start_rate: float | None = None  # None: half the rate of one back-to-back user (a short probe)
    max_rate: float = 1000.0  # the search's ceiling: a service passing here is reported "at least"
    min_rate: float = 0.5  # below this, "no rate met the SLO"
    tolerance: float = 0.05  # bisection stops when (failing - passing) <= tolerance x passing
    max_trials: int = 12
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        def finite(v: float) -> bool:
            return isinstance(v, (int, float)) and math.isfinite(v)

        if not finite(self.slo_p99_ms) or self.slo_p99_ms <= 0:
            raise InputError(f"--slo-p99 must be a latency in milliseconds > 0, got {self.slo_p99_ms}")
        if not finite(self.target_rps) or self.target_rps <= 0:
            raise InputError(f"--target-rps must be a rate in requests per second > 0, got {self.target_rps}")
        if not finite(self.headroom) or not 0 <= self.headroom <= 10:
            raise InputError(f"--headroom must be a fraction in [0, 10] (0.3 = 30 %), got {self.headroom}")
        if not finite(self.tolerance) or not 0 < self.tolerance < 1:
            raise InputError(f"--tolerance must be in (0, 1), got {self.tolerance}")
        if not (finite(self.max_rate) and finite(self.min_rate) and 0 < self.min_rate < self.max_rate):
            raise InputError(f"need 0 < minimum rate < --max-rate, got {self.min_rate} and {self.max_rate}")
        if self.start_rate is not None and not (finite(self.start_rate)
                                                and self.min_rate <= self.start_rate <= self.max_rate):
            raise InputError(f"--start-rate must be in [{self.min_rate:g}, {self.max_rate:g}] requests/s, "
                             f"got {self.start_rate}")
        if not 3 <= self.max_trials <= 100:
            raise InputError(f"--max-trials must be in [3, 100], got {self.max_trials}")
        if not (0 < self.step_seconds <= 600 and 0 < self.timeout <= 600 and 0 < self.max_seconds):
            raise InputError("step seconds and timeout must be in (0, 600]")


# -- the answer ------------------------------------------------------------------------------------
def nodes_needed(target_rps: float, rate: float, headroom: float) -> int | None:
    """ceil(target / rate x (1 + headroom)); None when no rate met the SLO (``rate`` <= 0): no
    number of such nodes carries the load. Rounded to 9 significant digits before the ceiling, so
    that 100/s on nodes of 130/s with 30 % headroom is 1 node, not 2 by a floating-point hair."""
    if not (rate > 0 and math.isfinite(rate)):
        return None
    need = target_rps * (1 + headroom) / rate
    return max(1, math.ceil(float(f"{need:.9g}")))


def answer_text(target_rps: float, rate: float, headroom: float, confirmed: bool = True) -> str:
    n = nodes_needed(target_rps, rate, headroom)
    if n is None:
        return "no answer: no tested rate kept p99 under the SLO, so no number of these nodes carries the load"
    return (f"{n} node{'s' if n != 1 else ''} for {target_rps:g} requests/s at {rate:.4g}/s each with "
            f"{headroom:.0%} headroom" + ("" if confirmed else " (rate not confirmed by a repeat)"))


# -- the search (pure: the measurement is a function) ---------------------------------------------
@dataclass
class Trial:
    rate: float
    purpose: str  # "bracket", "bisect", "confirm"
    passed: bool
    why: str
    step: lt.StepResult | None = None
    lengths: lt.LengthMix | None = None  # --lengths: what this step answered per length

    def to_json(self) -> dict[str, Any]:
        s = self.step
        return {**({"per_length": self.lengths.rows()} if self.lengths else {}),"rate": round(self.rate, 4), "purpose": self.purpose, "passed": self.passed, "why": self.why,
                "p99_ms": None if s is None or s.p99_ms is None else round(s.p99_ms, 3),
                "p50_ms": None if s is None or s.p50_ms is None else round(s.p50_ms, 3),
                "answered_qps": None if s is None else round(s.qps, 3), "sent": None if s is None else s.sent,
                "failed": None if s is None else s.failed}


@dataclass
class CapacitySearch:
    rate: float  # the highest rate that kept p99 under the SLO (confirmed when ``confirmed``); 0: none
    confirmed: bool
    stopped: str
    trials: list[Trial] = field(default_factory=list)
    # confirmed, but no failing rate within the tolerance above it (the maximum rate passed, or the
    # step budget ended): the service may take more, so the node count may be high, never low
    lower_bound: bool = False
    start_rate: float | None = None
    lengths: lt.LengthMix | None = None  # --lengths: the mix every step drew from (the same seeded sequence)

    @property
    def p99_ms(self) -> float | None:
        """p99 of the last passing step at the answered rate."""
        at = self._at_rate()
        return at.step.p99_ms if at else None

    def per_length(self) -> list[dict[str, Any]] | None:
        """Latency per length (bucket) of the last passing step at the answered rate."""
        at = self._at_rate()
        return at.lengths.rows() if at and at.lengths else None

    def _at_rate(self) -> Trial | None:
        at = [t for t in self.trials if t.passed and t.rate == self.rate and t.step is not None]
        return at[-1] if at else None


def judge(step: lt.StepResult, rate: float, slo_p99_ms: float) -> tuple[bool, str]:
    """Whether one fixed-rate step kept the SLO, and why (one phrase).

    A p99 SLO promises that 99 % of requests are answered within it; a failed request (503, other
    error, dropped, timed out) is one that was not, so with failures the p99 is taken over every
    request sent, a failed one counting as infinitely slow (``StepResult.p99_all_ms``): more than
    1 % failed fails the step, a single shed request among hundreds does not. (Failing a step on any
    one failure made the answer hinge on one 503 near the knee: two runs on a quiet machine gave
    different node counts for every row.)"""
    failures = ", ".join(f"{n} {k}" for k, n in (("timed out", step.timeouts), ("shed with 503", step.shed),
                                                   ("failed", step.errors), ("dropped", step.dropped)) if n)
    if not step.ok or step.p99_ms is None:
        return False, failures or "no request answered"
    p99 = step.p99_ms
    if step.failed:
        p99 = step.p99_all_ms if step.p99_all_ms is not None else math.inf
        if not math.isfinite(p99):
            return False, f"{failures} ({step.failed / max(step.sent, 1):.1%} of {step.sent}: a p99 allows 1 %)"
    # The rate the step really ran at: its requests over its duration less the last answer's wait
    # (at most the slowest latency), so a short step is not failed for its tail; a generator that
    # fell behind its schedule, or a server that stalled it, stretches the duration.
    kept = step.ok / max(step.duration_s - (step.max_ms or 0.0) / 1e3, 1e-9)
    if kept < ANSWERED_SHARE * rate:
        return False, f"answered {kept:.4g}/s of {rate:.4g}/s offered"
    also = f"; {failures}, within the 1 % a p99 allows" if step.failed else ""
    if p99 > slo_p99_ms:
        return False, f"p99 {p99:.2f} ms > {slo_p99_ms:g} ms{also}"
    return True, f"p99 {p99:.2f} ms <= {slo_p99_ms:g} ms{also}"


def find_capacity(measure: Callable[[float], lt.StepResult | tuple[lt.StepResult, lt.LengthMix]],
                  cfg: CapacityConfig, start_rate: float,
                  progress: Callable[[str], None] | None = None,
                  clock: Callable[[], float] = time.monotonic) -> CapacitySearch:
    """The highest rate ``measure(rate)`` keeps p99 <= the SLO at (see the module docstring).
    Bounded by ``cfg.max_trials`` measurements and ``cfg.max_seconds``. ``measure`` returns the
    step, or the step and the length mix it drew from (kept with the trial)."""
    say = progress or (lambda msg: None)
    started = clock()
    trials: list[Trial] = []
    lo: float | None = None  # the highest rate believed to pass
    hi: float | None = None  # the lowest rate known to fail
    start_rate = min(max(start_rate, cfg.min_rate), cfg.max_rate)

    def trial(rate: float, purpose: str) -> bool:
        step, mix = measured if isinstance(measured := measure(rate), tuple) else (measured, None)
        ok, why = judge(step, rate, cfg.slo_p99_ms)
        trials.append(Trial(rate, purpose, ok, why, step, mix))
        say(f"{purpose} {len(trials)}/{cfg.max_trials}: {rate:.4g} requests/s: {'pass' if ok else 'FAIL'} ({why})")
        return ok

    def result(confirmed: bool, stopped: str, lower_bound: bool = False) -> CapacitySearch:
        return CapacitySearch(lo if lo is not None else 0.0, confirmed, stopped, trials, lower_bound=lower_bound,
                              start_rate=start_rate)

    while True:
        if len(trials) >= cfg.max_trials or clock() - started >= cfg.max_seconds:
            why = (f"{cfg.max_trials} steps" if len(trials) >= cfg.max_trials else f"{cfg.max_seconds:g} s")
            return result(False, f"search budget spent ({why}) before the rate was confirmed")
        last = len(trials) >= cfg.max_trials - 1  # keep the last step for the confirmation
        if lo is None:  # nothing passes yet: start, then halve
            rate = start_rate if hi is None else hi / 2
            if rate < cfg.min_rate:
                return result(False, f"no rate down to {cfg.min_rate:g}/s kept p99 under {cfg.slo_p99_ms:g} ms")
            purpose = "bracket"
        elif hi is None and lo < cfg.max_rate and not last:  # everything passed so far: double
            rate, purpose = min(lo * 2, cfg.max_rate), "bracket"
        elif hi is not None and hi - lo > cfg.tolerance * lo and not last:
            rate, purpose = (lo + hi) / 2, "bisect"
        else:  # bracket closed, the ceiling passed or the budget nearly spent: repeat the best passing rate
            closed = hi is not None and hi - lo <= cfg.tolerance * lo
            if trial(lo, "confirm"):
                if closed:
                    return result(True, "confirmed")
                return result(True, "confirmed; a lower bound: " + (
                    f"the search's maximum rate {cfg.max_rate:g}/s passed" if hi is None and lo >= cfg.max_rate
                    else f"the step budget ended before a failing rate within {cfg.tolerance:.0%} was found"),
                    lower_bound=True)
            hi = lo  # it failed on the repeat: it counts as failing, search below it
            below = [t.rate for t in trials if t.passed and t.rate < hi]
            lo = max(below) if below else None
            continue
        if trial(rate, purpose):
            lo = rate
        else:
            hi = rate


# -- measuring real services ------------------------------------------------------------------------
def machine_facts(probe_gpu: bool = True) -> dict[str, Any]:
    """The machine a capacity was measured on: CPU model, cores, int8 features, GPU, load."""
    from optkit.runtime import sysinfo

    cpu = sysinfo.cpu_info()
    out: dict[str, Any] = {
        "cpu_model": cpu.model, "logical_cpus": cpu.logical_cpus, "physical_cores": cpu.physical_cores,
        "usable_cpus": sysinfo.usable_cpus(), "cpu_features": sorted(k for k, v in cpu.features().items() if v),
        "int8_acceleration": cpu.int8_acceleration(),
    }
    if probe_gpu:
        from optkit.runtime.gpu import cuda_device

        gpu = cuda_device()
        out["gpu"] = ({k: gpu[k] for k in ("name", "count", "compute_capability", "total_memory_bytes")}
                      if gpu.get("available") else {"available": False, "reason": gpu.get("reason")})
    try:
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return out


def machine_line(m: dict[str, Any]) -> str:
    gpu = m.get("gpu") or {}
    gtext = (f"{gpu['name']} x{gpu.get('count', 1)}" if gpu.get("name")
             else "none" if gpu else "not probed")
    load = m.get("load_average")
    return (f"measured on: {m.get('cpu_model')} ({m.get('usable_cpus')} usable of {m.get('logical_cpus')} logical "
            f"CPUs, {m.get('physical_cores') or '?'} physical cores), int8 acceleration: "
            f"{m.get('int8_acceleration')}; GPU: {gtext}"
            + (f"; load average {' '.join(f'{x:g}' for x in load)}" if load else ""))


@dataclass
class CapacityRow:
    artifact: str
    provider: str
    variant: str = ""
    search: CapacitySearch | None = None
    server: dict[str, Any] = field(default_factory=dict)  # GET /metadata
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{Path(self.artifact).name} [{self.provider}]" + (f" {self.variant}" if self.variant else "")

    def nodes(self, cfg: CapacityConfig) -> int | None:
        return nodes_needed(cfg.target_rps, self.search.rate, cfg.headroom) if self.search else None


def capacity_at_url(base_url: str, cfg: CapacityConfig, payload: lt.Payload | None = None,
                    progress: Callable[[str], None] | None = None, lengths: Sequence[int] | None = None,
                    seed: int = 0) -> tuple[CapacitySearch, dict[str, Any]]:
    """The capacity search against a running service (loopback only): warm-up, the start-rate probe
    (unless ``cfg.start_rate``), the search. Returns the search and the service's /metadata.
    ``lengths``: each request's length drawn from this list (``loadtest.length_mix``, checked against
    the served range first); every step restarts the same seeded sequence, so steps differ in rate only."""
    from optkit.serve.server import require_loopback_url

    base_url = require_loopback_url(base_url)
    say = progress or (lambda msg: None)
    server = lt.fetch_metadata(base_url)
    mix = lt.length_mix(server, lengths, seed) if lengths else None
    body = mix or payload or lt.payload_for_server(server)
    url = f"{base_url}/verify"
    asyncio.run(lt._warm_up(url, body, cfg.timeout))
    start = cfg.start_rate
    if start is None:
        probe = asyncio.run(lt.closed_loop_step(url, mix.fresh() if mix else body, 1,
                                                min(PROBE_SECONDS, cfg.step_seconds), cfg.timeout))
        start = max(cfg.min_rate, probe.qps / 2)
        say(f"one back-to-back user: {probe.qps:.4g} requests/s; starting at {start:.4g}/s")

    def measure(rate: float) -> lt.StepResult | tuple[lt.StepResult, lt.LengthMix]:
        if mix is None:
            return asyncio.run(lt.open_loop_step(url, body, rate, cfg.step_seconds, cfg.timeout))
        drawn = mix.fresh()
        return asyncio.run(lt.open_loop_step(url, drawn, rate, cfg.step_seconds, cfg.timeout)), drawn

    search = find_capacity(measure, cfg, start, say)
    search.lengths = mix
    return search, server


def capacity_services(artifacts: Sequence[str | os.PathLike], providers: Sequence[str], cfg: CapacityConfig,
                      serve_args: Sequence[str] = (), payload: lt.Payload | None = None,
                      progress: Callable[[str], None] | None = None, startup_timeout: float = 300.0,
                      variants: Sequence[str] = ("",), lengths: Sequence[int] | None = None,
                      seed: int = 0) -> list[CapacityRow]:
    """``optkit serve`` on 127.0.0.1 for each artifact, provider and serving variant in turn (the
    rows of ``loadtest --compare``), the capacity search on each, ranked by nodes needed (fewest
    first; rows without an answer last). ``lengths``: the same seeded length draw on every row."""
    from optkit.serve.server import ServerProcess

    say = progress or (lambda msg: None)
    plan, args = lt.plan_rows(artifacts, providers, serve_args, variants)
    rows = [CapacityRow(p.artifact, p.provider, p.variant) for p in plan]
    for row, p in zip(rows, plan):
        say(f"serving {row.key}")
        try:
            with ServerProcess(row.artifact, row.provider, args[p.key], startup_timeout=startup_timeout) as srv:
                row.search, row.server = capacity_at_url(srv.url, cfg, payload, lambda m, k=row.key: say(f"{k}: {m}"),
                                                         lengths, seed)
        except OptkitError as exc:
            say(f"{row.key}: {exc}")
            row.error = " ".join(str(exc).split())
    return rank(rows, cfg)


def rank(rows: Sequence[CapacityRow], cfg: CapacityConfig) -> list[CapacityRow]:
    """Fewest nodes first; among equals, the higher rate; rows without an answer last (stable)."""
    def key(r: CapacityRow) -> tuple:
        n = r.nodes(cfg)
        return (n is None, n or 0, -(r.search.rate if r.search else 0.0))

    return sorted(rows, key=key)


# -- output -------------------------------------------------------------------------------------------
def header_line(cfg: CapacityConfig) -> str:
    return (f"Capacity at p99 <= {cfg.slo_p99_ms:g} ms for {cfg.target_rps:g} requests/s with {cfg.headroom:.0%} "
            f"headroom; steps of {cfg.step_seconds:g} s, bisection to {cfg.tolerance:.0%}, at most "
            f"{cfg.max_trials} steps per row")


def table_lines(rows: Sequence[CapacityRow], cfg: CapacityConfig, machine: dict[str, Any]) -> list[str]:
    width = max([len("artifact")] + [len(Path(r.artifact).name) for r in rows])
    variants = any(r.variant for r in rows)
    vwidth = max([len("serving")] + [len(r.variant or "-") for r in rows])
    mix = next((r.search.lengths for r in rows if r.search and r.search.lengths), None)
    lines = [header_line(cfg), *([mix.mix_line() + " (every step restarts this seeded sequence)"] if mix else []), "",
             f"{'artifact':<{width}}  {'provider':<9}  " + (f"{'serving':<{vwidth}}  " if variants else "")
             + f"{'precision':<9}  {'max rate/s':>10}  {'p99 ms':>7}  {'steps':>5}  {'nodes':>5}"]
    for r in rows:
        head = f"{Path(r.artifact).name:<{width}}  {r.provider:<9}  " + (f"{(r.variant or '-'):<{vwidth}}  "
                                                                          if variants else "")
        if r.search is None:
            lines.append(f"{head}not run: {r.error}")
            continue
        s, n = r.search, r.nodes(cfg)
        rate = "-" if s.rate <= 0 else f"{s.rate:.4g}" + ("+" if s.lower_bound else "" if s.confirmed else "?")
        lines.append(f"{head}{r.server.get('precision', '?')!s:<9}  {rate:>10}  {lt._f(s.p99_ms):>7}  "
                     f"{len(s.trials):>5}  {('-' if n is None else str(n)):>5}")
    lines.append("")
    for r in rows:
        if r.search is not None:
            lines.append(f"{r.key}: {answer_text(cfg.target_rps, r.search.rate, cfg.headroom, r.search.confirmed)}"
                         f"; {r.search.stopped}")
    mixes = [(r.key, t.lengths) for r in rows if r.search and (t := r.search._at_rate()) and t.lengths]
    lines += lt.per_length_lines(mixes, "the last passing step at the max rate", with_mix=False)
    if mixes:
        lines.append("")
    lines += [("nodes = ceil(target / max rate x (1 + headroom)); '?' = not confirmed by a repeat (budget spent), "
               "'+' = a lower bound (passed at --max-rate, or no failing rate found close above it within the "
               "steps): the service may take more"), machine_line(machine)]
    return lines


def capacity_json(rows: Sequence[CapacityRow], cfg: CapacityConfig, machine: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    def row(r: CapacityRow) -> dict[str, Any]:
        s = r.search
        return {"artifact": Path(r.artifact).name, "provider": r.provider, "variant": r.variant, "error": r.error,
                "precision": r.server.get("precision"), "provider_in_use": r.server.get("provider_in_use"),
                "sha256": r.server.get("sha256"),
                "max_rate": None if s is None else round(s.rate, 4),
                "confirmed": None if s is None else s.confirmed,
                "lower_bound": None if s is None else s.lower_bound,
                "p99_ms_at_rate": None if s is None or s.p99_ms is None else round(s.p99_ms, 3),
                "nodes_needed": r.nodes(cfg),
                "answer": None if s is None else answer_text(cfg.target_rps, s.rate, cfg.headroom, s.confirmed),
                "stopped": None if s is None else s.stopped,
                "start_rate": None if s is None or s.start_rate is None else round(s.start_rate, 4),
                **({"length_mix": s.lengths.mix_json(), "per_length_at_rate": s.per_length()}
                   if s is not None and s.lengths else {}),
                "trials": [] if s is None else [t.to_json() for t in s.trials]}

    return {"optkit_capacity_version": CAPACITY_FORMAT_VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "slo_p99_ms": cfg.slo_p99_ms, "target_rps": cfg.target_rps, "headroom": cfg.headroom,
            "config": asdict(cfg), "method": METHOD, "formula": "ceil(target_rps / max_rate * (1 + headroom))",
            "machine": machine, "machine_text": machine_line(machine), "rows": [row(r) for r in rows]}
