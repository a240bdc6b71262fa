"""The engine sidecar ``OUT.engine.json``: what an engine was built with, and whether it can load here.

A TensorRT engine only deserializes with the TensorRT version and the GPU architecture (compute
capability) it was built for, and standard TensorRT has no pre-flight check: it logs an error
and ``deserialize_cuda_engine`` returns None. So build-engine records the build environment in a
sidecar and the TensorRT runner compares it with the current one before loading, to say
"rebuild" instead of crashing. Everything here is pure (dicts in, dicts/strings out) so it is
tested without a GPU.

Policy:
- TensorRT version: must be identical, unless the engine was built version-compatible; then
  the runtime may be newer within the same major, or 11.x for a 10.x engine (NVIDIA's
  engine-compatibility rules). An engine never loads on an older TensorRT.
- Compute capability: must be identical, unless built with hardware compatibility
  "ampere_plus" (then any compute capability >= 8.0 is fine).
- GPU name differs but compute capability matches: a warning (it loads; timings may differ).
- Sidecar missing: a warning, and loading is attempted (engines built by trtexec or Polygraphy
  have no sidecar); a failed deserialize is still reported as a clear error by the runner.
- Sidecar present but unreadable, or lacking the TensorRT version: an error (rebuild).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError
from optkit.common.fileio import write_json_atomically

FORMAT = "optkit-tensorrt-engine"
META_VERSION = 1
REQUIRED_FIELDS = ("format", "meta_version", "tensorrt_version")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def make_sidecar(
    *,
    tensorrt_version: str,
    gpu_name: str | None,
    compute_capability: str | None,
    precision: str,
    profiles: list[dict[str, Any]],
    workspace_bytes: int,
    builder_flags: list[str],
    network_flags: list[str],
    opt_level: int,
    version_compatible: bool,
    hardware_compatibility: str,
    source_onnx: str,
    source_onnx_sha256: str,
    built_onnx_sha256: str,
    engine_sha256: str,
    optkit_version: str,
    created: str,
    **extra: Any,
) -> dict[str, Any]:
    """The sidecar as a JSON-ready dict (keyword-only, so a field cannot be silently swapped)."""
    return {
        "format": FORMAT,
        "meta_version": META_VERSION,
        "tensorrt_version": tensorrt_version,
        "gpu": {"name": gpu_name, "compute_capability": compute_capability},
        "precision": precision,
        "profiles": profiles,
        "workspace_bytes": int(workspace_bytes),
        "builder_flags": list(builder_flags),
        "network_flags": list(network_flags),
        "builder_optimization_level": int(opt_level),
        "version_compatible": bool(version_compatible),
        "hardware_compatibility": hardware_compatibility,
        "source_onnx": source_onnx,
        "source_onnx_sha256": source_onnx_sha256,
        # The ONNX actually parsed: differs from the source when optkit converted it to fp16/int8.
        "built_onnx_sha256": built_onnx_sha256,
        "engine_sha256": engine_sha256,
        "optkit_version": optkit_version,
        "created": created,
        **extra,
    }


def write_sidecar(engine_path: str | os.PathLike, meta: dict[str, Any], dest: str | os.PathLike | None = None) -> Path:
    """Write the sidecar of ``engine_path`` (to ``dest`` instead: a pass's temporary side file)."""
    return write_json_atomically(dest or sidecar_path(engine_path), meta)


def read_sidecar(engine_path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of ``engine_path`` as a dict, None if there is none, InputError if unreadable."""
    path = sidecar_path(engine_path)
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"engine sidecar {path} is not readable JSON ({exc}); rebuild the engine") from exc
    if not isinstance(meta, dict):
        raise InputError(f"engine sidecar {path} is not a JSON object; rebuild the engine")
    return meta


@dataclass
class Compatibility:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in str(version).split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _cc_tuple(cc: Any) -> tuple[int, int] | None:
    if cc is None:
        return None
    if isinstance(cc, (list, tuple)) and len(cc) == 2:
        return int(cc[0]), int(cc[1])
    try:
        major, minor = str(cc).split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def version_loads(built: str, current: str, version_compatible: bool) -> bool:
    """Whether an engine built by TensorRT ``built`` loads on TensorRT ``current``."""
    b, c = _version_tuple(built), _version_tuple(current)
    if not b or not c:
        return False
    if b == c:
        return True
    if not version_compatible or c < b:
        return False
    return c[0] == b[0] or (b[0] == 10 and c[0] == 11)


def check_compatible(meta: dict[str, Any] | None, current: dict[str, Any]) -> Compatibility:
    """Compare a sidecar with the current environment.

    ``current``: ``{"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA H100 80GB HBM3",
    "compute_capability": "9.0"}`` (gpu fields may be None when unknown).
    """
    result = Compatibility()
    if meta is None:
        result.warnings.append("no sidecar JSON next to the engine: cannot check the TensorRT version and GPU "
                               "it was built for before loading")
        return result
    missing = [f for f in REQUIRED_FIELDS if f not in meta or meta[f] in (None, "")]
    if missing:
        result.errors.append(f"its sidecar lacks {', '.join(missing)}")
        return result
    if meta["format"] != FORMAT:
        result.errors.append(f"its sidecar has format {meta['format']!r}, expected {FORMAT!r}")
        return result
    if int(meta["meta_version"]) > META_VERSION:
        result.errors.append(f"its sidecar has meta_version {meta['meta_version']}, newer than this optkit "
                             f"understands ({META_VERSION})")
        return result

    built_trt = str(meta["tensorrt_version"])
    cur_trt = str(current.get("tensorrt_version") or "")
    vc = bool(meta.get("version_compatible"))
    if not version_loads(built_trt, cur_trt, vc):
        why = " (version-compatible engines load only on the same or a newer TensorRT)" if vc else ""
        result.errors.append(f"it was built with TensorRT {built_trt}, this is TensorRT {cur_trt or 'unknown'}{why}")

    gpu = meta.get("gpu") if isinstance(meta.get("gpu"), dict) else {}
    built_cc, cur_cc = _cc_tuple(gpu.get("compute_capability")), _cc_tuple(current.get("compute_capability"))
    hw = str(meta.get("hardware_compatibility") or "none").lower()
    if built_cc is None or cur_cc is None:
        which = "the sidecar" if built_cc is None else "this machine"
        result.warnings.append(f"the compute capability of {which} is unknown: cannot check the GPU before loading")
    elif hw == "ampere_plus":
        if cur_cc < (8, 0):
            result.errors.append(f"it was built for Ampere or newer GPUs (hardware compatibility ampere_plus), "
                                 f"this GPU has compute capability {cur_cc[0]}.{cur_cc[1]}")
    elif built_cc != cur_cc:
        result.errors.append(
            f"it was built for compute capability {built_cc[0]}.{built_cc[1]} ({gpu.get('name') or 'unknown GPU'}), "
            f"this GPU is {cur_cc[0]}.{cur_cc[1]} ({current.get('gpu_name') or 'unknown GPU'})"
        )
    elif gpu.get("name") and current.get("gpu_name") and gpu["name"] != current["gpu_name"]:
        result.warnings.append(f"it was built on {gpu['name']}, this is {current['gpu_name']} (same compute "
                               "capability: it loads, but tactics were timed on the other GPU)")
    return result


def incompatibility_message(engine_path: str | os.PathLike, compat: Compatibility,
                            meta: dict[str, Any] | None = None) -> str:
    """One line telling the user why the engine cannot load here and how to rebuild it."""
    name = Path(engine_path).name
    src = (meta or {}).get("source_onnx") or "MODEL.onnx"
    return (f"engine {name} cannot be loaded here: {'; '.join(compat.errors)}; TensorRT engines only run with "
            f"the TensorRT version and GPU they were built for: rebuild it on this machine with "
            f"optkit build-engine {src} -o {name}")
