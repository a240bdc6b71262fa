"""The reference file ``<name>.reference.npz``: inputs and the PyTorch outputs for them.

Keys: ``input.<name>`` for each model input, ``output.<name>`` for each PyTorch output,
optionally ``labels`` (task labels) and ``meta`` (a JSON string). Saved next to the exported
model so artifacts can be verified on a machine without PyTorch.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.errors import InputError, first_line
from optkit.fileio import atomic_output, require_file


@dataclass
class Reference:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # sha256 of the file it was loaded from (None when made in memory): verification cache keys
    sha256: str | None = None

    def __len__(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def reference_path_for(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_name(p.name[: -len(p.suffix)] + ".reference.npz") if p.suffix else p.with_name(p.name + ".reference.npz")


def save_reference(path: str | os.PathLike, ref: Reference) -> Path:
    arrays: dict[str, np.ndarray] = {}
    for k, v in ref.inputs.items():
        arrays[f"input.{k}"] = v
    for k, v in ref.outputs.items():
        arrays[f"output.{k}"] = v
    if ref.labels is not None:
        arrays["labels"] = ref.labels
    arrays["meta"] = np.array(json.dumps(ref.meta))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_output(path, suffix=".npz") as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


MAX_REFERENCE_BYTES = 16 << 30  # uncompressed; a larger claim is a zip bomb or not a reference


def load_reference(path: str | os.PathLike, max_bytes: int = MAX_REFERENCE_BYTES) -> Reference:
    """Read and validate a reference file; every way it can be wrong is one InputError naming it."""
    path = require_file(path, "reference file")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise InputError(f"{path} is a single .npy array, not a reference .npz (inputs and PyTorch outputs); "
                         "make one with `optkit export`")
    if magic[:2] != b"PK":
        raise InputError(f"{path} is not a readable reference .npz (not a zip archive); make one with `optkit export`")
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
        if total > max_bytes:
            raise InputError(f"{path}: its arrays would take {total / 2**30:.1f} GiB uncompressed (limit "
                             f"{max_bytes / 2**30:.1f} GiB); not a usable reference")
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            inputs = {k[len("input."):]: z[k] for k in files if k.startswith("input.")}
            outputs = {k[len("output."):]: z[k] for k in files if k.startswith("output.")}
            labels = z["labels"] if "labels" in files else None
            meta = json.loads(str(z["meta"])) if "meta" in files else {}
    # np.load reads members lazily: a truncated or corrupted archive fails here as BadZipFile,
    # zlib.error (bad deflate data), a CRC error (BadZipFile) or EOFError.
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise InputError(f"{path} is not a readable reference .npz (truncated or corrupted: "
                         f"{type(exc).__name__}: {first_line(exc)})") from exc
    if not inputs or not outputs:
        raise InputError(
            f"{path} is not an optkit reference file (needs input.<name> and output.<name> arrays; "
            "make one with `optkit export`)"
        )
    from optkit.fileio import sha256_file

    ref = Reference(inputs, outputs, labels, meta if isinstance(meta, dict) else {}, sha256=sha256_file(path))
    validate_reference(ref, str(path))
    return ref


def validate_reference(ref: Reference, where: str = "reference") -> None:
    """A reference must be numeric, finite, non-empty, with one sample count and matching labels.

    NaN/Inf in the outputs would make every comparison meaningless (and used to PASS); NaN/Inf in
    the inputs is a data problem that would otherwise be blamed on the artifact.
    """
    counts: set[int] = set()
    for kind, arrays in (("input", ref.inputs), ("output", ref.outputs)):
        for name, arr in arrays.items():
            label = f"{where}: {kind} {name!r}"
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise InputError(f"{label} has dtype {arr.dtype}, not numbers")
            if arr.ndim < 1 or arr.shape[0] == 0:
                raise InputError(f"{label} has no samples (shape {arr.shape})")
            if arr.size == 0:
                raise InputError(f"{label} is empty (shape {arr.shape})")
            if np.issubdtype(arr.dtype, np.inexact) and not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise InputError(f"{label} contains {bad} NaN/Inf value(s) of {arr.size}; the reference is unusable "
                                 "(re-export it from data without NaN/Inf)")
            counts.add(int(arr.shape[0]))
    if len(counts) != 1:
        raise InputError(f"{where}: inputs and outputs have different sample counts {sorted(counts)}")
    n = counts.pop()
    if ref.labels is not None:
        y = np.asarray(ref.labels)
        if y.ndim != 1 or len(y) != n:
            raise InputError(f"{where}: labels have shape {y.shape}, expected ({n},) (one per sample)")
        if not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise InputError(f"{where}: labels have dtype {y.dtype}, expected integers (0/1)")
