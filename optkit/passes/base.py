"""The pass interface: ``artifact + config -> artifact``, pure and self-checking.

Shape borrowed from onnx-ir's pass infrastructure and Olive: a pass declares a frozen config
dataclass, never reads global state or the CLI, never edits its input, and checks its own result
before returning a :class:`PassResult`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optkit.model.artifact import Artifact
from optkit.common.versions import tool_versions
from optkit.common.errors import InputError, PassFailed, RecipeError
from optkit.common.fileio import AtomicFiles, check_output_path, same_file
from optkit.passes.config import check_values
from optkit.common.errors import ParameterError


@dataclass
class PassResult:
    artifact: Artifact | None = None
    # Human-readable lines the CLI prints (node counts before/after, sizes, warnings).
    messages: list[str] = field(default_factory=list)
    # Machine-readable facts recorded in the manifest (stats, ranges, timings).
    info: dict[str, Any] = field(default_factory=dict)
    # Set when the pass could not run here for a legitimate reason (e.g. no TensorRT):
    # the pipeline reports it as skipped with this reason, never as passed.
    skipped: str | None = None
    # Extra files written beside the artifact (reference npz, calibration cache, sidecar json).
    side_files: list[Path] = field(default_factory=list)
    # What ``run`` tells ``Pass.__call__`` for the Artifact record: the precision of the file it
    # wrote (None: the input's), facts kept with the artifact, extra tool versions.
    precision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    # What ``run`` hands to ``check`` (e.g. the inputs to compare on); not recorded anywhere.
    check_inputs: Any = field(default=None, repr=False)


class PassOutput:
    """Where ``Pass.run`` writes: ``path`` is a temporary file that ``Pass.__call__`` renames to
    ``final`` once the pass and its result check succeeded; :meth:`side` does the same for a file
    written beside it (reference npz, calibration cache, engine sidecar, timing cache)."""

    def __init__(self, final: Path, files: AtomicFiles, origin: Artifact | None = None):
        self.final = final
        # the input the caller gave, before any pre-step (run's ``src`` is the last pre-step's result)
        self.origin = origin
        self._files = files
        self.path = files.add(final)

    def side(self, final: str | os.PathLike) -> Path:
        return self._files.add(final)

    @property
    def side_files(self) -> list[Path]:
        return [p for p in self._files.files if p != self.final]


@dataclass(frozen=True)
class PreStep:
    """A pass another pass needs first (build-engine's fp16/int8 conversion): run, recorded and
    cached like any other step by whoever calls the pass (``run_recipe``, the CLI)."""

    pass_name: str
    params: dict[str, Any]


# Runs a pre-step: (pass, its input, its config) -> its result. ``run_recipe`` gives one that
# caches it in the output directory; the default runs it into a temporary directory.
PreStepRunner = Callable[["Pass", Artifact, Any], PassResult]


class Pass:
    """A step ``artifact + config -> artifact``.

    A subclass implements only its transformation (:meth:`run`) and, where it has one, its
    result check (:meth:`check`). Calling the pass (``Pass.__call__``) owns the contract: the
    output paths are checked (writable, never the input), everything is written to temporary
    files renamed into place only after :meth:`run` and :meth:`check` succeeded (a good file
    already at the output survives any failure), and the :class:`Artifact` record (sha256,
    parent sha256, config dict, tool versions) is made here, once.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    # Default output file suffix when a recipe names the output, e.g. ".fp16.onnx".
    output_suffix: ClassVar[str] = ".onnx"
    # Kind of the artifact written ("onnx" or "engine").
    kind: ClassVar[str] = "onnx"
    # Whether the pass consumes a parent artifact (export does not: it starts from a model).
    needs_input: ClassVar[bool] = True
    # Distributions whose versions are recorded with the artifact.
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_contract_guard", False):
            cls.run = _guarded_run(run)  # type: ignore[method-assign]

    # -- what a pass implements -----------------------------------------------------------------
    def run(self, src: Artifact | None, cfg: Any, out: PassOutput) -> PassResult:  # pragma: no cover
        """Write the result to ``out.path`` (side files to ``out.side(final_path)``)."""
        raise NotImplementedError

    def check(self, src: Artifact | None, cfg: Any, written: Path, result: PassResult) -> None:
        """Check the written (still temporary) result; raise PassFailed if it is wrong. May add
        lines to ``result.messages`` / ``result.info``."""

    def validate(self, src: Artifact | None, cfg: Any) -> None:
        """Checks of the options and the input that must fail even where the pass is unavailable."""

    def side_outputs(self, cfg: Any, out: Path) -> list[Path]:
        """Files the pass may write beside ``out`` (checked up front like the output itself)."""
        return []

    def pre_steps(self, src: Artifact, cfg: Any) -> list[PreStep]:
        """Passes to run on ``src`` first; the last one's artifact becomes this pass's input."""
        return []

    def unavailable(self, cfg: Any) -> tuple[type[Exception], str] | None:
        """(error class, reason) when the pass cannot run on this machine (e.g. no TensorRT)."""
        return None

    def fingerprint(self, cfg: Any) -> str:
        """Hash of external inputs named in ``cfg`` (data dirs, model sources) for cache keys."""
        return ""

    @classmethod
    def make_config(cls, params: dict[str, Any], where: str = "") -> Any:
        return build_config(cls.config_cls, params, where or f"pass {cls.name}")

    # -- the contract, once -----------------------------------------------------------------------
    def __call__(self, src: Artifact | None, cfg: Any, out: str | os.PathLike, *,
                 pre_step: PreStepRunner | None = None) -> PassResult:
        if not isinstance(cfg, self.config_cls):
            cfg = self.make_config(dict(cfg or {}))
        check_values(cfg)
        out = check_output_path(out)
        if self.needs_input and src is None:
            raise InputError(f"{self.name} needs an input artifact")
        for path in [out, *self.side_outputs(cfg, out)]:
            check_output_path(path)
            if src is not None and same_file(src.path, path):
                raise InputError(f"output {path} is the input {src.path} (artifacts are immutable); "
                                 "choose another output file")
        self.validate(src, cfg)
        blocked = self.unavailable(cfg)
        if blocked is not None:
            exc_cls, reason = blocked
            if getattr(cfg, "if_unavailable", "fail") == "skip":
                return PassResult(None, [f"skipped {self.name}: {reason}"], skipped=reason)
            raise exc_cls(reason)
        with contextlib.ExitStack() as stack:
            notes: list[str] = []
            origin = src
            if src is not None:
                for step in self.pre_steps(src, cfg):
                    src, lines = self._run_pre_step(step, src, pre_step, stack)
                    notes += lines
            files = AtomicFiles()
            stack.callback(files.discard)  # a no-op after the commit
            output = PassOutput(out, files, origin)
            result = self.run(src, cfg, output)
            if result.skipped:
                return result
            self.check(src, cfg, output.path, result)
            artifact = Artifact.from_file(
                output.path, kind=self.kind,
                precision=result.precision or (src.precision if src is not None else None),
                made_by=self.name, config=config_to_dict(cfg),
                parent=src.sha256 if src is not None else None,
                tool_versions={**tool_versions(*self.tools), **result.versions}, extra=result.extra,
            )
            side_files = output.side_files
            files.commit()
        result.artifact = dataclasses.replace(artifact, path=out)
        result.side_files = [*side_files, *result.side_files]
        result.messages = notes + result.messages
        return result

    def _run_pre_step(self, step: PreStep, src: Artifact, runner: PreStepRunner | None,
                      stack: contextlib.ExitStack) -> tuple[Artifact, list[str]]:
        from optkit.passes import get_pass

        pre = get_pass(step.pass_name)
        pre_cfg = pre.make_config(step.params, where=f"{self.name}: pre-step {pre.name}")
        if runner is None:
            from optkit.common.workspace import work_dir  # lock-marked, so a killed run's copy gets cleaned

            work = stack.enter_context(work_dir(f"optkit-{self.name}-"))
            result = pre(src, pre_cfg, work / f"{src.path.stem}{pre.output_suffix}")
        else:
            result = runner(pre, src, pre_cfg)
        if result.skipped or result.artifact is None:
            raise PassFailed(f"{self.name}: pre-step {pre.name} made no model: {result.skipped or 'no artifact'}")
        return result.artifact, [f"pre-step {pre.name}: {m}" for m in result.messages]


def _guarded_run(run: Callable[..., PassResult]) -> Callable[..., PassResult]:
    """``pass_.run(src, cfg, Path)`` - the pre-contract way to call a pass - goes through
    ``Pass.__call__``, so code written against the old interface keeps the contract too."""
    import functools

    @functools.wraps(run)
    def guarded(self: Pass, src: Artifact | None, cfg: Any, out: Any) -> PassResult:
        if isinstance(out, PassOutput):
            return run(self, src, cfg, out)
        return self(src, cfg, out)

    guarded._contract_guard = True  # type: ignore[attr-defined]
    return guarded


def build_config(config_cls: type, params: dict[str, Any], where: str) -> Any:
    """Build a config dataclass from a dict, with clear errors for unknown or bad parameters."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise _about(unknown[0], RecipeError(
            f"{where}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"known: {', '.join(sorted(fields)) or 'none'}"
        ))
    hints = typing.get_type_hints(config_cls)
    values = {}
    for name, value in params.items():
        try:
            values[name] = _coerce(value, hints.get(name), f"{where}: parameter {name}")
        except RecipeError as exc:
            raise _about(name, exc) from None
    missing = [
        n for n, f in fields.items()
        if n not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{where}: missing required parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    cfg = config_cls(**values)
    try:
        check_values(cfg)
    except ParameterError as exc:
        raise _about(exc.param, RecipeError(f"{where}: parameter {exc}")) from None
    return cfg


def _about(param: str, exc: RecipeError) -> RecipeError:
    """Tag an error with the parameter it is about (the recipe layer finds its YAML line by it)."""
    exc.param = param  # type: ignore[attr-defined]
    return exc


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
