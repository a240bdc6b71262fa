"""Latency and throughput of artifacts, measured interleaved so ratios are fair on a noisy machine.

All artifacts are loaded in one process and called round-robin: each round calls every artifact
once, in the order given. Load from other processes, CPU frequency changes and "speed states" of
the machine then hit every artifact alike, so the ratios between them (the speed-up column,
relative to the first artifact) stay meaningful even when the absolute numbers move.

Two things about the measurement are deliberate and recorded in the result:

- The request pattern. With ``idle_ms > 0`` every timed call is preceded by an untimed sleep, the
  pattern of a service answering one request at a time with gaps between them; thread pools then
  have to wake up for every call, as they do in production. ``idle_ms = 0`` is back-to-back calls.
- ONNX Runtime's intra-op thread spinning is off (``session.intra_op.allow_spinning=0``, the
  OnnxRuntimeRunner default). With spinning on, ORT's worker threads keep busy-waiting after a
  call and steal the cores from the artifact timed next, which made ORT int8 look 2.6x instead of
  3.1x faster than fp32 in an interleaved run.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.runtime.bench_render import INTERLEAVING_NOTE, NO_RATIO_NOTE_START, SPINNING_NOTE, request_pattern
from optkit.model.onnx_utils import TensorSpec

BENCH_FORMAT_VERSION = 1

@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1,)
    warmup: int = 10  # untimed interleaved rounds per batch size (after one priming call each)
    iterations: int = 100  # timed rounds per batch size
    idle_ms: float = 0.0  # untimed sleep before every timed call
    seed: int = 0  # for random inputs
    data: str | None = None  # a sample set (directory of .npy or .npz) instead of random inputs
    # lengths of the dynamic time axis to time (optkit.runtime.bench_lengths); () = the model's own
    lengths: tuple[int, ...] = ()
    frames_per_second: float = 100.0  # frames per second of audio, for the slope of latency vs length

    def __post_init__(self) -> None:
        if self.lengths and self.data is not None:
            raise InputError("--lengths times seeded random inputs of each length; it does not take --data")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise InputError(f"batch sizes must be positive integers, got {self.batches}")
        if self.iterations < 1:
            raise InputError(f"iterations must be at least 1, got {self.iterations}")
        if self.warmup < 0:
            raise InputError(f"warmup must be 0 or more, got {self.warmup}")
        if not (self.idle_ms >= 0 and math.isfinite(self.idle_ms)):
            raise InputError(f"idle time must be 0 or more milliseconds, got {self.idle_ms}")


@dataclass
class BenchItem:
    """One thing to time: a label for the table and a runner (activated by :func:`benchmark`)."""

    label: str
    runner: Any  # optkit.runtime.base.Runner, or anything with the same interface
    artifact: Path | None = None


@dataclass(frozen=True)
class LatencyStats:
    n: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    max_ms: float
    throughput_sps: float  # samples per second = batch / mean latency

    def to_json(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def latency_stats(times_s: Sequence[float], batch: int = 1) -> LatencyStats:
    """Statistics of per-call latencies given in seconds. Percentiles interpolate linearly
    between order statistics (numpy's default), so p50 of an even count is the midpoint."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size == 0:
        raise InputError("no timings to summarise")
    if not np.isfinite(t).all() or (t < 0).any():
        raise InputError("timings must be finite and non-negative")
    ms = t * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return LatencyStats(
        n=int(t.size),
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=mean,
        std_ms=float(ms.std()),
        max_ms=float(ms.max()),
        throughput_sps=float(batch * 1e3 / mean) if mean > 0 else float("inf"),
    )


def interleaved_times(
    calls: Sequence[Callable[[int], Any]],
    iterations: int,
    warmup: int = 0,
    idle_s: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> list[list[float]]:
    """Call ``calls`` round-robin and return each one's timed latencies (seconds).

    Each call gets the round number (to pick its input). Warm-up rounds are interleaved too and
    not timed; ``idle_s`` is slept (untimed) before every timed call.
    """
    for r in range(warmup):
        for call in calls:
            call(r)
    times: list[list[float]] = [[] for _ in calls]
    for r in range(iterations):
        for i, call in enumerate(calls):
            if idle_s > 0:
                sleep(idle_s)
            t0 = clock()
            call(r)
            times[i].append(clock() - t0)
    return times


def speedups(baseline: LatencyStats, other: LatencyStats) -> dict[str, float]:
    """How many times faster ``other`` is than ``baseline``, by minimum and by median."""
    return {
        "min": baseline.min_ms / other.min_ms if other.min_ms > 0 else float("inf"),
        "p50": baseline.p50_ms / other.p50_ms if other.p50_ms > 0 else float("inf"),
    }


def input_interface(specs: Sequence[TensorSpec]) -> tuple[tuple[str, tuple[int | None, ...]], ...]:
    """A model's inputs as far as comparing speeds goes: names and shapes, the batch dimension
    (dynamic or not) left out, other dynamic dimensions as None. The dtype is left out too: an fp16
    model with float16 inputs is still the same model. fp32 and its int8/fp16 forms have the same
    interface; two unrelated models usually do not."""
    return tuple(sorted((s.name, tuple(d if isinstance(d, int) and d > 0 else None for d in s.shape[1:]))
                        for s in specs))


def interface_note(first: str, others: Sequence[str]) -> str:
    return (f"{NO_RATIO_NOTE_START}{', '.join(others)}: {'its' if len(others) == 1 else 'their'} inputs (names, shapes) differ from {first}'s, so a ratio "
            "would compare different models rather than forms of one; their times are shown as measured.")


# -- inputs ------------------------------------------------------------------------------------
def make_feeds(specs: Sequence[TensorSpec], batch: int, seed: int = 0, data: str | None = None,
               label: str = "artifact", length: int | None = None) -> list[dict[str, np.ndarray]]:
    """Inputs for one artifact at one batch size (and ``length`` of its time axis): one seeded
    random feed, or up to 16 distinct batches cut from a sample set (cycled through the rounds)."""
    from optkit.model.feeds import batch_shapes, random_feed, sample_feeds

    if data is not None:
        return sample_feeds(specs, batch, data, label)
    return [random_feed(specs, batch, seed, shapes=batch_shapes(specs, batch, label, length))]


# -- the benchmark -----------------------------------------------------------------------------
@dataclass
class BenchResult:
    label: str
    batch: int
    stats: LatencyStats
    speedup: dict[str, float] | None  # None: the artifact's inputs differ from the first's (no ratio)
    length: int | None = None  # the time axis' length (bench --lengths), None: the model's own


@dataclass
class BenchReport:
    config: BenchConfig
    items: list[dict[str, Any]]  # label, artifact, runner description
    results: list[BenchResult]
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    notes: list[str] = field(default_factory=list)

    def result(self, label: str, batch: int, length: int | None = None) -> BenchResult:
        for r in self.results:
            if r.label == label and r.batch == batch and r.length == length:
                return r
        raise KeyError((label, batch))

    def to_json(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["batches"] = list(self.config.batches)
        cfg["lengths"] = list(self.config.lengths)
        from optkit.runtime.bench_lengths import length_fits

        return {
            "optkit_bench_version": BENCH_FORMAT_VERSION,
            "created": self.created,
            "config": cfg,
            "request_pattern": {"idle_ms": self.config.idle_ms, "description": request_pattern(self.config.idle_ms)},
            "method": {
                "interleaved": INTERLEAVING_NOTE,
                "ort_intra_op_spinning": SPINNING_NOTE,
                "timing": "time.perf_counter around runner.infer (includes input copy and output fetch); "
                          "one untimed priming call per artifact and batch size before the warm-up rounds",
            },
            "artifacts": self.items,
            "results": [
                {
                    "artifact": r.label,
                    "batch": r.batch,
                    **({"length": r.length} if r.length is not None else {}),
                    "latency_ms": {k: v for k, v in r.stats.to_json().items() if k.endswith("_ms")},
                    "iterations": r.stats.n,
                    "throughput_samples_per_s": round(r.stats.throughput_sps, 3),
                    "speedup_vs_first": (None if r.speedup is None
                                         else {k: round(v, 4) for k, v in r.speedup.items()}),
                }
                for r in self.results
            ],
            **({"length_fits": length_fits(self)} if self.config.lengths else {}),
            "environment": self.environment,
            "notes": list(self.notes),
        }

    # the renderers live in optkit.runtime.bench_render; these two keep the report's old methods
    def table_lines(self) -> list[str]:
        from optkit.runtime.bench_render import table_lines

        return table_lines(self)

    def markdown_lines(self) -> list[str]:
        from optkit.runtime.bench_render import markdown_lines

        return markdown_lines(self)


def benchmark(items: Sequence[BenchItem], cfg: BenchConfig, progress: Callable[[str], None] | None = None,
              environment: dict[str, Any] | None = None,
              on_first_output: Callable[[str, int, dict[str, np.ndarray]], None] | None = None,
              clock: Callable[[], float] = time.perf_counter,
              sleep: Callable[[float], None] = time.sleep) -> BenchReport:
    """Activate every runner, then time them interleaved for each batch size.

    ``on_first_output(label, batch, outputs)`` receives the outputs of each artifact's untimed
    priming call (all artifacts get the same inputs), e.g. to check they agree."""
    if not items:
        raise InputError("nothing to benchmark")
    labels = [i.label for i in items]
    if len(set(labels)) != len(labels):
        raise InputError(f"benchmark labels must be unique, got {labels}")
    say = progress or (lambda msg: None)
    with contextlib.ExitStack() as stack:
        for item in items:
            say(f"loading {item.label}")
            stack.enter_context(item.runner)
        results: list[BenchResult] = []
        from optkit.model.feeds import batch_shapes

        # a ratio against the first artifact only where it is a form of the same model (same inputs)
        comparable = [input_interface(item.runner.inputs) == input_interface(items[0].runner.inputs) for item in items]

        for batch in cfg.batches:  # a batch size some model cannot run fails before anything is timed
            for item in items:
                batch_shapes(item.runner.inputs, batch, item.label)
        if cfg.lengths:  # a length outside an artifact's declared range too
            from optkit.runtime.bench_lengths import check_lengths

            for item in items:
                check_lengths(item.label, item.runner.inputs, cfg.lengths)
        # every (length, artifact) pair is timed in the same interleaved rounds
        points = [(length, item) for length in (cfg.lengths or (None,)) for item in items]
        for batch in cfg.batches:
            feeds = [make_feeds(item.runner.inputs, batch, cfg.seed, cfg.data, item.label, length)
                     for length, item in points]

            def caller(runner: Any, runner_feeds: list[dict[str, np.ndarray]]) -> Callable[[int], Any]:
                return lambda r: runner.infer(runner_feeds[r % len(runner_feeds)])

            calls = [caller(item.runner, f) for (_, item), f in zip(points, feeds)]
            for (length, item), call in zip(points, calls):  # compile/allocate for this shape outside the timed rounds
                outputs = call(0)
                if on_first_output is not None and length is None:
                    on_first_output(item.label, batch, outputs)
            at = f" at {len(cfg.lengths)} lengths" if cfg.lengths else ""
            say(f"batch {batch}: {cfg.warmup} warm-up + {cfg.iterations} timed rounds over {len(items)} artifacts{at}")
            times = interleaved_times(calls, cfg.iterations, cfg.warmup, cfg.idle_ms / 1e3, clock, sleep)
            stats = [latency_stats(t, batch) for t in times]
            for k, ((length, item), s) in enumerate(zip(points, stats)):
                first = stats[k - k % len(items)]  # the first artifact at the same length
                same = comparable[k % len(items)]
                results.append(BenchResult(item.label, batch, s, speedups(first, s) if same else None, length))
        described = [
            {"label": item.label, "artifact": str(item.artifact) if item.artifact else None,
             **_artifact_facts(item.artifact), "runner": item.runner.describe()}
            for item in items
        ]
    if environment is None:
        from optkit.runtime import sysinfo

        environment = sysinfo.collect()
    environment = dict(environment)
    environment.setdefault("omp_num_threads", os.environ.get("OMP_NUM_THREADS"))
    notes = [INTERLEAVING_NOTE]
    if not all(comparable):
        notes.append(interface_note(items[0].label, [i.label for i, same in zip(items, comparable) if not same]))
    if any(str(d["runner"].get("runner", "")).startswith("onnxruntime") for d in described):
        notes.append(SPINNING_NOTE)
    return BenchReport(cfg, described, results, environment,
                       _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), notes)


def _artifact_facts(path: Path | None) -> dict[str, Any]:
    if path is None or not Path(path).is_file():
        return {}
    from optkit.model.artifact import artifact_identity

    ident = artifact_identity(path)  # weights in external data files included
    facts: dict[str, Any] = {"sha256": ident["sha256"], "size": ident["size"]}
    if ident["external_data"]:
        facts["external_data"] = ident["external_data"]
    if Path(path).suffix.lower() == ".onnx":
        with contextlib.suppress(Exception):
            from optkit.model.artifact import guess_precision

            facts["precision"] = guess_precision(Path(path))
    return facts


def make_bench_items(artifacts: Sequence[str | os.PathLike], providers: Sequence[str] = ("cpu",),
                     threads: int | None = None, openvino_options: dict[str, Any] | None = None) -> list[BenchItem]:
    """One item per (ONNX artifact, provider); engines run once on TensorRT whatever the provider."""
    from optkit.runtime.registry import is_engine as engine_file
    from optkit.runtime.registry import make_runner, providers_for

    items: list[BenchItem] = []
    seen: set[str] = set()
    multi = len(providers) > 1
    for art in artifacts:
        path = Path(art)
        is_engine = engine_file(path)
        for provider in providers_for(path, providers):
            label = path.name if (is_engine or not multi) else f"{path.name} [{provider}]"
            base, n = label, 1
            while label in seen:  # the same file twice is a fair A/A noise check: keep both
                n += 1
                label = f"{base} ({n})"
            seen.add(label)
            options = dict(openvino_options or {}) if provider == "openvino" and not is_engine else {}
            try:
                runner = make_runner(path, provider=provider, threads=threads, **options)
            except ModuleNotFoundError as exc:  # a runner module not in this build (e.g. tensorrt)
                if not str(exc.name or "").startswith("optkit.runtime.registry"):
                    raise
                from optkit.common.errors import RuntimeUnavailable

                raise RuntimeUnavailable(
                    f"{path.name}: no runner for {'TensorRT engines' if is_engine else provider} in this "
                    f"optkit installation ({exc.name} is missing)"
                ) from exc
            items.append(BenchItem(label, runner, path))
    return items
