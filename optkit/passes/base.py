"""The pass interface: ``artifact + config -> artifact``, pure and self-checking.

Shape borrowed from onnx-ir's pass infrastructure and Olive: a pass declares a frozen config
dataclass, never reads global state or the CLI, never edits its input, and checks its own result
before returning a :class:`PassResult`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optkit.artifact import Artifact
from optkit.errors import RecipeError


@dataclass
class PassResult:
    artifact: Artifact | None
    # Human-readable lines the CLI prints (node counts before/after, sizes, warnings).
    messages: list[str] = field(default_factory=list)
    # Machine-readable facts recorded in the manifest (stats, ranges, timings).
    info: dict[str, Any] = field(default_factory=dict)
    # Set when the pass could not run here for a legitimate reason (e.g. no TensorRT):
    # the pipeline reports it as skipped with this reason, never as passed.
    skipped: str | None = None
    # Extra files written beside the artifact (reference npz, calibration cache, sidecar json).
    side_files: list[Path] = field(default_factory=list)


class Pass:
    name: ClassVar[str]
    config_cls: ClassVar[type]
    # Default output file suffix when a recipe names the output, e.g. ".fp16.onnx".
    output_suffix: ClassVar[str] = ".onnx"
    # Whether the pass consumes a parent artifact (export does not: it starts from a model).
    needs_input: ClassVar[bool] = True

    def run(self, src: Artifact | None, cfg: Any, out: Path) -> PassResult:  # pragma: no cover
        raise NotImplementedError

    def fingerprint(self, cfg: Any) -> str:
        """Hash of external inputs named in ``cfg`` (data dirs, model sources) for cache keys."""
        return ""

    @classmethod
    def make_config(cls, params: dict[str, Any], where: str = "") -> Any:
        return build_config(cls.config_cls, params, where or f"pass {cls.name}")


def build_config(config_cls: type, params: dict[str, Any], where: str) -> Any:
    """Build a config dataclass from a dict, with clear errors for unknown or bad parameters."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise RecipeError(
            f"{where}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known: {', '.join(sorted(fields)) or 'none'}"
        )
    hints = typing.get_type_hints(config_cls)
    values = {}
    for name, value in params.items():
        values[name] = _coerce(value, hints.get(name), f"{where}: parameter {name}")
    missing = [
        n for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{where}: missing required parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return config_cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where}: {value!r} is not a valid {hint}")
    if origin is typing.Literal:
        if value not in args:
            raise RecipeError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else None
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return value
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
