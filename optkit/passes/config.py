"""Options declared once, in the pass configs: type, default, help, choices, whether a path.

A config field declares its option with :func:`option` (dataclass field metadata). From that one
declaration:

- the CLI options of the pass commands are generated (``optkit.cli.options.click_options``);
- recipe params are resolved (paths relative to the recipe: :func:`path_params`) and validated
  (``passes.base.build_config``: types and choices, errors naming the parameter);
- docs/options.md is generated from them (``python -m optkit.cli.options > docs/options.md``).

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

from optkit.common.errors import InputError, ParameterError  # noqa: F401 - raised by config checks


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
    multiple: bool = False         # a list option whose CLI flag repeats (--dynamic-axis a:3 --dynamic-axis a:0)
    output: bool = False           # a file the pass writes (besides its -o): checked against its inputs
    split: bool = True             # with multiple: each repeated value may also be a comma list

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag_name(self) -> str:
        return self.flag.split("/")[0]


def option(default: Any = MISSING, help: str = "", *, choices: tuple[Any, ...] | None = None, path: bool = False,
           flag: str | None = None, metavar: str | None = None, cli: bool = True,
           min: float | None = None, max: float | None = None, check: Any = None, multiple: bool = False,
           output: bool = False, split: bool = True) -> Any:
    """A dataclass field with its option description (see the module docstring). ``path``: a file
    or directory the pass reads; ``output`` (with ``path``): a file it writes, which the CLI and the
    recipe check against every input and output (``optkit.common.fileio.check_io``). ``split=False``
    (with ``multiple``): a repeated value is taken whole, commas included (``--profile``)."""
    meta = {"optkit": {"help": help, "choices": choices, "path": path, "flag": flag, "metavar": metavar,
                       "cli": cli, "min": min, "max": max, "check": check, "multiple": multiple, "output": output,
                       "split": split}}
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
                          m.get("min"), m.get("max"), m.get("check"), bool(m.get("multiple")),
                          bool(m.get("output")), bool(m.get("split", True))))
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


def output_params(config_cls: type) -> set[str]:
    """The path parameters that name a file the pass writes."""
    return {o.name for o in options(config_cls) if o.path and o.output}


def flag_for(config_classes: typing.Iterable[type | str], param: str) -> str:
    for cls in config_classes:
        for o in options(config_class(cls)):
            if o.name == param:
                return o.flag_name
    return "--" + param.replace("_", "-")


def config_class(target: str | type) -> type:
    if isinstance(target, type):
        return target
    import importlib

    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)
