"""One runner behind a bounded queue, served by inference threads that form micro-batches.

Why this shape:

- The runner is loaded through ``optkit.runtime.registry.make_runner``, so serving refuses a silent CPU
  fallback exactly as ``verify`` does, and ``.engine`` files load through the TensorRT runner.
- Inference runs on dedicated threads, never on the event loop: the loop only parses requests and
  awaits an ``asyncio.Future`` that a thread completes with ``call_soon_threadsafe``. One thread
  (the default, ``streams`` = 1) gives the lowest latency: the runtime spreads each inference over
  every core it was given (intra-op threads). With ``streams`` = N, N threads take requests (or
  micro-batches) from the same queue and run them at once on one runner that splits its threads
  between them (ORT: one thread-safe session with threads/N intra-op threads; OpenVINO: N plugin
  streams, an infer request per thread). On a small model a single inference cannot keep 2 CPU
  cores busy (threads wait for each other between layers), while two single-thread inferences can:
  in-process on the bundled model, 2 cores, ORT fp32 199 -> 234 samples/s, int8 419 -> 641, where a
  batch of 8 on 2 threads gave 219 and 572 (``benchmarks/serve_load.py --throughput``, see
  benchmarks/README.md). A TensorRT engine has one execution context and runs with one stream.
- The queue is bounded by count and by time. A request is refused at once (HTTP 503 with
  Retry-After) when ``max_queue`` requests are already waiting, or when the queue ahead of it would
  take longer than ``max_queue_wait_ms`` to drain at the measured batch time; one that still waits
  longer (inference slowed down) is refused when the inference thread reaches it. Under overload
  latency stays bounded and the client learns when to come back, instead of waiting behind an ever
  longer line and timing out.
- Micro-batching (``max_batch > 1``): the thread takes up to ``max_batch`` waiting requests, waiting
  at most ``max_wait_ms`` after the first one for company (default 0: a batch is what queued while
  the previous one ran, so an idle server adds no latency), and runs them as one batch over the
  model's dynamic batch axis. Runtimes that compile or tune per input shape (OpenVINO; ORT's CUDA
  and TensorRT providers; TensorRT engines: ``per_shape`` in the runner registry) get batches
  padded to a few sizes (powers of two up to ``max_batch``), all compiled during warm-up; ONNX
  Runtime on the CPU runs each batch at its own size.
- Any length: a model exported with a dynamic time axis (``optkit export --dynamic-axis
  input_mfcc:3 --length-range 100:1000``) is served at every length inside the range it declares
  (``optkit.model.dynamic``, read through ``TensorSpec.ranges``); a request outside it is refused
  (422, naming the range) before it is queued. A micro-batch holds requests of one sample shape
  only (never padded: padding changes a model's answer unless proven otherwise): the thread takes
  the oldest waiting request and then the waiting requests of its shape, leaving the others in
  their order, so the oldest request always goes next and no length starves (Triton's dynamic
  batcher merges identical shapes only too).

Python's asyncio/threading primitives do the queueing; no library offers a bounded, batching
hand-off from an event loop to one thread that owns a runner, so this is written here.
"""
from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optkit.common.errors import InputError, OptkitError
from optkit.serve.settings import ServeSettings
# what an output is (a probability by its op, or by its values): one implementation, shared with verify
# and the int8 search
from optkit.verification.output_kinds import PROBABILITY_OPS, RANGE_SLACK, output_head_op
from optkit.verification.output_kinds import sigmoid as _sigmoid

WARMUP_CALLS = 3
RANGE_CHECK_SAMPLES = 8  # seeded random inputs whose outputs must lie in [0, 1] for an unproven head


class Overloaded(OptkitError):
    """The queue is full; ``retry_after`` is a whole number of seconds (HTTP Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class NonFiniteOutput(OptkitError):
    """The model's output for a request is NaN or infinite: nothing to decide on (HTTP 422)."""


class NotReady(OptkitError):
    """The model is not loaded (yet, or any more: the server is shutting down)."""


@dataclass(frozen=True)
class Prediction:
    probability: float
    inference_ms: float  # the batch's runner.infer call
    queue_ms: float  # from submit until the batch started
    batch_size: int  # requests in that batch


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued: float


