"""Data sets too large for memory, read lazily one shard at a time.

A data directory is one of (files are taken in name order):

- ``.npy`` files, each one sample shaped like the model input without the batch axis, or a batch
  ``(N, *sample_shape)``; no labels;
- ``.npz`` shards, each with ``x`` ``(N, *sample_shape)`` and optionally integer labels ``y``
  ``(N,)`` (in every shard or in none); other arrays in a shard (e.g. ``group``) are ignored;
- audio files (``.wav``, ``.flac``, ``.ogg``), one utterance each, turned into model inputs by
  optkit's MFCC front end (:mod:`optkit.data.features`) when their shard is read, ``AUDIO_SHARD``
  files per shard; optional labels in a ``labels.csv`` sidecar (a ``file,label`` header, then one
  row per audio file).

:func:`open_samples` reads only the ``.npy`` headers (and the small label arrays), so a
:class:`DataSource` knows its length, sample shape and shard boundaries without loading any
data; :meth:`DataSource.read_shard` loads one shard on demand. :class:`LazyArray` is the
array-like view (``shape``, ``dtype``, ``len``, row slices) that the batch loops of verify,
export and calibration slice, so they hold one shard at a time instead of the whole set.

A DataSource travels as a small :meth:`~DataSource.spec` (directory, file names, sample counts,
sha256 of every file): a Ray worker reopens it with :meth:`DataSource.from_spec` and reads its
own rows from the directory, which must therefore be at the same path on every node. When the
sha256s are known (a reference made from the directory records them), every file is checked as it
is read, so a changed or different copy is an error, never a silently different result.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optkit.data.samples import SampleSet, _check_array, _load_npy, check_dtype, sample_count
from optkit.common.errors import InputError, first_line

NPY, NPZ, AUDIO = "npy", "npz", "audio"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
AUDIO_SHARD = 64  # audio files per shard (one MFCC each)
LABELS_CSV = "labels.csv"


def _npy_header(f: Any, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an open .npy stream, reading only its header."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{where}: not a readable .npy array ({first_line(exc)})") from exc
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _npz_member_header(path: Path, member: str) -> tuple[tuple[int, ...], np.dtype] | None:
    try:
        with zipfile.ZipFile(path) as zf:
            if f"{member}.npy" not in zf.namelist():
                return None
            with zf.open(f"{member}.npy") as f:
                return _npy_header(f, f"{path}:{member}")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz shard ({first_line(exc)})") from exc


def _npz_labels(path: Path, n: int) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            y = z["y"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz shard ({first_line(exc)})") from exc
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{path}: 'y' must be integer labels of shape ({n},), got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _audio_labels(root: Path, files: list[str]) -> np.ndarray | None:
    path = root / LABELS_CSV
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable labels file ({first_line(exc)})") from exc
    if not rows or [c.strip() for c in rows[0]] != ["file", "label"]:
        raise InputError(f"{path}: the first line must be the header 'file,label'")
    labels: dict[str, int] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[1].strip().lstrip("-").isdigit():
            raise InputError(f"{path}:{line}: expected 'FILE,INTEGER_LABEL', got {','.join(row)!r}")
        labels[row[0].strip()] = int(row[1])
    missing = [f for f in files if f not in labels]
    if missing:
        raise InputError(f"{path}: no label for {len(missing)} audio file(s), e.g. {missing[0]}")
    unknown = sorted(set(labels) - set(files))
    if unknown:
        raise InputError(f"{path}: labels for {len(unknown)} file(s) that are not in {root}, e.g. {unknown[0]}")
    return np.array([labels[f] for f in files], dtype=np.int64)


def _directory_kind(root: Path) -> tuple[str, list[str]]:
    names = sorted(p.name for p in root.iterdir() if p.is_file())
    for kind, suffixes in ((NPY, (".npy",)), (NPZ, (".npz",)), (AUDIO, AUDIO_SUFFIXES)):
        files = [n for n in names if n.lower().endswith(suffixes)]
        if files:
            return kind, files
    raise InputError(f"data directory {root} has no .npy files (nor .npz shards or audio files "
                     f"{', '.join(AUDIO_SUFFIXES)})")


def open_samples(path: str | os.PathLike, sample_shape: tuple[int, ...] | None = None,
                 dtype: str = "float32", limit: int | None = None) -> "DataSource":
    """A data directory as a :class:`DataSource`, from file headers only (see the module doc).

    ``sample_shape``: the model input without the batch axis (None: every .npy/.npz array is a
    batch); ``limit``: only the first N samples.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"data directory {root} does not exist" if not root.exists()
                         else f"{root} is not a directory")
    kind, files = _directory_kind(root)
    counts: list[int] = []
    shapes: set[tuple[int, ...]] = set()
    labels: list[np.ndarray] = []
    if kind == AUDIO:
        from optkit.data import features

        if sample_shape is not None and tuple(sample_shape) != features.FEATURE_SHAPE:
            raise InputError(f"{root}: audio becomes MFCC inputs of shape {features.FEATURE_SHAPE}; the model "
                             f"input is {tuple(sample_shape)}")
        check_dtype(np.dtype(np.float32), str(root), dtype)
        sample_shape = features.FEATURE_SHAPE
        counts = [1] * len(files)
        y = _audio_labels(root, files)
    else:
        with_y = []
        for name in files:
            f = root / name
            if kind == NPY:
                try:
                    with open(f, "rb") as fh:
                        shape, have = _npy_header(fh, str(f))
                except OSError as exc:
                    raise InputError(f"{f}: cannot read ({exc.strerror or exc})") from exc
                has_y = False
            else:
                header = _npz_member_header(f, "x")
                if header is None:
                    raise InputError(f"{f}: .npz shard has no array 'x'")
                shape, have = header
                has_y = _npz_member_header(f, "y") is not None
            where = str(f) if kind == NPY else f"{f}:x"
            check_dtype(have, where, dtype)
            n = sample_count(shape, where, sample_shape)
            if sample_shape is None:
                shapes.add(shape[1:])
            counts.append(n)
            with_y.append(has_y)
            if has_y:
                labels.append(_npz_labels(f, n))
        if len(shapes) > 1:
            raise InputError(f"data directory {root}: samples have different shapes {sorted(shapes)}")
        if any(with_y) and not all(with_y):
            bad = files[with_y.index(False)] if any(with_y) else files[0]
            raise InputError(f"data directory {root}: some shards have labels 'y' and some (e.g. {bad}) do not")
        sample_shape = tuple(sample_shape) if sample_shape is not None else shapes.pop()
        y = np.concatenate(labels) if labels else None
    if sum(counts) == 0:
        raise InputError(f"data directory {root} has no samples")
    source = DataSource(root, kind, tuple(files), tuple(counts), tuple(sample_shape), str(np.dtype(dtype)), y)
    return source.head(limit) if limit is not None else source


