"""Artifacts (a file plus what is known about it) and the manifest that lists them."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError
from optkit.common.fileio import sha256_file, write_json_atomically
from optkit.model.kinds import ENGINE_SUFFIXES, ONNX_SUFFIXES, artifact_kind, is_engine  # noqa: F401

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
        ident = artifact_identity(path)
        if ident["external_data"]:
            meta["extra"] = {**meta.get("extra", {}), "external_data": ident["external_data"]}
        return cls(
            path=path,
            kind=kind,
            precision=precision,
            sha256=ident["sha256"],
            size=ident["size"],
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


def external_data_files(path: str | os.PathLike) -> list[str]:
    """The files an ONNX model keeps (part of) its weights in, as the ``location`` its external-data
    entries name them (relative to the model's directory), sorted; [] for a model with every weight
    inline, an engine or a file that is not a readable ONNX model (its loader reports that)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not _may_use_external_data(path):
        return []
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX model optkit can read: load_onnx says why where it matters
        return []
    locations: set[str] = set()

    def visit(graph: Any) -> None:
        # initializers, and tensors in node attributes (Constant ops), through every subgraph (If, Loop)
        tensors = list(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                tensors += ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)
        locations.update(ExternalDataInfo(t).location for t in tensors if uses_external_data(t))

    visit(model.graph)
    return sorted(loc for loc in locations if loc)


def _may_use_external_data(path: Path) -> bool:
    """False when the file cannot hold an external-data entry: each one is a key "location"
    (onnx.proto's StringStringEntryProto), so a model without those bytes has every weight inline.
    Searching the mapped file takes 0.1 s on a 235 MB model where parsing it (onnx.load) took 0.9 s,
    and this runs for every artifact identity (manifest, caches, bench, serve); a chance match in
    the weights only costs the parse."""
    import mmap

    try:
        with path.open("rb") as f:
            if path.stat().st_size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return m.find(b"location") != -1
    except (OSError, ValueError):
        return True  # let the parse decide (and its caller report an unreadable file)


def artifact_size(path: str | os.PathLike) -> int:
    """Bytes of the artifact with its external data files (no hashing: for callers that already
    know the sha256)."""
    path = Path(path)
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in external_data_files(path)
                                     if (path.parent / loc).is_file())


def artifact_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies an artifact: the sha256 and size of all its bytes, and its external data files.

    For a file that holds all of itself (every engine, an ONNX model with inline weights) that is
    the file's own sha256 and size. For an ONNX model with external data (``model.onnx`` +
    ``model.onnx.data``), a changed weights file must change the identity: ``sha256`` is then the
    sha256 of the ``sha256sum`` lines of the model file followed by each external file (sorted by
    location), i.e. what ``sha256sum model.onnx model.onnx.data | sha256sum`` prints in the model's
    directory; ``size`` is the total; ``external_data`` lists each file's location, sha256 and size.
    The manifest (:meth:`Artifact.from_file`), the run cache, the verify cache, ``optkit bench`` and
    ``optkit serve``'s ``/metadata`` all identify artifacts with this one function."""
    path = Path(path)
    sha, size = sha256_file(path), path.stat().st_size
    external = []
    for location in external_data_files(path):
        file = path.parent / location
        if not file.is_file():
            raise InputError(f"{path.name} keeps weights in {location}, but {os.path.normpath(file)} does not exist")
        external.append({"path": location, "sha256": sha256_file(file), "size": file.stat().st_size})
    if not external:
        return {"sha256": sha, "size": size, "external_data": []}
    lines = f"{sha}  {path.name}\n" + "".join(f"{e['sha256']}  {e['path']}\n" for e in external)
    return {"sha256": hashlib.sha256(lines.encode()).hexdigest(), "size": size + sum(e["size"] for e in external),
            "external_data": external}


def artifact_sha256(path: str | os.PathLike) -> str:
    """The sha256 that identifies an artifact (:func:`artifact_identity`)."""
    return artifact_identity(path)["sha256"]


def bundle_files(path: str | os.PathLike) -> list[str]:
    """Everything that serving ``path`` needs from its directory, relative to it: the artifact, its
    external data files, an engine's ``.engine.json`` sidecar and ``manifest.json`` when present.
    What the Docker images copy (:func:`copy_bundle`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"artifact {path} does not exist")
    names = [path.name, *(e["path"] for e in artifact_identity(path)["external_data"])]
    names += [n for n in (f"{path.name}.json", "manifest.json") if (path.parent / n).is_file()]
    return names


def copy_bundle(model_dir: str | os.PathLike, artifact: str, dest: str | os.PathLike) -> list[str]:
    """Copy :func:`bundle_files` of ``model_dir/artifact`` into ``dest``, keeping their relative
    paths (an external data location may name a subdirectory). Used by the Docker images' build."""
    import shutil

    src, dest = Path(model_dir), Path(dest)
    names = bundle_files(src / artifact)
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise InputError(f"{artifact} keeps weights in {name}, outside its directory {src}")
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, dest / name)
    return names


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def guess_kind(path: Path) -> str:
    if path.suffix.lower() == ".npz":
        return "reference"
    return artifact_kind(path)


def guess_precision(path: Path) -> str:
    """Read the precision of an ONNX model from its graph: int8 if it has Q/DQ or integer
    ops, fp16 if it has float16 initializers/tensors, else fp32."""
    from optkit.model.onnx_utils import load_onnx, model_precision

    return model_precision(load_onnx(path, load_weights=False))


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
