"""Artifacts (a file plus what is known about it) and the manifest that lists them."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optkit.errors import InputError
from optkit.fileio import sha256_file, write_json_atomically

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Artifact:
    """An immutable file produced (or consumed) by a pass.

    ``kind`` is ``"onnx"``, ``"engine"`` or ``"reference"``; ``precision`` is ``"fp32"``,
    ``"fp16"`` or ``"int8"``; ``parent`` is the sha256 of the artifact it was made from.
    """

    path: Path
    kind: str
    precision: str
    sha256: str
    size: int
    made_by: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    tool_versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        kind: str | None = None,
        precision: str | None = None,
        **meta: Any,
    ) -> "Artifact":
        path = Path(path)
        if kind is None:
            kind = guess_kind(path)
        if precision is None:
            precision = guess_precision(path) if kind == "onnx" else "fp32"
        return cls(
            path=path,
            kind=kind,
            precision=precision,
            sha256=sha256_file(path),
            size=path.stat().st_size,
            created=meta.pop("created", None) or now_iso(),
            **meta,
        )

    def to_json(self, relative_to: Path | None = None) -> dict[str, Any]:
        d = asdict(self)
        p = self.path
        if relative_to is not None:
            try:
                p = Path(os.path.relpath(self.path, relative_to))
            except ValueError:
                pass
        d["path"] = str(p)
        d["pass"] = d.pop("made_by")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], base: Path | None = None) -> "Artifact":
        d = dict(d)
        path = Path(d.pop("path"))
        if base is not None and not path.is_absolute():
            path = base / path
        d["made_by"] = d.pop("pass", None)
        return cls(path=path, **d)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def guess_kind(path: Path) -> str:
    from optkit.runners.registry import artifact_kind

    if path.suffix.lower() == ".npz":
        return "reference"
    return artifact_kind(path)


def guess_precision(path: Path) -> str:
    """Read the precision of an ONNX model from its graph: int8 if it has Q/DQ or integer
    ops, fp16 if it has float16 initializers/tensors, else fp32."""
    from optkit.onnx_utils import load_onnx, model_precision

    return model_precision(load_onnx(path, load_weights=False))


def tool_versions(*names: str) -> dict[str, str]:
    """Versions of installed distributions, without importing them."""
    import optkit

    versions = {"optkit": optkit.__version__}
    for name in names:
        v = _distribution_version(name)
        if v is not None:
            versions[name] = v
    return versions


@functools.lru_cache(maxsize=None)
def _distribution_version(name: str) -> str | None:
    # read once per process: cache keys ask for the same few versions for every step
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class Manifest:
    """``manifest.json``: one entry per artifact, keyed by step name, written atomically."""

    def __init__(self, path: Path, entries: dict[str, dict[str, Any]] | None = None):
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = entries or {}
        self.recipe: str | None = None  # name of the recipe whose run wrote it (optkit run)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["artifacts"]
            if not isinstance(entries, dict):
                raise TypeError("artifacts is not a mapping")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a valid optkit manifest: {exc}") from exc
        manifest = cls(path, entries)
        recipe = data.get("recipe")
        manifest.recipe = recipe if isinstance(recipe, str) else None
        return manifest

    def get(self, step: str) -> Artifact | None:
        entry = self.entries.get(step)
        if entry is None or "artifact" not in entry:  # e.g. a step recorded as skipped
            return None
        return Artifact.from_json(entry["artifact"], base=self.path.parent)

    def record(self, step: str, artifact: Artifact, cache_key: str, **info: Any) -> None:
        self.entries[step] = {
            "artifact": artifact.to_json(relative_to=self.path.parent),
            "cache_key": cache_key,
            **info,
        }

    def save(self) -> None:
        data: dict[str, Any] = {"manifest_version": MANIFEST_VERSION}
        if self.recipe is not None:
            data["recipe"] = self.recipe
        data["artifacts"] = self.entries
        write_json_atomically(self.path, data)
