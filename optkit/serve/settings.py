"""What a server runs with: flags first, then the reference service's environment variables.

The reference deployment configures its container with three variables, kept here by name:
``EXECUTION_PROVIDER`` (ONNX Runtime's provider names, e.g. ``CUDAExecutionProvider``; optkit's own
names ``cpu``/``openvino``/``cuda``/``tensorrt`` are accepted too), ``DECISION_THRESHOLD`` and
``MODEL_VERSION``; optkit adds ``OUTPUT_KIND`` (``auto``, ``probability`` or ``logit``: what the
served output is, as ``--output-kind``), so a container serving a logits model needs no changed
command, and ``MAX_AUDIO_SECONDS`` (as ``--max-audio-seconds``). A command-line flag wins over its
variable.

The limits on what one request may make the server parse (JSON depth and values, audio length) are
settings too; ``limits`` hands them to ``optkit.serve.payload``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError
from optkit.runtime.registry import ENGINE_SUFFIXES, PROVIDERS, supports_streams
from optkit.serve.payload import DEFAULT_LIMITS, ParseLimits

ENV_PROVIDER = "EXECUTION_PROVIDER"
ENV_THRESHOLD = "DECISION_THRESHOLD"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_OUTPUT_KIND = "OUTPUT_KIND"
ENV_MAX_AUDIO_SECONDS = "MAX_AUDIO_SECONDS"
# how `optkit serve --workers N` hands the settings to each uvicorn worker process
ENV_SETTINGS_JSON = "OPTKIT_SERVE_SETTINGS"

PROVIDER_ALIASES = {
    "cpu": "cpu",
    "cpuexecutionprovider": "cpu",
    "openvino": "openvino",
    "openvinoexecutionprovider": "openvino",
    "cuda": "cuda",
    "cudaexecutionprovider": "cuda",
    "tensorrt": "tensorrt",
    "tensorrtexecutionprovider": "tensorrt",
}
DEFAULT_THRESHOLD = 0.5
# what the served output is: "auto" decides at load (a Sigmoid/Softmax head, else values seen in [0, 1]);
# "logit": a raw score, turned into a probability with a sigmoid by the service
OUTPUT_KINDS = ("auto", "probability", "logit")


def provider_from_name(name: str, source: str = "provider") -> str:
    """optkit's provider name for an optkit or ONNX Runtime provider name (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in PROVIDER_ALIASES:
        raise InputError(
            f"{source} {name!r} is not a known provider; use CPUExecutionProvider, CUDAExecutionProvider, "
            "TensorrtExecutionProvider, OpenVINOExecutionProvider or cpu, openvino, cuda, tensorrt"
        )
    return PROVIDER_ALIASES[key]


def parse_threshold(value: Any, source: str = "threshold") -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{source} {value!r} is not a number") from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise InputError(f"{source} must be between 0 and 1, got {value!r}")
    return t


def parse_audio_seconds(value: Any, source: str = "max audio seconds") -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{source} {value!r} is not a number") from None
    if not (math.isfinite(t) and 0.0 < t <= 3600.0):
        raise InputError(f"{source} must be more than 0 and at most 3600 seconds, got {value!r}")
    return t


def parse_output_kind(value: Any, source: str = "output kind") -> str:
    kind = str(value).strip().lower()
    if kind not in OUTPUT_KINDS:
        raise InputError(f"{source} {value!r} is not an output kind; use {', '.join(OUTPUT_KINDS)}")
    return kind


