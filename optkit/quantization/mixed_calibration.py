"""int8 calibration data of mixed length (variable-length speech), never padded.

For a model whose input has a declared length range (``optkit export --dynamic-axis ...
--length-range``), ``--calibration`` may be a directory of ``.npy`` / audio files of any lengths or a
ragged ``.npz`` (``optkit.data.ragged``). The samples stay a list of arrays of their own lengths:

- statistics: :class:`optkit.quantization.calib_stats.StatsCollector` runs one sample at a time and
  merges per-tensor histograms, so it takes any length as it is (ONNX Runtime's own histogram
  calibrators stack per-batch outputs and fail on mixed lengths);
- validation: the held-out samples are a seeded split stratified by class and length bucket
  (``optkit.quantization.split.split_by_length``), so every length bucket is in both parts where it
  can be, and trials run them length by length (``optkit.verification.lengths.run_by_length``), the gate
  meaning what it means on fixed-length data;
- the outlier screen and the input equalisation look at every frame of every sample (the samples
  joined along the time axis: the same values, one array).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class MixedSamples:
    x: list[np.ndarray]             # one array per sample, without the batch axis
    y: np.ndarray | None
    source: str
    time_axis: int                  # of a sample

    def __len__(self) -> int:
        return len(self.x)

    def describe(self) -> str:
        n = [s.shape[self.time_axis] for s in self.x]
        return f"{len(n)} samples of lengths {min(n)}..{max(n)} ({len(set(n))} distinct, not padded)"


def load_mixed(path: str | os.PathLike, spec: Any, label: str, limit: int | None = None) -> MixedSamples | None:
    """The calibration data as a mixed-length set when the model input has a declared length range
    and the data is a ragged ``.npz`` or a directory of ``.npy``/audio files; else None (the
    ordinary fixed-shape path). A sample outside the range is one line naming it."""
    if not getattr(spec, "ranges", ()):
        return None
    p = Path(path)
    if p.is_file() and p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            if "offsets" not in z.files:
                return None
    elif p.is_dir():
        from optkit.data.source import AUDIO, NPY, _directory_kind

        if _directory_kind(p)[0] not in (AUDIO, NPY):
            return None
    else:
        return None
    from optkit.data.ragged import load_ragged
    from optkit.verification.lengths import check_range

    axis, _lo, hi = spec.ranges[0]
    data = load_ragged(p, sample_ndim=len(spec.shape) - 1, time_axis=axis - 1, max_frames=hi)
    x, y = data.samples[:limit], None if data.labels is None else data.labels[:limit]
    check_range([spec], np.array([s.shape[axis - 1] for s in x]), f"calibration data {p.name}")
    return MixedSamples([s.astype(spec.dtype, copy=False) for s in x], y, data.source, axis - 1)


def joined(x: list[np.ndarray], time_axis: int) -> np.ndarray:
    """Every sample joined along the time axis, as one batch of one: the same values, one array."""
    return np.concatenate(x, axis=time_axis)[None]


def screen(mixed: MixedSamples, policy: str) -> tuple[MixedSamples, Any]:
    """:func:`optkit.data.samples.screen_outliers` over every value of the set; a clip applies the
    same bounds to each sample."""
    from optkit.data.samples import SampleSet, screen_outliers

    _, decision = screen_outliers(SampleSet(joined(mixed.x, mixed.time_axis), None, mixed.source), policy)
    if decision.action == "clipped":
        lo, hi = decision.bounds
        mixed = replace(mixed, x=[np.clip(s, lo, hi) for s in mixed.x])
    return mixed, decision