class DataSource:
    """A data directory read lazily: one shard (file, or ``AUDIO_SHARD`` audio files) at a time.

    ``sha256``: the expected sha256 of every file (from a reference made on it): a file whose
    bytes differ is refused as it is read.
    """

    def __init__(self, root: Path, kind: str, files: tuple[str, ...], counts: tuple[int, ...],
                 sample_shape: tuple[int, ...], dtype: str, labels: np.ndarray | None = None,
                 sha256: tuple[str, ...] | None = None) -> None:
        self.root, self.kind, self.files, self.counts = Path(root), kind, tuple(files), tuple(int(c) for c in counts)
        self.sample_shape, self.dtype = tuple(int(d) for d in sample_shape), str(dtype)
        self.labels, self.sha256 = labels, None if sha256 is None else tuple(sha256)
        self.per_shard = AUDIO_SHARD if kind == AUDIO else 1
        self._starts = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self._seen: dict[int, str] = {}  # sha256 of the files read so far
        self._cached: tuple[int, np.ndarray] | None = None  # the last shard read

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"DataSource({str(self.root)!r}, {self.kind}, {len(self)} samples in {len(self.files)} files)"

    @property
    def source(self) -> str:
        return str(self.root)

    @property
    def n_shards(self) -> int:
        return -(-len(self.files) // self.per_shard)

    def shard_bounds(self) -> list[tuple[int, int]]:
        """(first sample, end) of every shard, in order."""
        k, n = self.per_shard, len(self.files)
        return [(int(self._starts[i * k]), int(self._starts[min((i + 1) * k, n)])) for i in range(self.n_shards)]

    def head(self, limit: int) -> "DataSource":
        """The first ``limit`` samples (the last file used is cut)."""
        if limit < 1:
            raise InputError(f"a sample limit must be at least 1, got {limit}")
        if limit >= len(self):
            return self
        keep = int(np.searchsorted(self._starts, limit, side="left"))
        counts = list(self.counts[:keep])
        counts[-1] -= int(self._starts[keep]) - limit
        return DataSource(self.root, self.kind, self.files[:keep], tuple(counts), self.sample_shape, self.dtype,
                          None if self.labels is None else self.labels[:limit],
                          None if self.sha256 is None else self.sha256[:keep])

    # -- reading ---------------------------------------------------------------------------------
    def _read_bytes(self, j: int) -> bytes:
        path = self.root / self.files[j]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path} is missing (data directory {self.root})") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        digest = hashlib.sha256(data).hexdigest()
        if self.sha256 is not None and digest != self.sha256[j]:
            raise InputError(f"{path} is not the file the reference was made from (its sha256 changed); "
                             "restore it or make the reference again")
        self._seen[j] = digest
        return data

    def _read_file(self, j: int) -> np.ndarray:
        path = self.root / self.files[j]
        data = self._read_bytes(j)
        if self.kind == AUDIO:
            from optkit.data import features

            y, sr = features.decode_audio(io.BytesIO(data), str(path))
            try:
                return features.mfcc_from_audio(y, sr)
            except InputError as exc:
                raise InputError(f"{path}: {exc}") from exc
        where = str(path) if self.kind == NPY else f"{path}:x"
        try:
            if self.kind == NPY:
                arr = np.load(io.BytesIO(data), allow_pickle=False)
            else:
                with np.load(io.BytesIO(data), allow_pickle=False) as z:
                    arr = z["x"]
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: not a readable .{self.kind} file ({first_line(exc)})") from exc
        arr = _check_array(arr, where, self.sample_shape, self.dtype)
        if len(arr) < self.counts[j]:
            raise InputError(f"{path}: holds {len(arr)} samples, {self.counts[j]} when the directory was opened")
        return arr[: self.counts[j]]

    def read_shard(self, i: int) -> np.ndarray:
        """Shard ``i`` as one checked array (n, *sample_shape); the last shard read is kept."""
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        if not 0 <= i < self.n_shards:
            raise IndexError(f"shard {i} of {self.n_shards}")
        k = self.per_shard
        parts = [self._read_file(j) for j in range(i * k, min((i + 1) * k, len(self.files)))]
        arr = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self._cached = (i, arr)
        return arr

    def shards(self) -> Iterator[np.ndarray]:
        for i in range(self.n_shards):
            yield self.read_shard(i)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start:stop`` (a new array), reading only the shards they lie in."""
        start, stop = max(0, start), min(len(self), stop)
        if stop <= start:
            return np.empty((0, *self.sample_shape), dtype=self.dtype)
        bounds = self._starts[:: self.per_shard]
        first = int(np.searchsorted(bounds, start, side="right")) - 1
        pieces = []
        i = first
        while i < self.n_shards and int(bounds[i]) < stop:
            shard = self.read_shard(i)
            a = int(bounds[i])
            pieces.append(shard[max(0, start - a): stop - a])
            i += 1
        return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces, axis=0)

    def array(self) -> "LazyArray":
        return LazyArray(self)

    def load(self) -> SampleSet:
        """Everything in memory, as a SampleSet (small sets: calibration, the bundled data)."""
        x = np.concatenate(list(self.shards()), axis=0) if self.n_shards > 1 else self.read_shard(0).copy()
        self._cached = None
        return SampleSet(np.ascontiguousarray(x), self.labels, str(self.root), self.files)

    # -- identity and transport ------------------------------------------------------------------
    def file_sha256(self) -> tuple[str, ...]:
        """sha256 of every file (those already read are not read again)."""
        from optkit.common.fileio import sha256_file

        if self.sha256 is not None:
            return self.sha256
        return tuple(self._seen.get(j) or sha256_file(self.root / f) for j, f in enumerate(self.files))

    def spec(self) -> dict[str, Any]:
        """What reopens this source elsewhere (JSON-able): no data, only names, counts, sha256s."""
        return {"root": str(self.root.resolve()), "kind": self.kind, "files": list(self.files), "counts": list(self.counts),
                "sample_shape": list(self.sample_shape), "dtype": self.dtype,
                "labels": None if self.labels is None else self.labels.tolist(),
                "sha256": None if self.sha256 is None else list(self.sha256)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], root: str | os.PathLike | None = None) -> "DataSource":
        """Reopen a source from :meth:`spec` (``root`` overrides its directory); the directory and
        its files must exist (their bytes are checked against the sha256s as they are read)."""
        try:
            where = Path(root if root is not None else spec["root"])
            files, counts = [str(f) for f in spec["files"]], [int(c) for c in spec["counts"]]
            kind, dtype, shape = str(spec["kind"]), str(spec["dtype"]), tuple(int(d) for d in spec["sample_shape"])
            labels = None if spec.get("labels") is None else np.asarray(spec["labels"], dtype=np.int64)
            sha = None if spec.get("sha256") is None else [str(s) for s in spec["sha256"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a data source description ({type(exc).__name__}: {first_line(exc)})") from exc
        if kind not in (NPY, NPZ, AUDIO) or len(files) != len(counts) or (sha is not None and len(sha) != len(files)):
            raise InputError("not a data source description (kind, files, counts and sha256 disagree)")
        if not where.is_dir():
            raise InputError(f"data directory {where} does not exist")
        missing = [f for f in files if not (where / f).is_file()]
        if missing:
            raise InputError(f"data directory {where} lacks {len(missing)} of its {len(files)} files, e.g. {missing[0]}")
        return cls(where, kind, tuple(files), tuple(counts), shape, dtype, labels, None if sha is None else tuple(sha))


class LazyArray:
    """Rows ``start:stop`` of a :class:`DataSource` as an array-like: ``shape``, ``dtype``,
    ``ndim``, ``len`` and step-1 row slices (which read only the shards they touch);
    ``numpy.asarray`` loads every row (only for sets that fit in memory)."""

    def __init__(self, source: DataSource, start: int = 0, stop: int | None = None) -> None:
        self.source, self.start = source, int(start)
        self.stop = len(source) if stop is None else int(stop)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.stop - self.start, *self.source.sample_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def ndim(self) -> int:
        return 1 + len(self.source.sample_shape)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step != 1:
                raise TypeError("a lazily read data set supports row slices with step 1 only")
            return self.source.rows(self.start + a, self.start + max(a, b))
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} of {len(self)}")
            return self.source.rows(self.start + i, self.start + i + 1)[0]
        raise TypeError(f"a lazily read data set supports row slices and indices, not {type(key).__name__}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.source.rows(self.start, self.stop)
        return arr if dtype is None else arr.astype(dtype)

    def view(self, start: int, stop: int) -> "LazyArray":
        """Rows ``start:stop`` of this view, still lazy."""
        start, stop = max(0, start), min(len(self), stop)
        return LazyArray(self.source, self.start + start, self.start + max(start, stop))

    def chunks(self) -> Iterator[np.ndarray]:
        """The rows in order, one shard's piece at a time."""
        for a, b in self.source.shard_bounds():
            lo, hi = max(a, self.start), min(b, self.stop)
            if lo < hi:
                yield self.source.rows(lo, hi)


