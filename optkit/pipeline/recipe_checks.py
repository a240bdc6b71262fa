"""Load-time safety checks of a recipe: everything a step writes stays inside the output
directory, no two writers share a file, and the values of ``verify:`` are valid before any step
runs. Kept apart from recipe.py (which parses and runs) so each check is one small function.

Every check raises RecipeError with the recipe file name and, where known, the line.
"""
from __future__ import annotations

import math
import os
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from optkit.common.errors import RecipeError

# Files `optkit run` itself writes into the output directory; no step may write them.
RESERVED_NAMES = {"manifest.json", "report.json", "report.html", ".optkit.lock"}
NAME_MAX = 255
LOCALIZE_CHOICES = ("on-failure", "always", "never")


def check_step_types(raw: dict[str, Any], index: int, where: str, line: Any, key_lines: dict[str, int]) -> None:
    """``pass``, ``name``, ``input`` and ``output`` are strings (``pass: [simplify]`` is a list)."""
    for key in ("pass", "name", "input", "output"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            shown = "a list" if isinstance(value, list) else "a mapping" if isinstance(value, dict) else repr(value)
            raise RecipeError(f"{where} line {key_lines.get(key, line)}: step {index + 1}: '{key}' must be a "
                              f"single name, got {shown}" + (f" (write '{key}: {value[0]}')"
                                                              if isinstance(value, list) and len(value) == 1 else ""))


def check_file_name(value: str, what: str, where: str, line: Any) -> None:
    """A step name or ``output`` must be a plain file name: no directory part, no '..', not
    absolute, not hidden (optkit's temporary files are hidden), within the file-name limit."""
    at = f"{where} line {line}"
    if not value or not value.strip():
        raise RecipeError(f"{at}: {what} is empty")
    if "\x00" in value:
        raise RecipeError(f"{at}: {what} {value!r} contains a NUL character")
    if (os.sep in value or "/" in value or "\\" in value or PurePosixPath(value).is_absolute()
            or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive):
        raise RecipeError(f"{at}: {what} {value!r} must be a plain file name inside the output directory "
                          "(no directories, no absolute path)")
    if value in (".", "..") or value.startswith("."):
        raise RecipeError(f"{at}: {what} {value!r} must not start with '.' (hidden names are optkit's temporary files)")
    if len(os.fsencode(value)) > NAME_MAX - 30:  # room for the suffixes and the temporary-file name
        raise RecipeError(f"{at}: {what} is {len(os.fsencode(value))} bytes long; keep it under {NAME_MAX - 30}")


def step_files(pass_name: str, output: str) -> list[str]:
    """The files a step writes into the output directory: its output and its side files."""
    files = [output]
    if pass_name == "export":
        from optkit.verification.reference import reference_path_for

        files.append(reference_path_for(output).name)
    elif pass_name == "quantize-int8":
        from optkit.quantization.calibration import cache_path_for

        files.append(cache_path_for(output).name)
    elif pass_name == "build-engine":
        from optkit.runtime.engine_meta import sidecar_path

        files.append(sidecar_path(output).name)
    return files


def check_step_outputs(steps: list[Any], where: str) -> None:
    """No step writes a reserved file, and no two steps (or a step and its input) write one file."""
    from optkit.passes import get_pass

    owner: dict[str, Any] = {}
    main_output: dict[str, str] = {}
    for step in steps:
        out = step.output or f"{step.name}{get_pass(step.pass_name).output_suffix}"
        if step.output is None:
            check_file_name(step.name, "step name", where, step.line or "?")
        else:
            check_file_name(step.output, "output", where, step.line or "?")
        for f in step_files(step.pass_name, out):
            if f.lower() in RESERVED_NAMES:
                raise RecipeError(f"{where} line {step.line or '?'}: step {step.name} would write {f}, which "
                                  "`optkit run` writes itself; choose another output name")
            other = owner.get(f)
            if other is not None:
                rel = ("its own input" if step.input == other.name and main_output.get(other.name) == f
                       else f"the file of step {other.name}")
                raise RecipeError(f"{where} line {step.line or '?'}: step {step.name} would write {f}, "
                                  f"{rel}; give it another output name")
            owner[f] = step
        if step.output is not None:
            check_output_kind(step, where)  # after the checks above, whose messages say more
        main_output[step.name] = out


def output_kinds(pass_name: str) -> tuple[str, ...]:
    """The name endings a pass's output may have: what optkit later reads it as."""
    from optkit.model.artifact import ENGINE_SUFFIXES
    from optkit.passes import get_pass

    return tuple(ENGINE_SUFFIXES) if get_pass(pass_name).kind == "engine" else (".onnx",)


def check_output_kind(step: Any, where: str) -> None:
    """``output: model.npz`` fails at load time, not when verify cannot read it after every step ran."""
    kinds = output_kinds(step.pass_name)
    if not step.output.lower().endswith(kinds):
        raise RecipeError(f"{where} line {step.line or '?'}: step {step.name}: output {step.output!r} must end "
                          f"with {' or '.join(kinds)} (a {step.pass_name} step writes "
                          f"{'an engine' if kinds[0] != '.onnx' else 'an ONNX model'})")


def recipe_inputs(recipe: Any) -> list[Any]:
    """Every file a recipe reads: the recipe itself, the model's .py file, and every path parameter of
    every step that is not an output (weights, reference data, calibration data, references), and
    verify.baseline (a report.json or the directory holding one)."""
    from pathlib import Path

    from optkit.common.fileio import Input
    from optkit.passes import get_pass
    from optkit.passes.config import output_params, path_params

    inputs = [Input("recipe", Path(recipe.path))]
    file, _, attr = recipe.model.rpartition(":")
    if attr and file.endswith(".py"):
        inputs.append(Input("model", Path(file)))
    for step in recipe.steps:
        cls = get_pass(step.pass_name).config_cls
        for key in sorted(path_params(cls) - output_params(cls)):
            if isinstance(step.params.get(key), str) and step.params[key]:
                inputs.append(Input(f"step {step.name}: {key}", Path(step.params[key])))
    baseline = (recipe.verify or {}).get("baseline")
    if isinstance(baseline, str) and baseline:
        inputs.append(Input("verify.baseline", Path(baseline)))
        if Path(baseline).is_dir():
            inputs.append(Input("verify.baseline", Path(baseline) / "report.json"))
    return inputs


def check_recipe_files(recipe: Any, out_dir: Any) -> None:
    """Before any step runs: no file a step writes into ``out_dir`` (nor an output path parameter such
    as a timing cache) is a file the recipe reads - its data, its weights, the recipe itself."""
    from pathlib import Path

    from optkit.common.fileio import Output, check_io
    from optkit.passes import get_pass
    from optkit.passes.config import output_params

    outputs = [Output(f"{n} of `optkit run`", Path(out_dir) / n) for n in ("manifest.json", "report.json",
                                                                          "report.html")]
    for step in recipe.steps:
        p = get_pass(step.pass_name)
        out = step.output or f"{step.name}{p.output_suffix}"
        outputs += [Output(f"step {step.name}: output", Path(out_dir) / f) for f in step_files(step.pass_name, out)]
        for key in sorted(output_params(p.config_cls)):
            if isinstance(step.params.get(key), str) and step.params[key]:
                outputs.append(Output(f"step {step.name}: {key}", Path(step.params[key])))
    try:
        check_io(outputs, recipe_inputs(recipe))
    except Exception as exc:  # InputError -> a recipe error naming the recipe
        from optkit.common.errors import InputError

        if not isinstance(exc, InputError):
            raise
        raise RecipeError(f"{Path(recipe.path).name}: {exc}") from None


def check_verify_values(verify: dict[str, Any], where: str, key_lines: dict[str, int]) -> None:
    """The values of ``verify:``, checked at load time (they used to fail after every step ran)."""
    def at(key: str) -> str:
        return f"{where} line {key_lines.get(key, '?')}: verify.{key}"

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if "threshold" in verify:
        v = verify["threshold"]
        if not number(v) or not math.isfinite(v):
            raise RecipeError(f"{at('threshold')}: expected a finite number, got {v!r}")
    for key in ("batch_size", "threads"):
        if key in verify:
            v = verify[key]
            if v is None and key == "threads":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise RecipeError(f"{at(key)}: expected a whole number >= 1, got {v!r}")
    if "localize" in verify and verify["localize"] not in LOCALIZE_CHOICES:
        raise RecipeError(f"{at('localize')}: expected one of {', '.join(LOCALIZE_CHOICES)}, got {verify['localize']!r}")
    if "enabled" in verify and not isinstance(verify["enabled"], bool):
        raise RecipeError(f"{at('enabled')}: expected true or false, got {verify['enabled']!r}")
    if "artifacts" in verify:
        v = verify["artifacts"]
        if v is not None and (not isinstance(v, list) or not all(isinstance(a, str) for a in v)):
            raise RecipeError(f"{at('artifacts')}: expected a list of step names, got {v!r}")


def duplicate_key_error(yaml: Any, node: Any) -> Any:
    """A yaml ConstructorError for the first key that appears twice in a mapping node (YAML's
    safe loader silently keeps the last one: two ``model:`` lines would build another model)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = getattr(key_node, "value", None)
        if not isinstance(key, str):
            continue
        if key in seen:
            return yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return None


def check_manifest_owner(manifest: Any, recipe_name: str, out_dir: Any) -> None:
    """Refuse to run recipe B into a directory holding recipe A's artifacts: B would replace
    files A's manifest entries describe, silently."""
    if manifest.recipe is not None and manifest.recipe != recipe_name:
        raise RecipeError(f"output directory {out_dir} holds the artifacts of recipe {manifest.recipe!r}, not "
                          f"{recipe_name!r}; choose another -o (or delete that directory)")

