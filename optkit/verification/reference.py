"""The reference file ``<name>.reference.npz``: inputs and the PyTorch outputs for them.

Keys: ``input.<name>`` for each model input, ``output.<name>`` for each PyTorch output,
optionally ``labels`` (task labels) and ``meta`` (a JSON string). Saved next to the exported
model so artifacts can be verified on a machine without PyTorch.

A reference on a data set too large for memory *links* its inputs instead of holding them:
``inputs_from`` (a JSON string) names the data directory (relative to the reference file, and
absolute), its files with their sample counts and sha256, the input's name and the sha256 that
identifies the inputs (``release.reference_identity``). Loading it opens the directory lazily
(optkit.data.source): the inputs are read shard by shard when they are used, each file checked
against its recorded sha256; the outputs and labels (one value per sample) are held.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError, first_line
from optkit.common.fileio import atomic_output, require_file


@dataclass
class Reference:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # sha256 of the file it was loaded from (None when made in memory): verification cache keys
    sha256: str | None = None
    # the inputs' sha256 when known without reading them (a linked reference records it)
    inputs_sha256: str | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def mixed_length(self) -> bool:
        """True when an input is a list of samples of different lengths (optkit.data.ragged)."""
        return any(isinstance(v, list) for v in self.inputs.values())

    def identity(self) -> dict[str, Any]:
        """:func:`reference_identity` of this reference."""
        return reference_identity(self.inputs, self.labels, self.inputs_sha256)

    @property
    def linked(self) -> bool:
        """True when the inputs are read lazily from a data directory."""
        from optkit.data.source import is_lazy

        return any(is_lazy(v) for v in self.inputs.values())


def reference_path_for(model_path: str | os.PathLike) -> Path:
    p = Path(model_path)
    return p.with_name(p.name[: -len(p.suffix)] + ".reference.npz") if p.suffix else p.with_name(p.name + ".reference.npz")


def save_reference(path: str | os.PathLike, ref: Reference) -> Path:
    """Write ``ref`` atomically; inputs read from a data directory are linked, not copied."""
    arrays: dict[str, np.ndarray] = {}
    if ref.linked:
        arrays["inputs_from"] = np.array(json.dumps(_link(Path(path), ref)))
    else:
        for k, v in ref.inputs.items():
            if isinstance(v, list):  # mixed lengths: the ragged layout (x concatenated + offsets)
                from optkit.data.ragged import ragged_arrays

                arrays[f"input.{k}"], arrays[f"offsets.{k}"] = ragged_arrays(v, int(ref.meta.get("time_axis", -1)))
            else:
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


def _link(path: Path, ref: Reference) -> dict[str, Any]:
    if len(ref.inputs) != 1:
        raise InputError("a reference can link the inputs of a single-input model only")
    (name, arr), = ref.inputs.items()
    source = arr.source
    if (arr.start, arr.stop) != (0, len(source)):
        raise InputError("a linked reference covers its whole data directory")
    spec = {**source.spec(), "sha256": list(source.file_sha256()), "labels": None}
    root = source.root.resolve()
    spec.pop("root")
    return {"input": name, "data": os.path.relpath(root, path.resolve().parent), "data_absolute": str(root),
            "source": spec, "inputs_sha256": ref.identity()["inputs_sha256"]}


def _open_link(path: Path, link: dict[str, Any], data: str | os.PathLike | None) -> tuple[str, Any, str]:
    """(input name, its LazyArray, its inputs sha256) of a linked reference; ``data`` overrides
    where the data directory is."""
    from optkit.data.source import DataSource

    try:
        name, spec, sha = str(link["input"]), dict(link["source"]), str(link["inputs_sha256"])
        if data is not None:
            candidates = [Path(data)]
        else:
            # "data" is relative to the reference's real directory (_link takes both paths resolved), so
            # it is joined to the resolved directory and normalised: the directory is named as it is
            # ("/data/vs"), not as the joined pieces ("vsm/../vs"); ".." after resolve() crosses no symlink
            candidates = [Path(os.path.normpath(path.resolve().parent / str(link["data"]))),
                          Path(os.path.normpath(str(link["data_absolute"])))]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable inputs_from entry ({type(exc).__name__}: {first_line(exc)})") from exc
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        also = (f" (nor does {candidates[1]}, where it was when the reference was made)"
                if len(candidates) > 1 and candidates[1] != candidates[0] else "")
        raise InputError(f"{path} links its inputs to the data directory {candidates[0]}, which does not exist{also}; "
                         "pass its location with --reference-data DIR")
    try:
        source = DataSource.from_spec(spec, root)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return name, source.array(), sha


MAX_REFERENCE_BYTES = 16 << 30  # uncompressed; a larger claim is a zip bomb or not a reference


def load_reference(path: str | os.PathLike, max_bytes: int = MAX_REFERENCE_BYTES,
                   data: str | os.PathLike | None = None, mixed_length: bool = False) -> Reference:
    """Read and validate a reference file; every way it can be wrong is one InputError naming it.

    ``data``: where the data directory of a linked reference is (default: where it was, relative
    to the reference file, else its recorded absolute path); refused for a reference that holds
    its inputs. A reference of mixed-length inputs (``offsets.<name>``) is read only with
    ``mixed_length`` (its inputs are lists of samples)."""
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
            link = json.loads(str(z["inputs_from"])) if "inputs_from" in files else None
            offsets = {k[len("offsets."):]: z[k] for k in files if k.startswith("offsets.")}
    # np.load reads members lazily: a truncated or corrupted archive fails here as BadZipFile,
    # zlib.error (bad deflate data), a CRC error (BadZipFile) or EOFError.
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise InputError(f"{path} is not a readable reference .npz (truncated or corrupted: "
                         f"{type(exc).__name__}: {first_line(exc)})") from exc
    if offsets:
        inputs = _mixed_inputs(path, inputs, offsets, meta, mixed_length)
        from optkit.common.fileio import sha256_file

        return Reference(inputs, outputs, labels, meta, sha256=sha256_file(path))
    inputs_sha256 = None
    if link is not None and not inputs:
        name, arr, inputs_sha256 = _open_link(path, link if isinstance(link, dict) else {}, data)
        inputs = {name: arr}
    elif data is not None:
        raise InputError(f"{path} holds its inputs; --reference-data applies to a reference that links them "
                         "(optkit export --reference-inputs link)")
    if not inputs or not outputs:
        raise InputError(
            f"{path} is not an optkit reference file (needs input.<name> and output.<name> arrays; "
            "make one with `optkit export`)"
        )
    from optkit.common.fileio import sha256_file

    ref = Reference(inputs, outputs, labels, meta if isinstance(meta, dict) else {}, sha256=sha256_file(path),
                    inputs_sha256=inputs_sha256)
    validate_reference(ref, str(path))
    return ref


def _mixed_inputs(path: Path, inputs: dict[str, Any], offsets: dict[str, Any], meta: Any,
                  wanted: bool) -> dict[str, Any]:
    """The inputs of a mixed-length reference as lists of samples, offsets validated."""
    from optkit.data.ragged import split_offsets

    axis = int(meta.get("time_axis", -1)) if isinstance(meta, dict) else -1
    out = {k: split_offsets(v, offsets.get(k, np.array([0, v.shape[axis]])), axis, f"{path}: input {k!r}")
           for k, v in inputs.items()}
    if not wanted:
        lengths = sorted({s.shape[axis] for v in out.values() for s in v})
        raise InputError(f"{path} holds mixed-length inputs (lengths {lengths[0]}..{lengths[-1]}); this command "
                         "reads fixed-length references only (optkit verify reads both)")
    return out


def validate_reference(ref: Reference, where: str = "reference") -> None:
    """A reference must be numeric, finite, non-empty, with one sample count and matching labels.

    NaN/Inf in the outputs would make every comparison meaningless (and used to PASS); NaN/Inf in
    the inputs is a data problem that would otherwise be blamed on the artifact.
    """
    from optkit.data.source import is_lazy

    counts: set[int] = set()
    for kind, arrays in (("input", ref.inputs), ("output", ref.outputs)):
        for name, arr in arrays.items():
            label = f"{where}: {kind} {name!r}"
            if isinstance(arr, list):  # mixed lengths: every sample checked as an array of its own
                for i, sample in enumerate(arr):
                    _check_array(np.asarray(sample)[None], f"{label} sample {i}")
                counts.add(len(arr))
                continue
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
                raise InputError(f"{label} has dtype {arr.dtype}, not numbers")
            if is_lazy(arr):  # read shard by shard; each shard is checked (finite, shape) as it is read
                counts.add(len(arr))
                continue
            _check_array(arr, label)
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
        bad = np.setdiff1d(np.unique(y.astype(np.int64)), [0, 1])
        if bad.size:
            raise InputError(f"{where}: labels must be 0 or 1 (two classes: rejected/accepted), found "
                             f"{', '.join(map(str, bad[:5].tolist()))}")


def _check_array(arr: np.ndarray, label: str) -> None:
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


# -- reference identity ------------------------------------------------------------------------

class InputsHasher:
    """The ``inputs_sha256`` of :func:`reference_identity`, fed in row order chunk by chunk (the
    digest of a whole array equals the digest of its consecutive row chunks)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def start(self, name: str, dtype: Any, shape: tuple[int, ...]) -> None:
        self._h.update(f"{name}|{np.dtype(dtype).str}|{tuple(int(d) for d in shape)}|".encode())

    def update(self, rows: np.ndarray) -> None:
        self._h.update(np.ascontiguousarray(rows).tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def reference_identity(inputs: dict[str, Any], labels: np.ndarray | None,
                       inputs_sha256: str | None = None) -> dict[str, Any]:
    """What identifies a reference set: sha256 of every input array (name, dtype, shape, bytes)
    and of the labels. Two releases are comparable sample by sample only when these match.
    Lazily read inputs (optkit.data.source.LazyArray) are hashed shard by shard;
    ``inputs_sha256``, when already known (a reference made from a data directory records it),
    is used as it is."""
    if inputs_sha256 is None:
        from optkit.data.source import is_lazy

        h = InputsHasher()
        for name in sorted(inputs):
            arr = inputs[name]
            if isinstance(arr, list):  # mixed lengths: each sample's shape and bytes, in order
                h.start(name, arr[0].dtype, (len(arr),))
                for sample in arr:
                    h.update(np.array(sample.shape, np.int64))
                    h.update(sample)
                continue
            h.start(name, arr.dtype, arr.shape)
            for rows in (arr.chunks() if is_lazy(arr) else [arr]):
                h.update(rows)
        inputs_sha256 = h.hexdigest()
    ident = {"inputs_sha256": inputs_sha256, "samples": len(next(iter(inputs.values()))),
             "labels_sha256": None}
    if labels is not None:
        lab = np.ascontiguousarray(np.asarray(labels).astype(np.int64))
        ident["labels_sha256"] = hashlib.sha256(lab.tobytes()).hexdigest()
    return ident
