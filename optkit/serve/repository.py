"""A model repository, the way TF Serving and Triton lay one out: ``DIR/<name>/<version>/``.

Each version directory holds one artifact (``.onnx`` or ``.engine``), its side files (external
data, engine sidecar) and the ``manifest.json``/``report.json`` optkit wrote beside it
(``optkit verify --export-to-repository`` writes such a directory). What is served:

- **Only verified versions.** A version is servable when its ``report.json`` has a result for this
  artifact that passed, whose sha256 is the artifact's (``optkit.model.artifact.artifact_identity``)
  and whose runtime is the one it will be served on. Otherwise it is REFUSED, with the reason in the
  model's status and the log; ``allow_unverified`` serves it anyway, marked ``verified: false``.
- **Newest first.** The newest AVAILABLE version answers requests that name no version; a version
  can be asked for by number.
- **Bounded memory.** The newest ``keep_versions`` servable versions of each model are loaded (one
  ``InferenceLoop`` each, so the same queue, micro-batching and streams as ``optkit serve
  ARTIFACT``); older ones are UNLOADED (named in the status, not served).
- **Picked up without a restart.** :meth:`ModelRepository.scan` (called by the app every
  ``poll_s`` seconds and by ``POST /v2/repository/index``) notices new, changed and removed
  versions. A new version loads while the old one answers; the old one is then drained (no new
  requests, the queued ones finish) before it is closed, so a switch fails no request. A version
  that breaks (fails to load, disappears) only takes its own requests down (404/503).

States (TF Serving's words where it has them): LOADING, AVAILABLE, UNAVAILABLE (failed to load),
REFUSED (not verified for this runtime), UNLOADED (outside ``keep_versions``).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from optkit.common.errors import OptkitError
from optkit.runtime.registry import ENGINE_SUFFIXES
from optkit.serve.inference import InferenceLoop
from optkit.serve.protocols import ProtocolError
from optkit.serve.settings import ServeSettings

log = logging.getLogger("uvicorn.error")

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ARTIFACT_SUFFIXES = (".onnx", *ENGINE_SUFFIXES)
DRAIN_TIMEOUT_S = 30.0  # the longest an outgoing version waits for its queued requests before it closes


@dataclass
class Version:
    model: str
    number: int
    path: Path
    state: str = "LOADING"
    reason: str = ""
    verified: bool = False
    artifact: Path | None = None
    key: tuple = ()
    loop: InferenceLoop | None = field(default=None, repr=False)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": str(self.number), "state": self.state, "verified": self.verified,
                               "reason": self.reason}
        if self.artifact is not None:
            out["artifact"] = self.artifact.name
        if self.loop is not None and self.loop.info:
            out["sha256"] = self.loop.info.get("sha256")
            out["provider_in_use"] = self.loop.info.get("provider_in_use")
        return out


def version_artifact(vdir: Path) -> tuple[Path | None, str]:
    """The one artifact of a version directory, or (None, why not)."""
    found = sorted(p for p in vdir.iterdir() if p.is_file() and p.suffix.lower() in ARTIFACT_SUFFIXES)
    if not found:
        return None, "no artifact (.onnx or .engine) in the version directory"
    if len(found) > 1:
        return None, f"{len(found)} artifacts ({', '.join(p.name for p in found)}); a version directory holds one"
    return found[0], ""


def provider_for(artifact: Path, provider: str) -> str:
    return "tensorrt" if artifact.suffix.lower() in ENGINE_SUFFIXES else provider


def check_verified(artifact: Path, provider: str) -> str:
    """Why ``artifact`` may not be served on ``provider``: '' when its report.json says it passed
    verification for this very file (sha256) on this runtime."""
    from optkit.model.artifact import artifact_identity
    from optkit.runtime.labels import provider_of

    report_path = artifact.parent / "report.json"
    if not report_path.is_file():
        return "no report.json beside the artifact: it was not verified"
    try:
        report = json.loads(report_path.read_text())
        results = [a for a in report.get("artifacts") or [] if isinstance(a, dict)]
    except (OSError, ValueError, AttributeError) as exc:
        return f"report.json cannot be read ({type(exc).__name__})"
    try:
        sha = artifact_identity(artifact)["sha256"]
    except (OSError, OptkitError) as exc:
        return f"the artifact cannot be read: {exc}"
    mine = [a for a in results if Path(str(a.get("path", ""))).name == artifact.name or a.get("sha256") == sha]
    if not mine:
        return f"report.json has no result for {artifact.name}"
    same = [a for a in mine if a.get("sha256") == sha]
    if not same:
        return (f"report.json verified a different file (sha256 {str(mine[0].get('sha256'))[:12]}, this file is "
                f"{sha[:12]})")
    here = [a for a in same if provider_of(a.get("runner") or {}) == provider]
    if not here:
        ran = sorted({provider_of(a.get("runner") or {}) for a in same})
        return f"verified on {', '.join(ran)}, not on {provider} (the runtime it would be served on)"
    if not any(a.get("passed") is True for a in here):
        failures = here[0].get("failures") or ["passed is not true"]
        return f"failed verification on {provider}: {failures[0]}"
    return ""


class ModelRepository:
    """The versions under ``root`` and the inference loops of those being served."""

    def __init__(self, root: str | Path, base: ServeSettings, allow_unverified: bool = False, keep_versions: int = 1,
                 runner_factory: Callable[[ServeSettings], Any] | None = None,
                 on_batch: Callable[[int, float], None] | None = None):
        if keep_versions < 1:
            raise OptkitError(f"keep versions must be at least 1, got {keep_versions}")
        self.root = Path(root)
        self.base = base
        self.allow_unverified = allow_unverified
        self.keep_versions = keep_versions
        self._runner_factory = runner_factory
        self._on_batch = on_batch
        self._models: dict[str, dict[int, Version]] = {}
        self._lock = threading.Lock()  # guards _models (lookups come from the event loop)
        self._scan_lock = threading.Lock()  # one scan at a time (poller and reload endpoint)
        self._held: set[str] = set()  # models unloaded on request: no version served until loaded again
        self.scans = 0

    # -- what the routes ask -----------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def versions(self, name: str) -> list[Version]:
        with self._lock:
            if name not in self._models:
                raise ProtocolError(f"model {name!r} is not in the repository", 404)
            return sorted(self._models[name].values(), key=lambda v: v.number, reverse=True)

    def lookup(self, name: str, version: str | None = None) -> tuple[Version, InferenceLoop]:
        """The version that answers a request (the newest AVAILABLE one when ``version`` is None) and
        its loop, or ProtocolError: 404 unknown or not servable (with the reason), 503 while it loads."""
        versions = self.versions(name)
        if version is None:
            for v in versions:
                loop = v.loop
                if v.state == "AVAILABLE" and loop is not None and loop.ready:
                    return v, loop
            if any(v.state == "LOADING" for v in versions):
                raise ProtocolError(f"model {name!r}: its version is loading", 503)
            why = "; ".join(f"version {v.number} {v.state}: {v.reason}" for v in versions[:3]) or "no versions"
            raise ProtocolError(f"model {name!r} has no servable version ({why})", 404)
        if not version.isdigit() or len(version) > 18:
            raise ProtocolError(f"version {version[:40]!r} is not a version number", 400)
        match = [v for v in versions if v.number == int(version)]
        if not match:
            raise ProtocolError(f"model {name!r} has no version {int(version)}", 404)
        v = match[0]
        loop = v.loop
        if v.state == "AVAILABLE" and loop is not None and loop.ready:
            return v, loop
        if v.state == "LOADING":
            raise ProtocolError(f"model {name!r} version {v.number} is loading", 503)
        raise ProtocolError(f"model {name!r} version {v.number} is {v.state}: {v.reason}", 404)

    @property
    def ready(self) -> bool:
        """Every model has a version answering, but those unloaded on request (a repository with no
        model to serve is not ready)."""
        names = [n for n in self.names() if n not in self._held]
        if not names:
            return False
        for n in names:
            try:
                self.lookup(n)
            except ProtocolError:
                return False
        return True

    def loops(self) -> list[InferenceLoop]:
        with self._lock:
            return [v.loop for vs in self._models.values() for v in vs.values() if v.loop is not None]

    def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every version with its state and reason."""
        return [{"name": n, **v.status()} for n in self.names() for v in self.versions(n)]

    # -- Triton's repository extension: load and unload on request -----------------------------
    def unload(self, name: str) -> list[str]:
        """Stop serving every version of ``name`` (drained, then closed) until :meth:`load`; scans
        leave it unloaded. ProtocolError(404) for a model that is not in the repository."""
        with self._scan_lock:
            self.versions(name)
            self._held.add(name)
            changes = self._apply_policy(name)
        for line in changes:
            log.warning("model repository: %s", line)
        return changes

    def load(self, name: str) -> list[str]:
        """Serve ``name`` again (after :meth:`unload`), from a fresh scan (a model copied in since
        the last one is found): its newest ``keep_versions`` servable versions are loaded.
        ProtocolError(404) for a model that is not in the repository or has no servable version."""
        self._held.discard(name)
        changes = self.scan()
        self.lookup(name)
        return changes

    # -- keeping up with the directory ---------------------------------------------------------
    def scan(self) -> list[str]:
        """Bring the served versions in line with the directory; what changed, in words (logged)."""
        with self._scan_lock:
            changes: list[str] = []
            found = self._read_tree()
            # versions gone from the directory: no new requests, drain, close
            with self._lock:
                gone = [v for name, vs in self._models.items() for n, v in vs.items()
                        if n not in found.get(name, {})]
                for v in gone:
                    del self._models[v.model][v.number]
                for name in [n for n, vs in self._models.items() if not vs and n not in found]:
                    del self._models[name]
            for v in gone:
                changes.append(f"{v.model} version {v.number} removed from the repository")
                self._retire(v)
            for name, versions in found.items():
                for number, (vdir, key) in versions.items():
                    with self._lock:
                        old = self._models.get(name, {}).get(number)
                    if old is not None and old.key == key:
                        continue
                    v = self._judge(Version(name, number, vdir, key=key))
                    with self._lock:
                        self._models.setdefault(name, {})[number] = v
                    if old is not None:
                        changes.append(f"{name} version {number} changed on disk")
                        self._retire(old)
                    said = "servable (verified)" if v.state == "UNLOADED" and v.verified else v.state
                    changes.append(f"{name} version {number}: {said}" + (f" ({v.reason})" if v.reason else ""))
                changes += self._apply_policy(name)
            self.scans += 1
        for line in changes:
            log.warning("model repository: %s", line)
        return changes

    def _read_tree(self) -> dict[str, dict[int, tuple[Path, tuple]]]:
        found: dict[str, dict[int, tuple[Path, tuple]]] = {}
        try:
            models = sorted(p for p in self.root.iterdir() if p.is_dir() and NAME_RE.match(p.name))
        except OSError as exc:
            log.warning("model repository %s cannot be read: %s", self.root, exc)
            return {n: {v: (x.path, x.key) for v, x in vs.items()} for n, vs in self._models.items()}
        for mdir in models:
            versions: dict[int, tuple[Path, tuple]] = {}
            try:
                entries = list(mdir.iterdir())
            except OSError:
                continue
            for vdir in entries:
                # numbered directories only: "1", "2"...; temp dirs of an export in progress start with "."
                if vdir.is_dir() and vdir.name.isdigit() and len(vdir.name) <= 18 and int(vdir.name) > 0:
                    versions[int(vdir.name)] = (vdir, _dir_key(vdir))
            found[mdir.name] = versions
        return found

    def _judge(self, v: Version) -> Version:
        artifact, why = version_artifact(v.path) if v.path.is_dir() else (None, "the directory is gone")
        v.artifact = artifact
        if artifact is None:
            v.state, v.reason = "REFUSED", why
            return v
        provider = provider_for(artifact, self.base.provider)
        why = check_verified(artifact, provider)
        v.verified = not why
        if why and not self.allow_unverified:
            v.state, v.reason = "REFUSED", why
        else:
            v.state, v.reason = "UNLOADED", (f"not verified, served because of --allow-unverified: {why}" if why else "")
        return v

    def _apply_policy(self, name: str) -> list[str]:
        """Load the newest ``keep_versions`` servable versions of ``name``; unload the others."""
        changes = []
        with self._lock:
            versions = sorted(self._models.get(name, {}).values(), key=lambda v: v.number, reverse=True)
        servable = [v for v in versions if v.state in ("UNLOADED", "AVAILABLE", "LOADING")]
        held = name in self._held
        n_keep = 0 if held else self.keep_versions
        keep, drop = servable[:n_keep], servable[n_keep:]
        why = (f"unloaded on request (POST /v2/repository/models/{name}/unload; .../load serves it again)" if held
               else f"not among the newest {self.keep_versions} servable versions (--keep-versions)")
        for v in keep:
            if v.loop is None and v.state != "AVAILABLE":
                changes.append(self._load(v))
        for v in drop:
            if v.loop is not None:
                loop, v.loop = v.loop, None
                v.state = "UNLOADED"
                v.reason = why
                self._drain_and_close(loop)
                changes.append(f"{name} version {v.number} unloaded ({v.reason})")
            elif v.state == "UNLOADED" and not v.reason.startswith("not verified"):
                v.reason = why
        return changes

    def _load(self, v: Version) -> str:
        assert v.artifact is not None
        v.state = "LOADING"
        note = v.reason
        settings = replace(self.base, artifact=str(v.artifact), provider=provider_for(v.artifact, self.base.provider),
                           model_version=f"{v.model}/{v.number}")
        loop = InferenceLoop(settings, self._runner_factory, on_batch=self._on_batch)
        t0 = time.perf_counter()
        try:
            loop.load()
        except Exception as exc:  # noqa: BLE001 - a broken version only takes itself down
            v.state, v.reason = "UNAVAILABLE", f"failed to load: {' '.join(str(exc).split())[:300]}"
            return f"{v.model} version {v.number} UNAVAILABLE ({v.reason})"
        v.loop, v.state = loop, "AVAILABLE"
        v.reason = note if not v.verified else ""
        return f"{v.model} version {v.number} AVAILABLE in {time.perf_counter() - t0:.2f} s"

    def _retire(self, v: Version) -> None:
        if v.loop is not None:
            loop, v.loop = v.loop, None
            v.state = "UNLOADED"
            self._drain_and_close(loop)

    @staticmethod
    def _drain_and_close(loop: InferenceLoop) -> None:
        """Close ``loop`` once the requests already queued on it have their answers (bounded)."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        time.sleep(0.05)  # a request that looked the version up just before it was retired reaches its queue
        while (loop.queue_depth or loop.in_flight) and time.monotonic() < deadline:
            time.sleep(0.01)
        loop.close()

    def close(self) -> None:
        with self._lock:
            versions = [v for vs in self._models.values() for v in vs.values()]
        for v in versions:
            if v.loop is not None:
                loop, v.loop = v.loop, None
                loop.close()


def _dir_key(vdir: Path) -> tuple:
    """What changes when a version directory's files change (names, sizes, modification times)."""
    try:
        return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in vdir.iterdir()
                            if p.is_file() for st in [p.stat()]))
    except OSError:
        return ("unreadable", time.time())


