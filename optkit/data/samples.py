"""Sample sets for calibration, reference and validation: loading, checking, batching.

A sample set is a directory (of ``.npy`` files, each one sample shaped like the model input
without the batch dimension or a batch with a leading dimension; of ``.npz`` shards with ``x``
and optionally labels ``y``; or of audio files - see optkit.data.source, which reads such a
directory lazily, shard by shard), one ``.npy`` file, or an ``.npz`` file with ``x`` (and
optionally integer labels ``y``). Every way such a set can be wrong is an InputError that names
the file.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optkit.common.errors import InputError


@dataclass
class SampleSet:
    x: np.ndarray  # (N, *sample_shape) float32
    y: np.ndarray | None = None  # (N,) int64 labels, if known
    source: str = ""
    files: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size]

    def take(self, n: int | None) -> "SampleSet":
        if n is None or n >= len(self):
            return self
        return SampleSet(self.x[:n], None if self.y is None else self.y[:n], self.source, self.files[:n])


def check_dtype(have: np.dtype, where: str, dtype: str) -> bool:
    """InputError unless data of dtype ``have`` can feed a model input of ``dtype``; True when it
    must be cast (float64 data for a float32 model)."""
    if have == object or not np.issubdtype(have, np.number):
        raise InputError(f"{where}: dtype {have} is not numeric; expected {dtype}")
    if np.dtype(dtype) != have:
        if np.issubdtype(np.dtype(dtype), np.floating) and have == np.float64:
            # float64 from numpy defaults is common and lossless enough for fp32 models.
            return True
        raise InputError(f"{where}: dtype {have} does not match the model input dtype {dtype}")
    return False


def sample_count(shape: tuple[int, ...], where: str, sample_shape: tuple[int, ...] | None) -> int:
    """How many samples an array of ``shape`` holds: 1 when it is one sample shaped like the model
    input, N for a batch (N, *sample_shape); without a known sample shape, every array is a batch."""
    shape = tuple(shape)
    if sample_shape is not None:
        if shape == tuple(sample_shape):
            return 1
        if shape[1:] != tuple(sample_shape):
            raise InputError(
                f"{where}: shape {shape} does not match the model input "
                f"{tuple(sample_shape)} (one sample) or (N, {', '.join(map(str, sample_shape))}) (a batch)"
            )
    elif len(shape) < 1:
        raise InputError(f"{where}: a scalar is not a sample")
    return int(shape[0])


def _check_array(arr: np.ndarray, where: str, sample_shape: tuple[int, ...] | None, dtype: str) -> np.ndarray:
    if check_dtype(arr.dtype, where, dtype):
        arr = arr.astype(dtype)
    sample_count(arr.shape, where, sample_shape)
    if sample_shape is not None and tuple(arr.shape) == tuple(sample_shape):
        arr = arr[None]
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InputError(f"{where}: contains {bad} NaN/Inf values")
    return arr


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy file ({exc})") from exc


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap content hash of a data path (file or directory), for cache keys."""
    import hashlib

    from optkit.common.fileio import sha256_file

    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.iterdir()):
            if f.is_file():
                h.update(f.name.encode())
                h.update(sha256_file(f).encode())
    elif path.exists():
        h.update(sha256_file(path).encode())
    else:
        h.update(b"missing:" + str(path).encode())
    return h.hexdigest()


def random_samples(n: int, sample_shape: tuple[int, ...], seed: int = 0) -> SampleSet:
    """A seeded standard-normal sample set, used when no reference data is given."""
    rng = np.random.default_rng(seed)
    return SampleSet(rng.standard_normal((n, *sample_shape), dtype=np.float32), None, f"random(seed={seed})")


# -- calibration outliers ------------------------------------------------------------------------
OUTLIER_POLICIES = ("clip", "refuse", "keep")
# sqrt(float32 max) ~ 1.8e19: a value whose square (energy, variance, norm, x*w at weight ~x) is
# not representable in float32. Such data cannot be calibrated, whatever the policy.
ABSURD_LIMIT = float(np.sqrt(np.finfo(np.float32).max))
# "Far outside the rest of the set": beyond the 0.1-99.9 percentile band by more than this many
# band widths. The bundled MFCC calibration and validation sets reach 0.7 band widths.
OUTLIER_BAND_PERCENTILES = (0.1, 99.9)
OUTLIER_BAND_FACTOR = 10.0
# Clipping more than this fraction of the values would change the data, not repair it: refused.
OUTLIER_MAX_CLIP_FRACTION = 0.01


