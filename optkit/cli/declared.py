"""Files a command reads and writes, declared once on its click parameters and checked in one place.

An option that writes a file is declared with :func:`output_option` (a pass config field with
``option(..., output=True)`` becomes one too); one that reads a file with :func:`input_option` /
:func:`input_argument` (pass config fields with ``path=True``). Every command made with
:func:`command` (and every pass command) runs :func:`optkit.common.fileio.check_io` over all of
them before its body: an output that is an input (also through links and ``..``), two outputs
that are one file, a name of the wrong kind or not valid UTF-8 -> one line, exit 1, nothing read
or written. A parameter that writes or reads several files (``--report-dir``: report.json and
report.html; export's ``-o``: the model and its reference) names them with ``files``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# (value, all parameter values of the command) -> the files the parameter stands for
Files = Callable[[Any, dict[str, Any]], list[Path]]


def _flag(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return (param.metavar or param.name or "argument").upper()
    longs = [o for o in param.opts if o.startswith("--")]
    return (longs or param.opts)[0]


def _values(value: Any) -> list[Any]:
    if value is None or value == "" or value is False:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Declared:
    """Mixin of the declared parameters: ``files`` and ``reads``/``kinds``."""

    io_role = ""

    def _init_io(self, files: Files | None, kinds: tuple[str, ...] = (), reads: tuple[str, ...] | None = None) -> None:
        self.io_files = files
        self.io_kinds = tuple(kinds)
        self.io_reads = reads

    def paths(self, value: Any, params: dict[str, Any]) -> list[Path]:
        out: list[Path] = []
        for v in _values(value):
            out += self.io_files(v, params) if self.io_files else [Path(v)]
        return out


class OutputOption(_Declared, click.Option):
    io_role = "output"

    def __init__(self, *args: Any, files: Files | None = None, kinds: tuple[str, ...] = (), **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_io(files, kinds)


class InputOption(_Declared, click.Option):
    io_role = "input"

    def __init__(self, *args: Any, files: Files | None = None, reads: tuple[str, ...] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_io(files, reads=reads)


class InputArgument(_Declared, click.Argument):
    io_role = "input"

    def __init__(self, *args: Any, files: Files | None = None, reads: tuple[str, ...] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._init_io(files, reads=reads)


def output_option(*decls: str, files: Files | None = None, kinds: tuple[str, ...] = (), **kw: Any) -> Any:
    """``click.option`` for an option that writes a file (``kinds``: the name endings accepted)."""
    return click.option(*decls, cls=OutputOption, files=files, kinds=kinds, **kw)


def input_option(*decls: str, files: Files | None = None, reads: tuple[str, ...] | None = None, **kw: Any) -> Any:
    return click.option(*decls, cls=InputOption, files=files, reads=reads, **kw)


def input_argument(*decls: str, files: Files | None = None, reads: tuple[str, ...] | None = None, **kw: Any) -> Any:
    return click.argument(*decls, cls=InputArgument, files=files, reads=reads, **kw)


def declared_io(command: click.Command, params: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(outputs, inputs) of one invocation, as fileio.Output / fileio.Input."""
    from optkit.common.fileio import Input, Output

    outputs, inputs = [], []
    for p in command.params:
        if not isinstance(p, _Declared) or p.name not in params:
            continue
        given = {Path(v) for v in _values(params[p.name])}
        for path in p.paths(params[p.name], params):
            what = _flag(p) if Path(path) in given else f"file written with {_flag(p)}"
            if p.io_role == "output":
                outputs.append(Output(what, Path(path), p.io_kinds if Path(path) in given else ()))
            else:
                inputs.append(Input(what.replace("written", "read"), Path(path), p.io_reads))
    return outputs, inputs


def check_declared(ctx: click.Context) -> None:
    from optkit.common.fileio import check_io

    check_io(*declared_io(ctx.command, ctx.params))


class CheckedCommand(click.Command):
    """A command whose declared inputs and outputs are checked before its body runs."""

    def invoke(self, ctx: click.Context) -> Any:
        check_declared(ctx)
        return super().invoke(ctx)


def command(name: str | None = None, **attrs: Any) -> Any:
    """``click.command`` with the declared-file check (:class:`CheckedCommand`)."""
    return click.command(name, cls=attrs.pop("cls", CheckedCommand), **attrs)


# -- what the common file parameters stand for ---------------------------------------------------
def report_files(value: Any, params: dict[str, Any]) -> list[Path]:
    """--report-dir DIR: the two reports written there together."""
    return [Path(value) / "report.json", Path(value) / "report.html"]


def baseline_files(value: Any, params: dict[str, Any]) -> list[Path]:
    """--baseline: a report.json, or an output directory holding one."""
    p = Path(value)
    return [p / "report.json", p] if p.is_dir() else [p]


def data_suffixes() -> tuple[str, ...]:
    from optkit.data.source import AUDIO_SUFFIXES

    return (".npy", ".npz", ".csv", *AUDIO_SUFFIXES)