def next_version(model_dir: Path) -> int:
    numbers = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(numbers, default=0) + 1


def export_version(model_dir: str | Path, artifact: str | Path, write_report: Callable[[Path], Any]) -> Path:
    """Write ``model_dir/<next version>/``: the artifact, its side files (external data, engine
    sidecar), the ``manifest.json`` beside it and the report ``write_report(dir)`` writes. Built in a
    hidden temp directory of ``model_dir`` (the repository ignores it) and renamed into place, so a
    serving repository never sees half a version."""
    import shutil
    import tempfile

    from optkit.common.errors import InputError
    from optkit.model.artifact import external_data_files
    from optkit.runtime.engine_meta import sidecar_path

    model_dir, artifact = Path(model_dir), Path(artifact)
    if not NAME_RE.match(model_dir.name):
        raise InputError(f"{model_dir.name!r} is not a model name (letters, digits, '.', '_', '-'; 128 at most)")
    model_dir.mkdir(parents=True, exist_ok=True)
    side = [artifact.parent / loc for loc in external_data_files(artifact)] if artifact.suffix == ".onnx" else []
    if artifact.suffix.lower() in ENGINE_SUFFIXES and sidecar_path(artifact).is_file():
        side.append(sidecar_path(artifact))
    if (artifact.parent / "manifest.json").is_file():
        side.append(artifact.parent / "manifest.json")
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=model_dir))
    try:
        for f in (artifact, *side):
            shutil.copy2(f, tmp / f.relative_to(artifact.parent) if f.is_relative_to(artifact.parent) else tmp / f.name)
        write_report(tmp)
        for _ in range(100):  # another export may take the number first: take the next one
            dest = model_dir / str(next_version(model_dir))
            try:
                tmp.rename(dest)  # atomic; fails when dest exists
            except OSError:
                if not dest.exists():
                    raise
                continue
            dest.chmod(0o755)  # mkdtemp made it private
            return dest
        raise InputError(f"could not find a free version number in {model_dir}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