@dataclass
class OutlierDecision:
    policy: str
    values: int                 # how many values were outside the bounds
    samples: list[str]          # which samples (file names or indices), at most 10
    bounds: tuple[float, float]  # values outside [lo, hi] are outliers
    largest: float              # largest |x| in the set before any clipping
    action: str                 # "none", "clipped", "kept"

    def to_json(self) -> dict[str, object]:
        return {"policy": self.policy, "values": self.values, "samples": self.samples,
                "bounds": list(self.bounds), "largest": self.largest, "action": self.action}

    def message(self, source: str) -> str:
        if self.action == "none":
            return (f"calibration data {source}: no outliers (all values within [{self.bounds[0]:.4g}, "
                    f"{self.bounds[1]:.4g}])")
        verb = "clipped to" if self.action == "clipped" else "kept (policy 'keep'), outside"
        return (f"WARNING: calibration data {source}: {self.values} outlier value(s) (largest |x| "
                f"{self.largest:.3g}) in {_sample_list(self.samples)} {verb} [{self.bounds[0]:.4g}, "
                f"{self.bounds[1]:.4g}]")


def _sample_list(names: list[str]) -> str:
    return "sample(s) " + ", ".join(names) + (" ..." if len(names) >= 10 else "")


def screen_outliers(samples: SampleSet, policy: str = "clip") -> tuple[SampleSet, OutlierDecision]:
    """Refuse, clip or keep calibration values far outside the rest of the set.

    One value of 1e30 in a calibration set used to give an int8 model whose ranges were set by
    that value (every real activation then quantised to zero): exit 0, 42 % decision agreement
    later. Non-finite values are already refused by :func:`load_samples`. Values beyond
    ``ABSURD_LIMIT`` are refused when they are the bulk of the set (nothing sane to clip to);
    outliers relative to the 0.1-99.9 percentile band are clipped (default), refused, or kept
    with a warning. The decision goes into the pass's info (manifest) and messages.
    """
    if policy not in OUTLIER_POLICIES:
        raise InputError(f"unknown outlier policy {policy!r}; use one of {', '.join(OUTLIER_POLICIES)}")
    x = samples.x
    flat = x.reshape(-1)
    mag = np.abs(flat)
    largest = float(np.max(mag)) if flat.size else 0.0
    absurd = mag >= ABSURD_LIMIT
    if flat.size and float(np.median(mag)) >= ABSURD_LIMIT:
        raise InputError(
            f"{samples.source}: calibration values are absurd (the bulk of the set reaches |x| {largest:.3g}, "
            f"beyond {ABSURD_LIMIT:.3g} where float32 activations overflow once squared or scaled); "
            "check the data's units and preprocessing")
    # the band comes from the sane values only, so a few absurd ones cannot widen it
    sane = flat[~absurd].astype(np.float64)
    q_lo, q_hi = (float(v) for v in np.percentile(sane, OUTLIER_BAND_PERCENTILES))
    band = q_hi - q_lo
    if band <= 0:
        band = max(abs(q_lo), abs(q_hi), 1.0)
    lo = max(q_lo - OUTLIER_BAND_FACTOR * band, -ABSURD_LIMIT)
    hi = min(q_hi + OUTLIER_BAND_FACTOR * band, ABSURD_LIMIT)
    bad = (x < lo) | (x > hi)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return samples, OutlierDecision(policy, 0, [], (lo, hi), largest, "none")
    per_sample = bad.reshape(len(x), -1).any(axis=1)
    idx = np.flatnonzero(per_sample)
    by_file = len(samples.files) == len(x)
    names = [samples.files[i] if by_file else f"#{i}" for i in idx[:10]]
    if policy == "refuse" or (largest >= ABSURD_LIMIT and policy == "keep"):
        raise InputError(
            f"{samples.source}: {n_bad} calibration value(s) far outside the rest of the set (largest |x| "
            f"{largest:.3g}; the bulk lies in [{q_lo:.4g}, {q_hi:.4g}]) in {_sample_list(names)}; fix or remove "
            "them, or pass outliers=clip to clip them")
    if policy == "keep":
        return samples, OutlierDecision(policy, n_bad, names, (lo, hi), largest, "kept")
    if n_bad > max(OUTLIER_MAX_CLIP_FRACTION * x.size, 1):  # a single value is always clippable
        raise InputError(
            f"{samples.source}: {n_bad} of {x.size} calibration values ({n_bad / x.size:.1%}) lie far outside the "
            f"rest of the set (largest |x| {largest:.3g}) in {_sample_list(names)}; too many to clip "
            f"(limit {OUTLIER_MAX_CLIP_FRACTION:.0%}): fix the data")
    clipped = np.clip(x, lo, hi).astype(x.dtype, copy=False)
    return (SampleSet(clipped, samples.y, samples.source, samples.files),
            OutlierDecision(policy, n_bad, names, (lo, hi), largest, "clipped"))
