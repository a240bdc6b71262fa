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
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError

# Temporary files of atomic_output are named ".<name>.<random>.partial<suffix>"; `optkit run`
# removes leftovers of a killed process from its output directory (see cleanup.py).
PARTIAL_MARK = ".partial"


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, with a clear message, when ``path`` cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    check_name_length(path)
    if path.is_dir():
        raise InputError(f"output path {path} is a directory, expected a file name")
    if path.exists() and not path.is_file():
        # a device, FIFO or socket: the rename would replace it (as root, /dev/null itself)
        raise InputError(f"output path {path} is not a regular file (a device, FIFO or socket); refusing to replace it")
    if not parent.exists():
        raise InputError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {parent} is not writable")
    # os.access says yes to root everywhere, and /proc, /sys or a read-only mount only refuse
    # at creation time: probe with a real (empty, removed at once) temporary file.
    try:
        fd, probe = tempfile.mkstemp(prefix=".optkit-probe.", suffix=PARTIAL_MARK, dir=parent)
    except OSError as exc:
        raise InputError(f"cannot create files in output directory {parent}: {exc.strerror or exc}") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def check_name_length(path: Path) -> None:
    """A file name longer than the file system allows fails with a clear message, not ENAMETOOLONG
    from deep inside a writer (``Path.is_dir`` itself raises it)."""
    limit = 255
    with contextlib.suppress(OSError, ValueError):
        parent = path.parent if str(path.parent) else Path(".")
        limit = os.pathconf(parent if parent.is_dir() else ".", "PC_NAME_MAX")
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise InputError(f"file name {part[:40]}... is {len(os.fsencode(part))} bytes long; "
                             f"this file system allows {limit}")


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Fail early when ``path`` (created later, with parents, if missing) could not hold files:
    probes the directory itself or its nearest existing ancestor, and creates nothing."""
    path = Path(path)
    check_name_length(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create {what} {path}: {existing} is a file")
    try:
        check_output_path(existing / "probe")
    except InputError as exc:
        raise InputError(f"cannot use {what} {path}: {exc}") from exc
    return path


def ensure_output_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``path`` (and parents) if needed and prove files can be created in it."""
    path = check_output_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {path}: {exc.strerror or exc}") from exc
    check_output_path(path / "probe")
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
        try:
            # the name is shortened so a long (but valid) output name still gives a valid temp name
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=f"{PARTIAL_MARK}{suffix}",
                                            dir=path.parent)
        except OSError as exc:  # e.g. a directory under /proc or /sys, a read-only mount
            raise InputError(f"cannot create files in output directory {path.parent}: {exc.strerror or exc}") from exc
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

    def write_text(self, path: str | os.PathLike, text: str) -> Path:
        """Write ``text`` to the temporary file of ``path``; returns ``path``. A full disk is one line
        naming the file (the caller's ``with`` then removes every temporary file)."""
        tmp = self.add(path)
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"could not write {path}: {exc.strerror or exc}") from exc
        return Path(path)

    def write_json(self, path: str | os.PathLike, obj: Any) -> Path:
        return self.write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    # ``with AtomicFiles() as files:`` every file appears at the end of the block, or none does.
    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


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


# -- the files a command reads and writes, checked together ---------------------------------------
class Input(typing.NamedTuple):
    """A file (or directory) a command reads. ``what`` names it the way the user gave it (a flag,
    an argument, a recipe key). For a directory, ``reads`` are the suffixes of the files read in
    it (an output with one of them inside it is refused); None = every file in it."""

    what: str
    path: Path
    reads: tuple[str, ...] | None = None


class Output(typing.NamedTuple):
    """A file a command writes; ``kinds`` are the name endings the writer accepts (empty: any)."""

    what: str
    path: Path
    kinds: tuple[str, ...] = ()


def check_utf8_name(path: str | os.PathLike, what: str = "file") -> None:
    """A name that is not valid UTF-8 (Python keeps its bytes as surrogates) is refused with one
    line: ONNX Runtime, JSON and XML writers would each fail differently, deep inside."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(text).decode("ascii", "backslashreplace")
        raise InputError(f"{what} name {shown} is not valid UTF-8; rename the file") from None


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except (ValueError, OSError):
        return False


def check_io(outputs: typing.Iterable[Output], inputs: typing.Iterable[Input] = ()) -> None:
    """THE check of a command's (or a recipe step's) files before anything is read or written:
    every name is valid UTF-8, every output has a name its writer accepts, no output is one of the
    inputs (through symlinks, hard links and ``..``) or lies in an input directory where it would
    be read, and no two outputs are one file. Raises InputError with one line."""
    outputs, inputs = list(outputs), list(inputs)
    for item in [*inputs, *outputs]:
        check_utf8_name(item.path, item.what)
    for out in outputs:
        name = out.path.name.lower()
        if out.kinds and not name.endswith(tuple(k.lower() for k in out.kinds)):
            raise InputError(f"{out.what} {out.path}: expected a {' or '.join(out.kinds)} file name")
        for inp in inputs:
            if same_file(out.path, inp.path):
                raise InputError(f"{out.what} {out.path} is the input {inp.what} {inp.path}; it would be "
                                 "overwritten: choose another file")
            if (inp.path.is_dir() and _inside(out.path, inp.path)
                    and (inp.reads is None or name.endswith(inp.reads))):
                raise InputError(f"{out.what} {out.path} is inside the {inp.what} directory {inp.path}, "
                                 "where it would be read as input: choose another place")
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            if same_file(a.path, b.path):
                who = f"two outputs ({a.what})" if a.what == b.what else f"{a.what} and {b.what}"
                raise InputError(f"{who} both write {b.path}; give each its own file")
