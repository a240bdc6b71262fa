"""Atomic file output: nothing partial is ever left at a user's output path.

Every file optkit writes goes through :func:`atomic_output`: the content is written to a
temporary file in the destination directory and renamed over the destination only when the
writer finished without error. On any failure the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optkit.errors import InputError


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, with a clear message, when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(f"output path {path} is a directory, expected a file name")
    if not parent.exists():
        raise InputError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {parent} is not writable")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file: the same path, a symlink to it or a hard link."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


class AtomicFiles:
    """Several output files written as temporary files and renamed into place together.

    :meth:`add` gives the temporary path for a destination; :meth:`commit` renames every file
    (the ones added last first, so a main file named by :meth:`add` first appears after its side
    files); :meth:`discard` removes the temporary files. Until the commit, a file already at a
    destination is untouched, whatever fails.
    """

    def __init__(self) -> None:
        self.files: dict[Path, Path] = {}   # destination -> temporary file

    def add(self, path: str | os.PathLike, suffix: str | None = None) -> Path:
        path = check_output_path(path)
        if path in self.files:
            return self.files[path]
        suffix = suffix if suffix is not None else "".join(path.suffixes) or ".tmp"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{suffix}", dir=path.parent)
        os.close(fd)
        self.files[path] = Path(tmp_name)
        return self.files[path]

    def commit(self) -> None:
        # mkstemp creates 0600 files; give the outputs the permissions a normal file would get.
        umask = os.umask(0)
        os.umask(umask)
        try:
            for path, tmp in reversed(list(self.files.items())):
                if not tmp.exists():
                    raise InputError(f"internal error: nothing was written for {path}")
                os.chmod(tmp, 0o666 & ~umask)
                os.replace(tmp, path)
        except OSError as exc:
            self.discard()
            raise InputError(f"could not write {path}: {exc.strerror or exc}") from exc
        self.files.clear()

    def discard(self) -> None:
        for tmp in self.files.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self.files.clear()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds."""
    files = AtomicFiles()
    tmp = files.add(path, suffix)
    try:
        yield tmp
        files.commit()
    except BaseException:
        files.discard()
        raise


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomically(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomically(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable file, else raise InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{what} {path} is not readable")
    return path