@dataclass(frozen=True)
class ServeSettings:
    artifact: str
    provider: str = "cpu"
    threshold: float = DEFAULT_THRESHOLD
    model_version: str | None = None  # None: "<artifact stem>@<sha256[:12]>", filled in at load time
    threads: int | None = None  # the runtime's threads, all streams together (None: the runtime's default)
    # inference threads running batches at once, sharing one runtime session and its ``threads``:
    # more requests per second on a CPU whose cores one small-model inference cannot keep busy
    streams: int = 1
    max_queue: int = 8  # requests waiting for inference; more get 503 + Retry-After
    # the longest a request may wait for inference; a request the queue cannot start in time gets 503
    # (bounded by time as well as by count: a count alone lets latency grow when inference slows down)
    max_queue_wait_ms: float = 5000.0
    max_batch: int = 1  # > 1: micro-batches over the dynamic batch axis
    # how long the first request of a batch waits for company; 0: a batch is whatever queued while the
    # previous one ran (measured on 2 CPU cores: same saturation QPS as 2 ms, 2.5 ms less latency)
    max_wait_ms: float = 0.0
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies get 413
    accept_audio: bool = True  # audio bodies -> MFCC (the front end is imported and warmed at load)
    output: str | None = None  # the model output to serve (None: the only one giving one value per sample)
    output_kind: str = "auto"  # one of OUTPUT_KINDS
    # serve --output-kind as given even where the graph contradicts it (logit on a Sigmoid head: a note)
    force_output_kind: bool = False
    max_json_depth: int = DEFAULT_LIMITS.max_json_depth  # deeper JSON bodies get 400
    max_json_elements: int = DEFAULT_LIMITS.max_json_elements  # JSON bodies with more values get 413
    max_audio_seconds: float = DEFAULT_LIMITS.max_audio_seconds  # longer audio gets 413, before decoding

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise InputError(f"unknown provider {self.provider!r}; choose from {', '.join(PROVIDERS)}")
        parse_threshold(self.threshold)
        if self.max_queue < 1:
            raise InputError(f"max queue must be at least 1, got {self.max_queue}")
        if self.max_batch < 1:
            raise InputError(f"max batch must be at least 1, got {self.max_batch}")
        if not (math.isfinite(self.max_queue_wait_ms) and self.max_queue_wait_ms > 0):
            raise InputError(f"max queue wait must be a positive number of milliseconds, got {self.max_queue_wait_ms}")
        if not (math.isfinite(self.max_wait_ms) and self.max_wait_ms >= 0):
            raise InputError(f"max wait must be 0 or more milliseconds, got {self.max_wait_ms}")
        if self.max_body_bytes < 1024:
            raise InputError(f"max body size must be at least 1024 bytes, got {self.max_body_bytes}")
        if self.max_json_depth < 2:
            raise InputError(f"max JSON depth must be at least 2, got {self.max_json_depth}")
        if self.max_json_elements < 1:
            raise InputError(f"max JSON values must be at least 1, got {self.max_json_elements}")
        parse_audio_seconds(self.max_audio_seconds)
        if self.output_kind not in OUTPUT_KINDS:
            raise InputError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}, got {self.output_kind!r}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be a positive integer, got {self.threads}")
        if self.streams < 1:
            raise InputError(f"streams must be a positive integer, got {self.streams}")
        if Path(self.artifact).suffix.lower() in ENGINE_SUFFIXES and self.provider != "tensorrt":
            raise InputError(f"{Path(self.artifact).name} is a TensorRT engine: it runs on tensorrt, "
                             f"not {self.provider}")
        cpu_threads = self.threads or os.cpu_count() or 1
        if self.streams > cpu_threads and self.provider in ("cpu", "openvino"):
            raise InputError(f"--streams {self.streams} is more than the {cpu_threads} threads the runtime gets "
                             f"({'--threads' if self.threads else 'CPU count'}): each stream needs a thread of its own")
        if self.streams > 1 and not supports_streams(self.artifact, self.provider):
            raise InputError(f"{Path(self.artifact).name}: a TensorRT engine runs one inference at a time (one "
                             "execution context); serve it with --streams 1, or run more --workers")

    @property
    def is_engine(self) -> bool:
        return Path(self.artifact).suffix.lower() in ENGINE_SUFFIXES

    @property
    def limits(self) -> ParseLimits:
        return ParseLimits(max_json_depth=self.max_json_depth, max_json_elements=self.max_json_elements,
                           max_audio_seconds=self.max_audio_seconds)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeSettings":
        return cls(**json.loads(text))


def resolve_settings(artifact: str | os.PathLike, provider: str | None = None, threshold: float | None = None,
                     model_version: str | None = None, environ: Mapping[str, str] | None = None,
                     output_kind: str | None = None, max_audio_seconds: float | None = None,
                     **limits: Any) -> ServeSettings:
    """Settings from flags (non-None wins) and the environment variables, then the defaults.

    A ``.engine`` file runs on TensorRT; with no provider given anywhere, that is what it gets."""
    env = os.environ if environ is None else environ
    if provider is not None:
        chosen = provider_from_name(provider, "--provider")
    elif env.get(ENV_PROVIDER, "").strip():
        chosen = provider_from_name(env[ENV_PROVIDER], ENV_PROVIDER)
    else:
        chosen = "tensorrt" if Path(artifact).suffix.lower() in ENGINE_SUFFIXES else "cpu"
    if threshold is not None:
        t = parse_threshold(threshold, "--threshold")
    elif env.get(ENV_THRESHOLD, "").strip():
        t = parse_threshold(env[ENV_THRESHOLD], ENV_THRESHOLD)
    else:
        t = DEFAULT_THRESHOLD
    version = model_version if model_version is not None else (env.get(ENV_MODEL_VERSION, "").strip() or None)
    if output_kind is not None:
        kind = parse_output_kind(output_kind, "--output-kind")
    elif env.get(ENV_OUTPUT_KIND, "").strip():
        kind = parse_output_kind(env[ENV_OUTPUT_KIND], ENV_OUTPUT_KIND)
    else:
        kind = "auto"
    if max_audio_seconds is not None:
        audio_s = parse_audio_seconds(max_audio_seconds, "--max-audio-seconds")
    elif env.get(ENV_MAX_AUDIO_SECONDS, "").strip():
        audio_s = parse_audio_seconds(env[ENV_MAX_AUDIO_SECONDS], ENV_MAX_AUDIO_SECONDS)
    else:
        audio_s = DEFAULT_LIMITS.max_audio_seconds
    settings = ServeSettings(artifact=str(artifact), provider=chosen, threshold=t, model_version=version,
                             output_kind=kind, max_audio_seconds=audio_s)
    return replace(settings, **{k: v for k, v in limits.items() if v is not None})
