"""Sample sets of mixed length (variable-length speech): one array per sample, grouped by length.

A :class:`RaggedSet` holds samples whose shapes differ only along one *time axis* (an axis of the
sample, i.e. the model input's axis minus one for the batch). It never pads: :meth:`RaggedSet.groups`
hands out every length's samples stacked as one batch, so a model with a dynamic time axis runs each
length on exactly its own frames.

Where it comes from (:func:`load_ragged`):

- a directory of ``.npy`` files, each one sample (or a batch of samples of one length), lengths
  free from file to file;
- one ``.npz`` with the ragged layout :data:`RAGGED_KEYS`: ``x`` is every sample concatenated
  along the time axis, ``offsets`` ``(N + 1,)`` int the start of each sample on that axis (the first
  0, strictly increasing, the last the total length), ``time_axis`` the sample axis (default: the
  last), optional integer labels ``y`` ``(N,)``. Chosen over "one array per length" because it keeps
  the samples' order (labels, references and flipped-sample tables line up with the file) and is
  what ``np.split`` reads back in one call;
- a directory of audio files: MFCCs of each file's natural length (``max_frames`` caps it: a longer
  file keeps its centre), labels from ``labels.csv`` as for fixed-length audio.

:func:`ragged_bytes` writes the ``.npz`` layout (a reference's mixed-length inputs and outputs use it).
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optkit.common.errors import InputError

RAGGED_KEYS = ("x", "offsets", "time_axis", "y")


@dataclass
class RaggedSet:
    samples: list[np.ndarray]       # each shaped like the model input without the batch axis
    labels: np.ndarray | None
    source: str
    time_axis: int                  # the sample axis whose length varies

    def __post_init__(self) -> None:
        if not self.samples:
            raise InputError(f"{self.source}: no samples")
        ref = self.samples[0]
        for i, s in enumerate(self.samples):
            if s.ndim != ref.ndim or not -ref.ndim <= self.time_axis < ref.ndim:
                raise InputError(f"{self.source}: sample {i} has shape {s.shape}, sample 0 {ref.shape}")
            other = [d for k, d in enumerate(s.shape) if k != self.time_axis % s.ndim]
            if other != [d for k, d in enumerate(ref.shape) if k != self.time_axis % ref.ndim]:
                raise InputError(f"{self.source}: sample {i} has shape {s.shape}, sample 0 {ref.shape}: "
                                 f"only axis {self.time_axis} may differ")
        if self.labels is not None and len(self.labels) != len(self.samples):
            raise InputError(f"{self.source}: {len(self.labels)} labels for {len(self.samples)} samples")

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([s.shape[self.time_axis] for s in self.samples], dtype=np.int64)

    def groups(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(length, its samples stacked (n, *shape), their indices in the set), shortest first."""
        lengths = self.lengths
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            yield int(length), np.stack([self.samples[i] for i in idx]), idx

    def describe(self) -> str:
        n = self.lengths
        return f"{len(self)} samples, lengths {n.min()}..{n.max()} ({len(np.unique(n))} distinct)"