def batch_buckets(max_batch: int) -> list[int]:
    """Batch sizes a padded batch is rounded up to: powers of two below ``max_batch``, and it."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class InferenceLoop:
    def __init__(self, settings: ServeSettings,
                 runner_factory: Callable[[ServeSettings], Any] | None = None,
                 on_batch: Callable[[int, float], None] | None = None):
        self.settings = settings
        self._runner_factory = runner_factory or _make_runner
        self._on_batch = on_batch
        self.runner: Any = None
        self.input_name = ""
        self.input_dtype = "float32"
        self.sample_shape: tuple[int | None, ...] = ()
        self.output_name = ""
        self.output_kind = ""  # "probability" or "logit" (the service applies a sigmoid)
        self.notes: list[str] = []  # what the service decided about this model on its own (reported)
        self.info: dict[str, Any] = {}
        self._pad = False
        self._buckets = [1]
        self._cond = threading.Condition()
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._in_flight = 0
        self._closed = True
        self._threads: list[threading.Thread] = []
        self._batch_s_ema: float | None = None
        self.batches_run = 0
        self.expired = 0  # requests refused after waiting longer than max_queue_wait_ms
        self.audio: str | None = None  # why audio input is off, or None when it is on
        # {sample axis: (min, max)} of each dynamic axis besides the batch (from the model's declared range)
        self.length_ranges: dict[int, tuple[int, int]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def load(self) -> None:
        """Create and activate the runner, check its interface, warm it up, start the thread."""
        s = self.settings
        t0 = time.perf_counter()
        runner = self._runner_factory(s)
        runner.__enter__()
        try:
            self._check_interface(runner)
            self.runner = runner
            # a runtime that compiles or tunes per shape gets a few padded batch sizes, all warmed
            # up here: fed every size 1..max_batch, ORT's CUDA EP searched cuDNN algorithms for each
            # new one in mid-load (measured on an H200, voice-resnet-seed: batches of seconds)
            self._pad = _per_shape(s) and s.max_batch > 1
            self._buckets = batch_buckets(s.max_batch) if s.max_batch > 1 else [1]
            self._warm_up()
            self.output_kind = self._decide_output_kind()
            self.audio = (_warm_up_audio(self.sample_shape, self.audio_max_frames) if s.accept_audio
                          else "audio input is switched off (--no-audio)")
        except BaseException as exc:
            runner.__exit__(None, None, None)
            self.runner = None
            if isinstance(exc, Exception) and not isinstance(exc, OptkitError):  # a runtime's own error: one line
                raise InputError(f"{Path(s.artifact).name}: cannot be served: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())}") from exc
            raise
        self.info = self._describe(time.perf_counter() - t0)
        with self._cond:
            self._closed = False
        self._threads = [threading.Thread(target=self._serve_forever, name=f"optkit-inference-{i}", daemon=True)
                         for i in range(s.streams)]
        for t in self._threads:
            t.start()

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            left = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
        for p in left:
            _resolve(p, exc=NotReady("the server is shutting down"))
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            self.runner = None

    @property
    def ready(self) -> bool:
        return self.runner is not None and not self._closed

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- requests ----------------------------------------------------------------------------
    def submit(self, x: np.ndarray) -> asyncio.Future:
        """Queue one batch-of-one input; call from the event loop. Raises Overloaded/NotReady."""
        self.check_lengths(x)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cond:
            if self._closed:
                raise NotReady("the model is not loaded")
            if len(self._waiting) >= self.settings.max_queue:
                raise Overloaded(f"server busy: {len(self._waiting)} requests already waiting", self.retry_after())
            if self.expected_wait_s() > self.settings.max_queue_wait_ms / 1e3:
                raise Overloaded(f"server busy: the {len(self._waiting)} requests waiting would take about "
                                 f"{self.expected_wait_s():.1f} s", self.retry_after())
            self._waiting.append(_Pending(x, fut, loop, time.perf_counter()))
            self._cond.notify()
        return fut

    def check_lengths(self, x: np.ndarray) -> None:
        """RequestRejected (422) when a batch-of-one input's length on a dynamic axis is outside the
        model's declared range."""
        for axis, (lo, hi) in self.length_ranges.items():
            n = int(x.shape[axis + 1])
            if not lo <= n <= hi:
                from optkit.serve.payload import RequestRejected

                raise RequestRejected(f"input length {n} (axis {axis + 1}) is outside the model's length range "
                                      f"{lo}..{hi}", 422)

    @property
    def audio_max_frames(self) -> int | None:
        """The longest MFCC an audio upload becomes on a model with a dynamic time (last) axis, else None
        (a fixed model takes the fixed window)."""
        last = len(self.sample_shape) - 1
        return self.length_ranges[last][1] if last in self.length_ranges else None

    def warm_shape(self) -> tuple[int, ...]:
        """A concrete sample shape: the middle of the range on each dynamic axis."""
        return tuple((sum(self.length_ranges[i]) // 2) if d is None else d for i, d in enumerate(self.sample_shape))

    async def predict(self, x: np.ndarray) -> Prediction:
        return await self.submit(x)

    def expected_wait_s(self) -> float:
        """How long a request queued now would wait before its batch starts (at the measured batch time;
        the batch running now counts as half done)."""
        if self._batch_s_ema is None:
            return 0.0
        s = self.settings
        batches_ahead = math.ceil(len(self._waiting) / s.max_batch)  # full batches before ours
        # the streams drain the queue in parallel; those busy now count as half done
        return (batches_ahead + (0.5 if self._in_flight else 0.0)) * self._batch_s_ema / s.streams

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1): the HTTP Retry-After value."""
        per_batch = self._batch_s_ema or 0.1
        batches = math.ceil((len(self._waiting) + 1) / self.settings.max_batch) + 1
        return max(1, math.ceil(batches * per_batch / self.settings.streams))

    # -- the inference thread ----------------------------------------------------------------
    def _take_batch(self) -> list[_Pending] | None:
        s = self.settings
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._expire_locked()
            if not self._waiting:
                return []
            batch = [self._waiting.popleft()]
            if s.max_batch > 1:
                deadline = time.perf_counter() + s.max_wait_ms / 1e3
                while len(batch) < s.max_batch:
                    if self._pull_same_shape_locked(batch):
                        continue
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0 or self._closed:
                        break
                    self._cond.wait(remaining)
            self._in_flight += len(batch)
            return batch

    def _pull_same_shape_locked(self, batch: list[_Pending]) -> bool:
        """Move waiting requests shaped like ``batch[0]`` into ``batch`` (up to max_batch), keeping the
        others in their order; whether any moved (caller holds the lock)."""
        shape, limit = batch[0].x.shape, self.settings.max_batch
        if not self._waiting:
            return False
        if self._waiting[0].x.shape == shape and len(self._waiting) <= limit - len(batch) and \
                all(p.x.shape == shape for p in self._waiting):  # one length waiting (a fixed model): no scan
            batch.extend(self._waiting)
            self._waiting.clear()
            return True
        before, kept = len(batch), collections.deque()
        while self._waiting and len(batch) < limit:
            p = self._waiting.popleft()
            (batch if p.x.shape == shape else kept).append(p)
        kept.extend(self._waiting)
        self._waiting.clear()
        self._waiting.extend(kept)
        return len(batch) > before

    def _expire_locked(self) -> None:
        """Refuse (503) the requests that have waited longer than max_queue_wait_ms (caller holds the lock)."""
        limit = self.settings.max_queue_wait_ms / 1e3
        now = time.perf_counter()
        while self._waiting and now - self._waiting[0].enqueued > limit:
            p = self._waiting.popleft()
            self.expired += 1
            _resolve(p, exc=Overloaded(f"server busy: the request waited {now - p.enqueued:.1f} s for inference",
                                       self.retry_after()))

    def _serve_forever(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [p for p in batch if not p.future.cancelled()]  # client gone: skip its work
            try:
                if live:
                    self._run_batch(live)
            finally:
                with self._cond:
                    self._in_flight -= len(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            probs = self._infer([p.x for p in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the one-line reason
            err = exc if isinstance(exc, OptkitError) else InputError(f"inference failed: {type(exc).__name__}: {exc}")
            for p in batch:
                _resolve(p, exc=err)
            return
        took = time.perf_counter() - started
        with self._cond:
            self._batch_s_ema = took if self._batch_s_ema is None else 0.8 * self._batch_s_ema + 0.2 * took
            self.batches_run += 1
        if self._on_batch is not None:
            self._on_batch(len(batch), took)
        for p, prob in zip(batch, probs):
            if not math.isfinite(float(prob)):  # e.g. inputs near float32's limit overflow inside the model
                _resolve(p, exc=NonFiniteOutput(
                    f"the model's output {self.output_name} for this input is {float(prob)} (not a finite number): "
                    "the input is outside the range the model computes in"))
                continue
            _resolve(p, value=Prediction(float(prob), took * 1e3, (started - p.enqueued) * 1e3, len(batch)))

    def _infer(self, xs: list[np.ndarray]) -> np.ndarray:
        """Per-sample probabilities of a list of batch-of-one inputs (one runner call)."""
        n = len(xs)
        x = xs[0] if n == 1 else np.concatenate(xs, axis=0)
        if self._pad:
            size = next(b for b in self._buckets if b >= n)
            if size > n:
                x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)], axis=0)
        out = np.atleast_1d(self.runner.infer({self.input_name: x})[self.output_name])  # a batch-1 model's scalar
        scores = out.reshape(out.shape[0], -1)[:n, 0]
        return _sigmoid(scores) if self.output_kind == "logit" else scores

    # -- loading helpers ---------------------------------------------------------------------
    def _check_interface(self, runner: Any) -> None:
        specs = list(runner.inputs)
        if len(specs) != 1:
            raise InputError(f"{Path(self.settings.artifact).name}: the service feeds one input (the MFCC window); "
                             f"this model has {len(specs)} ({', '.join(s.name for s in specs)})")
        spec = specs[0]
        self.input_name, self.input_dtype = spec.name, str(spec.dtype)
        if not spec.shape:
            raise InputError(f"{Path(self.settings.artifact).name}: input {spec.name} is a scalar; it needs a batch axis")
        batch_dim = spec.shape[0]
        self.sample_shape = tuple(d if isinstance(d, int) else None for d in spec.shape[1:])
        if isinstance(batch_dim, int) and batch_dim > 1:  # requests come one at a time
            raise InputError(f"{Path(self.settings.artifact).name}: input {spec.name} has a fixed batch of {batch_dim}; "
                             "the service runs one request at a time, or micro-batches over a dynamic batch axis: "
                             "re-export it with a batch of 1 or a dynamic batch")
        if self.settings.max_batch > 1 and isinstance(batch_dim, int):
            raise InputError(f"{Path(self.settings.artifact).name}: micro-batching needs a dynamic batch axis; input "
                             f"{spec.name} has a fixed batch of {batch_dim} (re-export with a dynamic batch, or serve "
                             "with --max-batch 1)")
        declared = {axis - 1: (int(lo), int(hi)) for axis, lo, hi in (getattr(spec, "ranges", ()) or ()) if axis >= 1}
        unranged = [i + 1 for i, d in enumerate(self.sample_shape) if d is None and i not in declared]
        if unranged:
            raise InputError(f"{Path(self.settings.artifact).name}: input {spec.name} has dynamic dimensions besides "
                             f"the batch {tuple(spec.shape)} without a declared length range (axis "
                             f"{', '.join(map(str, unranged))}); re-export it with --dynamic-axis "
                             f"{spec.name}:AXIS --length-range MIN:MAX, or with a fixed sample shape")
        self.length_ranges = {i: declared[i] for i, d in enumerate(self.sample_shape) if d is None}
        names = list(runner.output_names)
        if self.settings.output is not None:
            if self.settings.output not in names:
                raise InputError(f"{Path(self.settings.artifact).name}: no output named {self.settings.output!r}; "
                                 f"its outputs are {', '.join(names)}")
            self.output_name = self.settings.output
        elif len(names) == 1:
            self.output_name = names[0]

    def _warm_up(self) -> None:
        """Run every batch size the service will use (OpenVINO compiles per shape), and check that the
        model gives one probability per sample."""
        for size in self._buckets:
            x = np.zeros((size, *self.warm_shape()), dtype=self.input_dtype)
            for _ in range(WARMUP_CALLS):
                t0 = time.perf_counter()
                outs = self.runner.infer({self.input_name: x})
                if size == 1:  # the batch-time estimate behind admission starts from a measured call
                    self._batch_s_ema = time.perf_counter() - t0
            if not self.output_name:
                self.output_name = self._choose_output(outs)
            out = np.atleast_1d(outs[self.output_name])
            if out.shape[0] != size or out.size != size:
                raise InputError(f"{Path(self.settings.artifact).name}: output {self.output_name} has shape "
                                 f"{tuple(out.shape)} for a batch of {size}; the service needs one probability "
                                 "per sample (of a two-class output, export the accepted class's probability alone)")

    def _choose_output(self, outs: dict[str, Any]) -> str:
        """Of several outputs (no --output), the only one with one value per sample (a batch of 1 here)."""
        names = list(outs)
        fits = [n for n in names if np.asarray(outs[n]).size == 1]
        listed = f"the model has {len(names)} outputs ({', '.join(names)})"
        if len(fits) != 1:
            why = "none gives one value per sample" if not fits else f"{', '.join(fits)} each give one value per sample"
            raise InputError(f"{Path(self.settings.artifact).name}: {listed}; {why}: name the probability with "
                             "--output NAME")
        self.notes.append(f"{listed}; serving {fits[0]}, the only one with one value per sample (--output NAME "
                          "chooses)")
        return fits[0]

    def _decide_output_kind(self) -> str:
        """Whether the served output is a probability. Proven by its op (Sigmoid/Softmax, behind ops that
        keep values); otherwise judged from its values on seeded random inputs: one outside [0, 1] means
        a raw score, refused unless --output-kind says what it is (deciding at 0.5 on a logit is wrong)."""
        s, name = self.settings, Path(self.settings.artifact).name
        head = output_head_op(Path(s.artifact), self.output_name)
        if s.output_kind == "logit" and head in PROBABILITY_OPS:  # a sigmoid of a probability: all near 0.5..0.73
            said = (f"output {self.output_name} is computed by {head}: it is a probability already, and "
                    "--output-kind logit applies a second sigmoid to it")
            if not s.force_output_kind:
                raise InputError(f"{name}: {said}; serve it with --output-kind auto or probability (or add "
                                 "--force-output-kind to serve it as a logit anyway)")
            self.notes.append(f"{said} (--force-output-kind)")
        if s.output_kind != "auto":
            return s.output_kind
        if head in PROBABILITY_OPS:
            return "probability"
        origin = f"it is computed by {head}" if head else "its graph cannot be read here"
        from optkit.model.feeds import random_feed

        values = [np.asarray(self.runner.infer(random_feed(self.runner.inputs, batch=1, seed=i))[self.output_name],
                             np.float64).ravel() for i in range(RANGE_CHECK_SAMPLES)]
        v = np.concatenate(values)
        outside = v[(v < -RANGE_SLACK) | (v > 1 + RANGE_SLACK) | ~np.isfinite(v)]
        if outside.size:
            raise InputError(f"{name}: output {self.output_name} is not a probability ({origin}, not a Sigmoid or "
                             f"Softmax, and gave {outside[0]:.4g} on a random input), but the service answers "
                             "probability >= threshold: serve it with --output-kind logit (the service applies a "
                             "sigmoid), or --output-kind probability if it is one")
        self.notes.append(f"output {self.output_name} is taken for a probability: {origin}, not a Sigmoid or Softmax, "
                          f"but its values on {RANGE_CHECK_SAMPLES} random inputs were within [0, 1] "
                          "(say otherwise with --output-kind)")
        return "probability"

    def _describe(self, load_s: float) -> dict[str, Any]:
        from optkit.model.artifact import artifact_identity

        path = Path(self.settings.artifact)
        ident = artifact_identity(path)  # as the manifest identifies it: external weights files included
        sha = ident["sha256"]
        desc = self.runner.describe()
        return {
            "artifact": path.name,
            "sha256": sha,
            "size": ident["size"],
            "external_data": ident["external_data"],
            "precision": _precision(path, self.runner),
            "provider_requested": self.settings.provider,
            "provider_in_use": _provider_in_use(desc),
            "runner": desc,
            "input": {"name": self.input_name, "shape": [None, *self.sample_shape], "dtype": self.input_dtype,
                      "length_ranges": [{"axis": i + 1, "min": lo, "max": hi}
                                        for i, (lo, hi) in sorted(self.length_ranges.items())]},
            "output": self.output_name,
            "output_kind": self.output_kind,
            "notes": list(self.notes),
            "model_version": self.settings.model_version or f"{path.stem}@{sha[:12]}",
            "load_seconds": round(load_s, 3),
            "manifest": manifest_entry(path, sha),
            "audio_input": self.audio or "on",
        }


def _warm_up_audio(sample_shape: tuple[int | None, ...], max_frames: int | None = None) -> str | None:
    """Import and run the MFCC front end once, so the first audio request does not pay for importing
    librosa/scipy and numba's compilation (seconds). Returns why audio is off, or None."""
    from optkit.data import features
    from optkit.common.lazy import is_available
    from optkit.serve.payload import RequestRejected, fit_shape

    try:
        fit_shape(np.zeros(features.FEATURE_SHAPE, np.float32), sample_shape)
    except RequestRejected:
        return (f"the model's input {tuple(sample_shape)} is not the MFCC window {features.FEATURE_SHAPE} of "
                "optkit's front end")
    if not (is_available("soundfile") and is_available("librosa")):
        return "audio input needs soundfile and librosa: pip install 'optkit[audio]'"
    clip = np.full(features.WINDOW_SAMPLES, 1e-3, dtype=np.float32)
    if max_frames is None:
        features.mfcc_from_audio(clip, features.SAMPLE_RATE)
    else:  # a dynamic time axis: the clip's natural length
        features.mfcc_natural_length(clip, features.SAMPLE_RATE, max_frames)
    return None


def _resolve(p: _Pending, value: Any = None, exc: BaseException | None = None) -> None:
    def settle() -> None:
        if p.future.done():  # cancelled by a client that went away
            return
        if exc is not None:
            p.future.set_exception(exc)
        else:
            p.future.set_result(value)

    try:
        p.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _per_shape(settings: ServeSettings) -> bool:
    """Whether the runtime serving this artifact compiles or tunes its kernels per input shape."""
    from optkit.runtime.registry import RUNNERS, is_engine

    return is_engine(settings.artifact) or RUNNERS[settings.provider].per_shape


def _make_runner(settings: ServeSettings) -> Any:
    from optkit.runtime.registry import make_runner

    extra = {"streams": settings.streams} if settings.streams > 1 else {}  # an engine's runner has no streams
    return make_runner(settings.artifact, provider=settings.provider, threads=settings.threads, **extra)


def _precision(path: Path, runner: Any) -> str:
    if path.suffix.lower() == ".onnx":
        from optkit.model.artifact import guess_precision

        return guess_precision(path)
    meta = getattr(runner, "meta", None) or {}
    return str(meta.get("precision", "unknown"))


def _provider_in_use(desc: dict[str, Any]) -> str:
    """What actually runs the model, from the runner's own report."""
    used = desc.get("providers_in_use")
    if used:
        return str(used[0])
    runner = str(desc.get("runner", "?"))
    if runner == "openvino":
        devices = (desc.get("in_effect") or {}).get("execution_devices") or [desc.get("device", "CPU")]
        return f"OpenVINO {','.join(map(str, devices))}"
    return runner


def manifest_entry(path: Path, sha256: str) -> dict[str, Any] | None:
    """The entry of ``manifest.json`` beside the artifact that describes it (by sha256, else by
    file name), or None. A manifest that cannot be read is reported, not fatal."""
    from optkit.model.artifact import Manifest

    mpath = path.parent / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        manifest = Manifest.load(mpath)
    except OptkitError as exc:
        return {"error": str(exc)}
    by_name = None
    for step, entry in manifest.entries.items():
        art = entry.get("artifact") if isinstance(entry, dict) else None
        if not isinstance(art, dict):
            continue
        if art.get("sha256") == sha256:
            return {"step": step, **entry}
        if Path(str(art.get("path", ""))).name == path.name:
            by_name = {"step": step, **entry, "note": "matched by file name; the sha256 differs from this file's"}
    return by_name
