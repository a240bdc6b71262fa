"""The runner registry: every provider name optkit accepts, what it runs and how to install it.

``verify``, ``bench``, recipes (``verify.provider``), ``doctor`` and the CLI choices all read
:data:`RUNNERS`; :func:`make_runner` is the one place that picks a runner for an artifact.

The rule for ``tensorrt`` lives here: for an ``.onnx`` file it means ONNX Runtime's TensorRT
execution provider; an ``.engine`` file (a serialized TensorRT engine) runs only on native
TensorRT, whatever provider was asked for - verify and bench run an engine once, not once per
provider (:func:`providers_for`).

To add a runner: subclass :class:`optkit.runtime.base.Runner` in ``optkit/runtime/registry/<name>.py``
and add one :class:`RunnerInfo` to :data:`RUNNERS`.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError
from optkit.model.kinds import ENGINE_SUFFIXES, artifact_kind, is_engine  # noqa: F401 - a file's kind, by name



@dataclass(frozen=True)
class RunnerInfo:
    name: str                     # the provider name users type (CLI, recipes)
    kinds: tuple[str, ...]        # artifact kinds it runs: "onnx", "engine"
    target: str                   # "module:Class" of the Runner, imported when used
    extra: str                    # the optkit extra that installs its runtime
    install: str                  # the command that does
    describe: str                 # one line for help texts and doctor
    distributions: tuple[str, ...] = ()   # whose versions identify its numerics (cache keys)
    options: dict[str, Any] = field(default_factory=dict)  # fixed constructor options
    # compiles or tunes kernels per input shape (OpenVINO compiles per shape; ORT's CUDA EP runs a
    # cuDNN algorithm search per new conv input shape, seconds on a deep ResNet; TensorRT builds
    # per optimisation profile): a server feeds such a runtime only shapes it warmed up
    per_shape: bool = False
    # infer() may be called from several threads at once (``streams`` > 1: optkit serve --streams):
    # ORT sessions are thread-safe, OpenVINO runs its own streams with an infer request per thread
    streams: bool = True


RUNNERS: dict[str, RunnerInfo] = {
    "cpu": RunnerInfo("cpu", ("onnx",), "optkit.runtime.onnxruntime:OnnxRuntimeRunner", "core",
                      "pip install optkit", "ONNX Runtime, CPU execution provider",
                      ("onnxruntime",), {"provider": "cpu"}),
    "openvino": RunnerInfo("openvino", ("onnx",), "optkit.runtime.openvino:OpenVINORunner", "openvino",
                           "pip install 'optkit[openvino]'", "OpenVINO, CPU plugin", ("openvino",), per_shape=True),
    "cuda": RunnerInfo("cuda", ("onnx",), "optkit.runtime.onnxruntime:OnnxRuntimeRunner", "gpu",
                       "pip install 'optkit[gpu]' (onnxruntime-gpu, in its own environment)",
                       "ONNX Runtime, CUDA execution provider", ("onnxruntime-gpu", "onnxruntime"),
                       {"provider": "cuda"}, per_shape=True),
    # one name, two runtimes: ORT's TensorRT EP for .onnx, native TensorRT for .engine
    "tensorrt": RunnerInfo("tensorrt", ("onnx", "engine"), "optkit.runtime.onnxruntime:OnnxRuntimeRunner",
                           "tensorrt", "pip install 'optkit[tensorrt]'",
                           "ONNX Runtime's TensorRT EP for .onnx; TensorRT itself for .engine",
                           ("onnxruntime-gpu", "onnxruntime", "tensorrt"), {"provider": "tensorrt"}, per_shape=True),
}
ENGINE_RUNNER = "optkit.runtime.tensorrt:TensorRTRunner"
PROVIDERS: tuple[str, ...] = tuple(RUNNERS)


def supports_streams(path: str | Path, provider: str) -> bool:
    """Whether ``path`` on ``provider`` can run several inferences at once (``streams`` > 1). A
    TensorRT engine runs through one execution context, which is not shared between threads."""
    return not is_engine(path) and check_provider(provider).streams


def check_provider(name: str) -> RunnerInfo:
    try:
        return RUNNERS[name]
    except KeyError:
        raise InputError(f"unknown provider {name!r}; choose from {', '.join(PROVIDERS)}") from None


def providers_for(path: str | Path, providers: Sequence[str]) -> tuple[str, ...]:
    """The providers an artifact runs on, from those asked for: an engine runs on TensorRT only."""
    return ("tensorrt",) if is_engine(path) else tuple(providers)


def runtime_versions(path: str | Path, provider: str) -> dict[str, str]:
    """Versions of the runtime that would run ``path`` on ``provider`` (without importing it)."""
    from optkit.common.versions import tool_versions

    dists = ("tensorrt",) if is_engine(path) else check_provider(provider).distributions
    return tool_versions(*dists)


def make_runner(path: str | Path, provider: str = "cpu", threads: int | None = None, **options: Any):  # noqa: ANN201
    """The runner for ``path`` on ``provider`` (not yet activated: use it as a context manager)."""
    from optkit.common.fileio import require_file

    path = require_file(path, "artifact")
    kind = artifact_kind(path)
    if kind == "engine":
        target: str = ENGINE_RUNNER
        fixed: dict[str, Any] = {}
    else:
        info = check_provider(provider)
        target, fixed = info.target, info.options
    module, cls = target.split(":")
    runner_cls = getattr(importlib.import_module(module), cls)
    return runner_cls(path, threads=threads, **fixed, **options)
