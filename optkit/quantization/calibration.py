"""Streaming calibration for static int8 quantisation, and the calibration cache.

ONNX Runtime's calibrators (``onnxruntime.quantization.calibrate``) do the statistics; this module
only feeds them in bounded memory and caches their result:

- ORT's Entropy/Percentile (histogram) calibrators keep every intermediate activation of every
  sample until ``collect_data`` returns (~845 MiB per sample on the production-size voice model).
  ``collect_data`` may be called repeatedly (the histograms are merged), so we feed it chunks of
  ``chunk_size`` samples: peak memory stays flat whatever the number of samples. MinMax merges
  its ranges after every ``collect_data`` call, so chunked and one-shot MinMax give identical
  ranges; the histogram methods re-bin when a later chunk widens the range, so their ranges
  depend slightly on the chunking (the chunk size is part of their cache key).
- The computed ranges (ORT's ``TensorsData``) are saved beside the quantised model as
  ``<stem>.calib.json`` with the key they were computed for (model sha256, data fingerprint,
  method and parameters, ORT version) and reused while the key is unchanged.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError, PassFailed, first_line
from optkit.common.fileio import write_text_atomically
from optkit.common.lazy import lazy_import

METHODS = ("minmax", "entropy", "percentile")
# the percentile of |x| kept by method percentile (written once: the int8 config and the CLI use it)
DEFAULT_PERCENTILE = 99.999
CACHE_FORMAT = "optkit-calibration-cache"
CACHE_VERSION = 1
# Histogram methods whose result depends on how the samples are chunked (see module docstring).
HISTOGRAM_METHODS = ("entropy", "percentile")


def ort_method(method: str) -> Any:
    """The onnxruntime CalibrationMethod for an optkit method name."""
    calibrate = lazy_import("onnxruntime.quantization.calibrate")
    try:
        return {
            "minmax": calibrate.CalibrationMethod.MinMax,
            "entropy": calibrate.CalibrationMethod.Entropy,
            "percentile": calibrate.CalibrationMethod.Percentile,
        }[method]
    except KeyError:
        raise InputError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}") from None


def calibrator_options(method: str, percentile: float) -> dict[str, Any]:
    """``extra_options`` for ``create_calibrator``: what ``quantize_static`` would pass.

    ``quantize_static`` maps its ``CalibPercentile`` option to ``percentile`` and passes nothing
    else by default, so the calibrators run with ORT's own defaults (e.g. symmetric Percentile).
    """
    if method == "percentile":
        if not 0.0 < percentile <= 100.0:
            raise InputError(f"percentile {percentile:g} is out of range; give a value in (0, 100], e.g. {DEFAULT_PERCENTILE}")
        return {"percentile": float(percentile)}
    return {}


def default_op_types() -> list[str]:
    """The op types ``quantize_static`` quantises (and calibrates) when none are named."""
    registry = lazy_import("onnxruntime.quantization.registry")
    return sorted(set(registry.QLinearOpsRegistry) | set(registry.QDQRegistry))


class _ChunkReader:
    """A CalibrationDataReader over one chunk of samples, one sample (batch of 1) per run."""

    def __init__(self, input_name: str, chunk: np.ndarray):
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(chunk)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._it, None)
        if sample is None:
            return None
        return {self.input_name: np.ascontiguousarray(sample[None])}


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    tqdm = lazy_import("tqdm").tqdm
    # disable=None: show the bar only on an interactive terminal (no noise in logs/pipes).
    return tqdm(total=total, desc=desc, unit="sample", file=sys.stderr, leave=False,
                disable=None if enabled is None else not enabled, mininterval=0.5)


def calibrate(
    model_path: str | os.PathLike,
    samples: np.ndarray,
    input_name: str,
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    chunk_size: int = 2,
    work_dir: str | os.PathLike | None = None,
    op_types: list[str] | None = None,
    progress: bool | None = None,
) -> Any:
    """Compute activation ranges for ``model_path`` on ``samples`` (N, *input shape without batch).

    Returns ORT's ``TensorsData`` (what ``quantize_static`` hands to its QDQ quantizer). Memory is
    bounded by ``chunk_size`` samples' activations, whatever N is.
    """
    calibrate_mod = lazy_import("onnxruntime.quantization.calibrate")
    if chunk_size < 1:
        raise InputError(f"chunk size must be at least 1, got {chunk_size}")
    if len(samples) == 0:
        raise InputError("no calibration samples")
    cal_method = ort_method(method)
    options = calibrator_options(method, percentile)
    ops = default_op_types() if op_types is None else list(op_types)

    import tempfile

    with contextlib.ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="optkit-calib-"))
        augmented = Path(work_dir) / "augmented_model.onnx"
        # ORT's calibrators print progress lines to stdout; the CLI's stdout is for its own summary.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                calibrator = calibrate_mod.create_calibrator(
                    Path(model_path), ops, augmented_model_path=str(augmented),
                    calibrate_method=cal_method, extra_options=options,
                )
            except Exception as exc:
                raise PassFailed(f"ONNX Runtime could not prepare calibration: {_first_line(exc)}") from exc
        try:
            with _progress(len(samples), f"calibrating ({method})", progress) as bar:
                for start in range(0, len(samples), chunk_size):
                    chunk = samples[start : start + chunk_size]
                    with contextlib.redirect_stdout(io.StringIO()):
                        calibrator.collect_data(_ChunkReader(input_name, chunk))
                    bar.update(len(chunk))
            with contextlib.redirect_stdout(io.StringIO()):
                ranges = calibrator.compute_data()
        except InputError:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise PassFailed(f"calibration ({method}) failed: {_first_line(exc)}") from exc
        finally:
            # The session holds the augmented model; release it before the work dir goes.
            calibrator.infer_session = None
            del calibrator
    if not isinstance(ranges, calibrate_mod.TensorsData):
        raise PassFailed(f"calibration ({method}) returned {type(ranges).__name__}, expected TensorsData")
    return ranges


def tensor_absmax(ranges: Any) -> dict[str, float]:
    """Largest |value| seen per tensor, from a TensorsData."""
    out: dict[str, float] = {}
    for name, data in ranges.items():
        lo, hi = data.range_value
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        out[name] = float(max(np.max(np.abs(lo)) if lo.size else 0.0, np.max(np.abs(hi)) if hi.size else 0.0))
    return out


# -- cache ------------------------------------------------------------------------------------

def cache_path_for(model_out: str | os.PathLike) -> Path:
    """``model.int8.onnx`` -> ``model.int8.calib.json`` (beside the quantised model)."""
    p = Path(model_out)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(stem + ".calib.json")


def cache_key(
    model_sha256: str,
    data_fingerprint: str,
    method: str,
    percentile: float,
    num_samples: int,
    chunk_size: int,
) -> dict[str, Any]:
    """Everything the ranges depend on. Chunk size matters only for the histogram methods."""
    ort = lazy_import("onnxruntime")
    key: dict[str, Any] = {
        "model_sha256": model_sha256,
        "data_fingerprint": data_fingerprint,
        "num_samples": int(num_samples),
        "method": method,
        "onnxruntime": ort.__version__,
    }
    if method == "percentile":
        key["percentile"] = float(percentile)
    if method in HISTOGRAM_METHODS:
        key["chunk_size"] = int(chunk_size)
    return key


@dataclass
class CacheLookup:
    ranges: Any | None
    reason: str  # why it was (not) used, for the user
    stale_fields: list[str] = field(default_factory=list)


def load_cache(path: str | os.PathLike, key: dict[str, Any]) -> CacheLookup:
    """Return the cached ranges if ``path`` holds ranges computed for ``key``."""
    calibrate_mod = lazy_import("onnxruntime.quantization.calibrate")
    path = Path(path)
    if not path.exists():
        return CacheLookup(None, "no calibration cache yet")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != CACHE_FORMAT or payload.get("version") != CACHE_VERSION:
            return CacheLookup(None, f"{path.name} is not an optkit calibration cache (version {CACHE_VERSION})")
        old_key = payload["key"]
        stale = sorted(k for k in set(old_key) | set(key) if old_key.get(k) != key.get(k))
        if stale:
            return CacheLookup(None, f"calibration cache {path.name} is stale ({', '.join(stale)} changed)", stale)
        ranges = calibrate_mod.TensorsData.from_dict(payload["tensors_data"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return CacheLookup(None, f"calibration cache {path.name} is unreadable ({type(exc).__name__}); recalibrating")
    return CacheLookup(ranges, f"reused calibration cache {path.name}")


def cache_payload(key: dict[str, Any], ranges: Any, meta: dict[str, Any] | None = None) -> str:
    calibrate_mod = lazy_import("onnxruntime.quantization.calibrate")
    payload = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": key,
        "meta": meta or {},
        # ORT's own serialisation (save_tensors_data's payload), so ORT can read it back.
        "tensors_data": ranges.to_dict(),
    }
    return json.dumps(payload, cls=calibrate_mod.CalibrationCacheEncoder, indent=1) + "\n"


def save_cache(path: str | os.PathLike, key: dict[str, Any], ranges: Any, meta: dict[str, Any] | None = None) -> Path:
    return write_text_atomically(path, cache_payload(key, ranges, meta))


def write_ort_ranges(path: str | os.PathLike, ranges: Any) -> Path:
    """Write ranges in the format ``quantize_static(calibration_cache_path=...)`` loads."""
    calibrate_mod = lazy_import("onnxruntime.quantization.calibrate")
    calibrate_mod.save_tensors_data(ranges, Path(path))
    return Path(path)


@dataclass
class CalibrationOutcome:
    ranges: Any
    cache_hit: bool
    seconds: float
    message: str


def calibrate_cached(
    model_path: Path,
    samples: np.ndarray,
    input_name: str,
    key: dict[str, Any],
    cache_path: Path | None,
    recalibrate: bool,
    method: str,
    percentile: float,
    chunk_size: int,
    work_dir: Path,
    progress: bool | None = None,
) -> CalibrationOutcome:
    """Ranges from the cache when its key matches (and not ``recalibrate``), else calibrate.

    The cache itself is written by the caller once the quantised model is proven good, so a
    failed run leaves no new file behind.
    """
    reason = "recalibrating (--recalibrate)" if recalibrate else ""
    if cache_path is not None and not recalibrate:
        found = load_cache(cache_path, key)
        if found.ranges is not None:
            return CalibrationOutcome(found.ranges, True, 0.0, found.reason)
        reason = found.reason
    t0 = time.perf_counter()
    ranges = calibrate(model_path, samples, input_name, method=method, percentile=percentile,
                       chunk_size=chunk_size, work_dir=work_dir, progress=progress)
    seconds = time.perf_counter() - t0
    msg = f"calibrated {len(samples)} samples with {method} in {seconds:.1f} s (chunks of {chunk_size})"
    if reason:
        msg += f"; {reason}"
    return CalibrationOutcome(ranges, False, seconds, msg)


def _first_line(exc: BaseException) -> str:
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
