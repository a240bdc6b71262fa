"""Options declared once, in the pass configs: type, default, help, choices, whether a path.

A config field declares its option with :func:`option` (dataclass field metadata). From that one
declaration:

- the CLI options of the pass commands are generated (:func:`click_options`, ``optkit/cli``);
- recipe params are resolved (paths relative to the recipe: :func:`path_params`) and validated
  (``passes.base.build_config``: types and choices, errors naming the parameter);
- the docs test checks every option against README.md.

Library errors about one parameter are :class:`ParameterError`: the message names the parameter
as ``{name}``, and the layer that knows how the user spelled it fills that in - the CLI with the
flag (``--exclude-nodes``), a recipe with the params key and its YAML line - so a message never
names a CLI flag when the value came from a recipe. (click has no dataclass integration; this is
the ~100 lines that connect the two.)
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, dataclass
from typing import Any

from optkit.common.errors import InputError


class ParameterError(InputError):
    """An error about one parameter; ``template`` contains ``{name}`` where it is named."""

    def __init__(self, param: str, template: str):
        self.param = param
        self.template = template
        super().__init__(self.spelled(param))

    def spelled(self, name: str) -> str:
        # replace, not str.format: the rest of the message may hold braces (node names, values)
        return self.template.replace("{name}", name)


@dataclass(frozen=True)
class Option:
    name: str                      # the config field (= the recipe params key)
    type: Any                      # the field's annotation
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    path: bool                     # resolved relative to the recipe; click.Path on the CLI
    flag: str                      # CLI spelling, e.g. "--exclude-nodes" or "--keep-io-types/--no-keep-io-types"
    metavar: str | None
    cli: bool                      # whether the pass's command offers it
    min: float | None
    max: float | None
    check: Any = None              # value -> None, raising InputError when it is not valid

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag_name(self) -> str:
        return self.flag.split("/")[0]


def option(default: Any = MISSING, help: str = "", *, choices: tuple[Any, ...] | None = None, path: bool = False,
           flag: str | None = None, metavar: str | None = None, cli: bool = True,
           min: float | None = None, max: float | None = None, check: Any = None) -> Any:
    """A dataclass field with its option description (see the module docstring)."""
    meta = {"optkit": {"help": help, "choices": choices, "path": path, "flag": flag, "metavar": metavar,
                       "cli": cli, "min": min, "max": max, "check": check}}
    return dataclasses.field(default=default, metadata=meta)


def options(config_cls: type) -> list[Option]:
    hints = typing.get_type_hints(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        m = f.metadata.get("optkit", {})
        hint = hints.get(f.name)
        choices = m.get("choices")
        if choices is None:
            literal = [a for a in (typing.get_args(hint) or ()) if typing.get_origin(a) is typing.Literal]
            if typing.get_origin(hint) is typing.Literal:
                choices = typing.get_args(hint)
            elif literal:
                choices = typing.get_args(literal[0])
        flag = m.get("flag") or "--" + f.name.replace("_", "-")
        out.append(Option(f.name, hint, f.default, m.get("help", ""), tuple(choices) if choices else None,
                          bool(m.get("path")), flag, m.get("metavar"), bool(m.get("cli", bool(m))),
                          m.get("min"), m.get("max"), m.get("check")))
    return out


def check_values(cfg: Any) -> None:
    """Choices and ranges declared with :func:`option`, for a config however it was built."""
    for o in options(type(cfg)):
        value = getattr(cfg, o.name)
        if value is None:
            continue
        if o.choices and value not in o.choices:
            raise ParameterError(o.name, f"{{name}}: {value!r} is not one of {', '.join(map(str, o.choices))}")
        if o.check is not None:
            try:
                o.check(value)
            except ParameterError:
                raise
            except InputError as exc:
                raise ParameterError(o.name, "{name}: " + str(exc)) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if o.min is not None and value < o.min:
                raise ParameterError(o.name, f"{{name}} must be at least {o.min:g}, got {value}")
            if o.max is not None and value > o.max:
                raise ParameterError(o.name, f"{{name}} must be at most {o.max:g}, got {value}")


def path_params(config_cls: type) -> set[str]:
    return {o.name for o in options(config_cls) if o.path}


def flag_for(config_classes: typing.Iterable[type | str], param: str) -> str:
    for cls in config_classes:
        for o in options(config_class(cls)):
            if o.name == param:
                return o.flag_name
    return "--" + param.replace("_", "-")


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
    import click

    class PassCommand(click.Command):
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


def config_class(target: str | type) -> type:
    if isinstance(target, type):
        return target
    import importlib

    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def click_params(config_cls: type, help_prefix: str = "", exclude: typing.Iterable[str] = ()) -> list[Any]:
    """One click.Option per CLI option of ``config_cls``."""
    import click

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
        if o.check is not None:
            kwargs["callback"] = _click_check(o.check)
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
    file equal to this; regenerate with ``python -m optkit.passes.config > docs/options.md``)."""
    from optkit.passes import REGISTRY, get_pass

    lines = ["# Pass options", "",
             "Generated from the pass configs (`python -m optkit.passes.config > docs/options.md`; a test keeps it",
             "current). The recipe key is the `params` key of a step; the flag is the option of the pass's",
             "command (`-` = recipe only). Paths in a recipe are relative to the recipe file.", ""]
    for name in REGISTRY:
        lines += [f"## {name}", "", "| recipe key | CLI flag | default | choices | help |", "|---|---|---|---|---|"]
        for o in options(get_pass(name).config_cls):
            default = "required" if o.required else ("none" if o.default is None else
                                                     ",".join(map(str, o.default)) if isinstance(o.default, tuple)
                                                     else str(o.default))
            choices = ", ".join(map(str, o.choices)) if o.choices else ""
            text = o.help + (" (a path)" if o.path else "")
            lines.append(f"| `{o.name}` | {f'`{o.flag}`' if o.cli else '-'} | {default} | {choices} | {text} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(reference_markdown(), end="")
