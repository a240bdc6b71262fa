"""Nothing partial is ever left at an output path."""
from __future__ import annotations

import os

import pytest

from optkit.common.errors import InputError
from optkit.common.fileio import atomic_output, write_json_atomically


def test_success_renames_into_place(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomically(target, {"x": 1})
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_exception_removes_temporary_and_keeps_old_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_rename_failure_is_input_error_without_leftovers(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"

    def boom(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(InputError, match="could not write"):
        with atomic_output(target) as tmp:
            tmp.write_text("data")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_and_directory_target(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        with atomic_output(tmp_path / "no" / "a.txt"):
            pass
    with pytest.raises(InputError, match="is a directory"):
        with atomic_output(tmp_path):
            pass


def test_written_file_has_normal_permissions(tmp_path):
    target = tmp_path / "a.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("x")
    mode = target.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
