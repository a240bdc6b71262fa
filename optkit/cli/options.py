"""The pass options as click options and as docs: what the CLI makes of the option declarations
in the pass configs (:mod:`optkit.passes.config`). click has no dataclass integration; this is the
code that connects the two, and the generator of docs/options.md.
"""
from __future__ import annotations

import typing
from dataclasses import MISSING
from typing import Any

from optkit.common.errors import InputError
from optkit.passes.config import config_class, options


def click_options(config: str, help_prefix: str = "", exclude: typing.Iterable[str] = ()) -> Any:
    """Declare that a command has one click option per CLI option of ``config`` ("module:Class").

    The options are made when the command is first used (:class:`PassCommand`), so ``optkit --help``
    does not import the pass modules. The command gets the values under the field names (None where
    the user gave nothing and the field has no default)."""

    def decorate(fn: Any) -> Any:
        specs = fn.__dict__.setdefault("__optkit_options__", [])
        specs.insert(0, (config, help_prefix, tuple(exclude)))  # decorators apply bottom-up
        return fn

    return decorate


def _pass_command_class() -> Any:
    from optkit.cli.declared import CheckedCommand

    class PassCommand(CheckedCommand):
        """A click command whose pass options (:func:`click_options`) are built on first use."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            callback = kwargs.get("callback") or (args[1] if len(args) > 1 else None)
            self._pending = list(getattr(callback, "__optkit_options__", []))
            super().__init__(*args, **kwargs)

        @property
        def params(self) -> list[Any]:
            if self._pending:
                pending, self._pending = self._pending, []
                for target, prefix, exclude in pending:
                    self._params.extend(click_params(config_class(target), prefix, exclude))
            return self._params

        @params.setter
        def params(self, value: list[Any]) -> None:
            self._params = value

    return PassCommand


def pass_command(name: str | None = None, **attrs: Any) -> Any:
    """``click.command`` for a command with :func:`click_options`."""
    import click

    return click.command(name, cls=_pass_command_class(), **attrs)


def click_params(config_cls: type, help_prefix: str = "", exclude: typing.Iterable[str] = ()) -> list[Any]:
    """One click.Option per CLI option of ``config_cls``."""
    import click

    from optkit.cli.declared import InputOption, OutputOption

    excluded = set(exclude)

    def csv(ctx: Any, param: Any, value: Any) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        inner = typing.get_args(typing.get_type_hints(config_cls).get(param.name))[:1]
        if inner and inner[0] is int:
            try:
                items = tuple(int(v) for v in items)
            except ValueError:
                items = ()
            if not items or any(v <= 0 for v in items):
                raise click.BadParameter(f"{value!r} is not a list of positive integers like {param.metavar}")
        return items

    params = []
    for o in options(config_cls):
        if not o.cli or o.name in excluded:
            continue
        kwargs: dict[str, Any] = {"help": help_prefix + o.help}
        base = _base_type(o.type)
        if o.default is not MISSING:
            kwargs["default"] = None if isinstance(o.default, tuple) else o.default
            kwargs["show_default"] = o.default not in (None, (), False, "")
        if base is bool:
            if "/" not in o.flag:
                kwargs["is_flag"] = True
        elif o.choices:
            kwargs["type"] = click.Choice([str(c) for c in o.choices])
        elif base in (tuple, list) and o.multiple:
            kwargs["multiple"] = True
            kwargs["callback"] = _repeated(o.check, o.split)
            kwargs["metavar"] = o.metavar
            kwargs["default"] = None
        elif base in (tuple, list):
            kwargs["callback"] = csv
            kwargs["metavar"] = o.metavar or "A,B"
            kwargs["default"] = None
            if o.default:
                kwargs["show_default"] = ",".join(map(str, o.default))
        elif o.path:
            kwargs["type"] = click.Path(dir_okay=True)
        elif base is int:
            kwargs["type"] = click.IntRange(o.min, o.max) if (o.min is not None or o.max is not None) else int
        elif base is float:
            kwargs["type"] = click.FloatRange(o.min, o.max) if (o.min is not None or o.max is not None) else float
        if o.metavar and "metavar" not in kwargs:
            kwargs["metavar"] = o.metavar
        if o.check is not None and not o.multiple:
            check = _click_check(o.check)
            split = kwargs.get("callback")  # a comma list (csv) is split before it is checked
            kwargs["callback"] = check if split is None else (
                lambda ctx, param, value, split=split, check=check: check(ctx, param, split(ctx, param, value)))
        if o.output:
            params.append(OutputOption([o.flag, o.name], **kwargs))
        elif o.path:
            params.append(InputOption([o.flag, o.name], **kwargs))
        else:
            params.append(click.Option([o.flag, o.name], **kwargs))
    return params


def _click_check(check: Any) -> Any:
    import click

    def callback(ctx: Any, param: Any, value: Any) -> Any:
        if value is not None:
            try:
                check(value)
            except InputError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return callback


def _repeated(check: Any, split: bool = True) -> Any:
    """A repeatable flag: its values (each may also be a comma list unless ``split`` is False) as one
    tuple, None when not given."""
    inner = _click_check(check) if check is not None else (lambda ctx, param, value: value)

    def callback(ctx: Any, param: Any, value: Any) -> Any:
        items = tuple(v.strip() for given in value or () for v in (str(given).split(",") if split else [str(given)])
                      if v.strip())
        return inner(ctx, param, items) if items else None

    return callback


def _base_type(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _base_type(args[0]) if args else None
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0])
    return origin or hint


def reference_markdown() -> str:
    """docs/options.md: every pass option, as a recipe key and as a CLI flag (a docs test keeps the
    file equal to this; regenerate with ``python -m optkit.cli.options > docs/options.md``)."""
    from optkit.passes import REGISTRY, get_pass

    lines = ["# Pass options", "",
             "Generated from the pass configs (`python -m optkit.cli.options > docs/options.md`; a test keeps it",
             "current). The recipe key is the `params` key of a step; the flag is the option of the pass's",
             "command (`-` = recipe only). Paths in a recipe are relative to the recipe file.", ""]
    for name in REGISTRY:
        lines += [f"## {name}", "", "| recipe key | CLI flag | default | choices | help |", "|---|---|---|---|---|"]
        for o in options(get_pass(name).config_cls):
            default = "required" if o.required else ("none" if o.default is None else
                                                     ",".join(map(str, o.default)) if isinstance(o.default, tuple)
                                                     else str(o.default))
            choices = ", ".join(map(str, o.choices)) if o.choices else ""
            text = o.help + (" (a file it writes)" if o.output else " (a path)" if o.path else "")
            lines.append(f"| `{o.name}` | {f'`{o.flag}`' if o.cli else '-'} | {default} | {choices} | {text} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