def split_offsets(x: np.ndarray, offsets: np.ndarray, axis: int, where: str) -> list[np.ndarray]:
    """The samples of a flattened ragged array, offsets validated (one line naming what is wrong)."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 2 or not np.issubdtype(offsets.dtype, np.integer):
        raise InputError(f"{where}: 'offsets' must be integers of shape (N + 1,), got {offsets.dtype} {offsets.shape}")
    if not -x.ndim <= axis < x.ndim:
        raise InputError(f"{where}: time_axis {axis} is not an axis of 'x' {x.shape}")
    total = x.shape[axis]
    if offsets[0] != 0 or offsets[-1] != total:
        raise InputError(f"{where}: offsets must run from 0 to the length of 'x' along axis {axis} ({total}), "
                         f"got {int(offsets[0])}..{int(offsets[-1])}")
    steps = np.diff(offsets)
    if (steps <= 0).any():
        i = int(np.flatnonzero(steps <= 0)[0])
        raise InputError(f"{where}: offsets must increase strictly (sample {i}: {int(offsets[i])} -> {int(offsets[i + 1])})")
    return [np.ascontiguousarray(s) for s in np.split(x, offsets[1:-1], axis=axis)]


def ragged_arrays(samples: Sequence[np.ndarray], time_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(x, offsets): the samples concatenated along the time axis and where each starts."""
    lengths = [s.shape[time_axis] for s in samples]
    return (np.concatenate(list(samples), axis=time_axis),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def ragged_bytes(samples: Sequence[np.ndarray], time_axis: int = -1, y: np.ndarray | None = None) -> bytes:
    """The ``.npz`` ragged layout of ``samples`` (see the module docstring)."""
    x, offsets = ragged_arrays(samples, time_axis)
    arrays = {"x": x, "offsets": offsets, "time_axis": np.array(time_axis, dtype=np.int64)}
    if y is not None:
        arrays["y"] = np.asarray(y)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_ragged(path: str | os.PathLike, samples: Sequence[np.ndarray], time_axis: int = -1,
                 y: np.ndarray | None = None) -> Path:
    from optkit.common.fileio import atomic_output

    data = ragged_bytes(samples, time_axis, y)
    with atomic_output(path, suffix=".npz") as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _labels(y: np.ndarray | None, n: int, where: str) -> np.ndarray | None:
    if y is None:
        return None
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{where}: 'y' must be integer labels of shape ({n},), got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _finite(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.float64:
        x = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InputError(f"{where}: contains {int((~np.isfinite(x)).sum())} NaN/Inf values")
    return x


def load_ragged(path: str | os.PathLike, sample_ndim: int | None = None, time_axis: int = -1,
                max_frames: int | None = None) -> RaggedSet:
    """A mixed-length set from a ragged ``.npz``, a directory of ``.npy`` or of audio files.
    ``sample_ndim`` (the model input's rank minus one) tells a one-sample ``.npy`` from a batch."""
    from optkit.data.source import AUDIO, NPY, _audio_labels, _directory_kind

    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist")
    if path.is_file() and path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in ("x", "offsets") if k not in z.files]
                if missing:
                    raise InputError(f"{path}: a mixed-length .npz needs 'x' and 'offsets' (missing: "
                                     f"{', '.join(missing)})")
                x, offsets = z["x"], z["offsets"]
                axis = int(z["time_axis"]) if "time_axis" in z.files else time_axis
                y = z["y"] if "y" in z.files else None
        except InputError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        samples = split_offsets(_finite(x, f"{path}:x"), offsets, axis, str(path))
        return RaggedSet(samples, _labels(y, len(samples), str(path)), str(path), axis)
    if not path.is_dir():
        raise InputError(f"{path}: expected a ragged .npz (x, offsets) or a directory of .npy or audio files")
    kind, files = _directory_kind(path)
    if kind == AUDIO:
        from optkit.data.features import mfcc_natural_length, read_audio

        samples = []
        for name in files:
            y, sr = read_audio(path / name)
            try:
                samples.append(mfcc_natural_length(y, sr, max_frames))
            except InputError as exc:
                raise InputError(f"{path / name}: {exc}") from None
        return RaggedSet(samples, _audio_labels(path, files), str(path), -1)
    if kind != NPY:
        raise InputError(f"{path}: a mixed-length directory holds .npy or audio files; for .npz use one ragged "
                         "file (x, offsets)")
    from optkit.data.samples import _load_npy

    samples = []
    for name in files:
        arr = _finite(_load_npy(path / name), str(path / name))
        batch = sample_ndim is not None and arr.ndim == sample_ndim + 1
        samples.extend(list(arr) if batch else [arr])
    return RaggedSet(samples, None, str(path), time_axis)