def is_lazy(arr: Any) -> bool:
    return isinstance(arr, LazyArray)


# -- writing shards ------------------------------------------------------------------------------
def shard_bytes(x: np.ndarray, y: np.ndarray | None = None, **extra: np.ndarray) -> bytes:
    """An ``.npz`` shard (``x``, optional ``y`` and ``extra`` arrays, uncompressed) as bytes that
    depend only on the arrays: numpy's savez stamps every member with the current time, so two
    runs would write different bytes for the same data."""
    arrays = {"x": x, **({} if y is None else {"y": y}), **extra}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_shard(path: str | os.PathLike, x: np.ndarray, y: np.ndarray | None = None, **extra: np.ndarray) -> Path:
    """Write :func:`shard_bytes` to ``path`` atomically (a temporary file renamed into place)."""
    from optkit.common.fileio import write_bytes_atomically

    return write_bytes_atomically(path, shard_bytes(x, y, **extra))


def load_samples(
    path: str | os.PathLike,
    sample_shape: tuple[int, ...] | None = None,
    dtype: str = "float32",
    limit: int | None = None,
) -> SampleSet:
    """Load a sample set from a directory of .npy files, one .npy file or an .npz (x, y)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data path {path} does not exist")
    if path.is_dir():
        return open_samples(path, sample_shape, dtype, limit).load()
    if path.suffix == ".npy":
        x = _check_array(_load_npy(path), str(path), sample_shape, dtype)
        return SampleSet(x, None, str(path)).take(limit)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise InputError(f"{path}: .npz has no array 'x' (found: {', '.join(z.files) or 'none'})")
                x = z["x"]
                y = z["y"] if "y" in z.files else None
        except InputError:
            raise
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
        x = _check_array(x, f"{path}:x", sample_shape, dtype)
        if len(x) == 0:
            raise InputError(f"{path}: 'x' has no samples")
        if y is not None:
            if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
                raise InputError(f"{path}: 'y' must be integer labels of shape ({len(x)},), got {y.dtype} {y.shape}")
            y = y.astype(np.int64)
        return SampleSet(np.ascontiguousarray(x), y, str(path)).take(limit)
    raise InputError(f"{path}: expected a directory of .npy files, a .npy or an .npz file")
