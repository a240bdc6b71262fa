"""The reference file ``<name>.reference.npz``: inputs and the PyTorch outputs for them.

Keys: ``input.<name>`` for each model input, ``output.<name>`` for each PyTorch output,
optionally ``labels`` (task labels) and ``meta`` (a JSON string). Saved next to the exported
model so artifacts can be verified on a machine without PyTorch.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optkit.errors import InputError
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


def load_reference(path: str | os.PathLike) -> Reference:
    path = require_file(path, "reference file")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            inputs = {k[len("input."):]: z[k] for k in files if k.startswith("input.")}
            outputs = {k[len("output."):]: z[k] for k in files if k.startswith("output.")}
            labels = z["labels"] if "labels" in files else None
            meta = json.loads(str(z["meta"])) if "meta" in files else {}
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a readable reference .npz ({exc})") from exc
    if not inputs or not outputs:
        raise InputError(
            f"{path} is not an optkit reference file (needs input.<name> and output.<name> arrays; "
            "make one with `optkit export`)"
        )
    n = {v.shape[0] for v in list(inputs.values()) + list(outputs.values())}
    if len(n) != 1:
        raise InputError(f"{path}: inputs and outputs have different sample counts {sorted(n)}")
    from optkit.fileio import sha256_file

    return Reference(inputs, outputs, labels, meta, sha256=sha256_file(path))
