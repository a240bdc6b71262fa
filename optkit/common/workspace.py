"""Crash safety for `optkit run`: temporary work directories that can be recognised as orphaned,
cleanup of a killed run's leftovers, and an exclusive lock on the output directory.

A process killed with SIGKILL runs no cleanup code: ``tempfile.TemporaryDirectory`` leaves its
directory (the int8 pass's ``optkit-int8-*`` holds a copy of the model), and
:func:`optkit.common.fileio.atomic_output` leaves its ``.<name>.<random>.partial<suffix>`` file. Both are
made recognisable here:

- :func:`work_dir` holds a lock (``filelock``: an OS-level ``flock``, released by the kernel when the
  process dies, however it dies) on a ``.owner.lock`` file inside each work directory for as long
  as it is in use. :func:`clean_stale_work_dirs` removes every optkit work directory in the temp
  folder whose lock it can take: its owner is gone. Directories of running processes (another
  `optkit run`, a `quantize` in another terminal) keep their lock and are left alone.
- Partial files live in the output directory, which `optkit run` locks (:func:`output_lock`), so
  any partial file found there once the lock is held belongs to a dead process.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError
from optkit.common.fileio import PARTIAL_MARK

# Work directories made before they carried an owner lock; any "optkit-*" directory with an
# owner lock is recognised whatever its prefix (the passes' pre-steps use "optkit-<pass>-").
WORK_PREFIXES = ("optkit-int8-", "optkit-fp16-", "optkit-engine-", "optkit-localize-", "optkit-calib-",
                 "optkit-profile-")
OWNER_LOCK = ".owner.lock"
OUTPUT_LOCK = ".optkit.lock"
# A work directory without an owner lock (made by an optkit version before this one, or killed in
# the microseconds between mkdtemp and taking the lock) is removed once it is this old.
UNLOCKED_MAX_AGE_S = 3600.0

_active: set[Path] = set()  # work dirs of this process (never cleaned by itself)


def _lock(path: Path):  # noqa: ANN202
    from optkit.common.lazy import lazy_import

    return lazy_import("filelock").FileLock(str(path))


def open_work_dir(prefix: str) -> tuple[Path, Any]:
    """Create a work directory marked as in use; give both values to :func:`close_work_dir`."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    lock = _lock(path / OWNER_LOCK)
    lock.acquire()
    _active.add(path)
    return path, lock


def close_work_dir(path: Path, lock: Any) -> None:
    _active.discard(path)
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(Exception):
        lock.release()


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory (like ``tempfile.TemporaryDirectory``) marked as in use by this
    process, so a later :func:`clean_stale_work_dirs` can tell it from an orphan."""
    path, lock = open_work_dir(prefix)
    try:
        yield path
    finally:
        close_work_dir(path, lock)


def _is_orphan(path: Path) -> bool:
    from optkit.common.lazy import lazy_import

    filelock = lazy_import("filelock")
    lock_file = path / OWNER_LOCK
    if not lock_file.exists():
        try:
            return time.time() - path.stat().st_mtime > UNLOCKED_MAX_AGE_S
        except OSError:
            return False
    lock = filelock.FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False  # a live process holds it
    except OSError:
        return False
    lock.release()
    return True


def clean_stale_work_dirs(tmp: str | os.PathLike | None = None) -> list[Path]:
    """Remove optkit work directories whose owner process is gone; returns what was removed."""
    base = Path(tmp or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith("optkit-") or p in _active or p.is_symlink() or not p.is_dir():
            continue
        if not (p / OWNER_LOCK).exists() and not p.name.startswith(WORK_PREFIXES):
            continue  # not ours (e.g. another tool's optkit-ray-* folders)
        if _is_orphan(p):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
    return removed


def clean_partial_files(out_dir: Path) -> list[Path]:
    """Remove atomic_output's temporary files (``.<name>.<random>.partial<suffix>``) from a
    directory. Call only while holding :func:`output_lock` on it."""
    removed: list[Path] = []
    for p in out_dir.iterdir():
        if p.name.startswith(".") and PARTIAL_MARK in p.name and p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


@contextlib.contextmanager
def output_lock(out_dir: Path, wait: bool = False, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on ``out_dir`` (file ``.optkit.lock`` inside it) for a run.

    ``wait=False``: another holder -> InputError at once. ``wait=True``: block until it is free
    (or ``timeout`` seconds pass). The owner's pid and start time are written in the lock file so
    the message can name them.
    """
    from optkit.common.lazy import lazy_import

    filelock = lazy_import("filelock")
    path = out_dir / OUTPUT_LOCK
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=(-1 if timeout is None else timeout) if wait else 0)
    except filelock.Timeout:
        owner = ""
        with contextlib.suppress(OSError):
            owner = path.read_text(encoding="utf-8").strip()
        hint = "wait for it to finish, run with --wait, or choose another -o"
        raise InputError(f"output directory {out_dir} is in use by another optkit run"
                         f"{f' ({owner})' if owner else ''}; {hint}") from None
    except OSError as exc:
        raise InputError(f"cannot lock output directory {out_dir}: {exc.strerror or exc}") from exc
    try:
        with contextlib.suppress(OSError):
            path.write_text(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.write_text("", encoding="utf-8")
        lock.release()
