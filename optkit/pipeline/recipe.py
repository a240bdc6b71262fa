"""YAML recipes and their execution: passes chained into an output directory, with a cache.

A recipe::

    name: voice_verification
    model: voice-resnet                 # zoo name, pkg.module:callable or path/file.py:callable
    reference_data: ../calibration_data/val.npz
    steps:
      - pass: export                    # step name defaults to the pass name
        params: {opset: 17}
      - pass: simplify
      - name: int8
        pass: quantize-int8
        input: simplify                 # default: the previous step
        params: {calibration: ../calibration_data/calib}
    verify:
      threshold: 0.5
      gates: {int8: {min_agreement: 0.995}}

Relative paths (the model file, data, calibration and cache parameters) are relative to the
recipe file. A step is re-run only when its cache key changes: the hash of the pass name, its
config, its parent's sha256, the fingerprint of external inputs (model sources, data) and tool
versions; everything downstream of a re-run step sees a new parent and re-runs too.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from optkit.pipeline import recipe_checks
from optkit.model.artifact import Artifact, Manifest
from optkit.common.versions import tool_versions
from optkit.common.defaults import BATCH_SIZE, DECISION_THRESHOLD
from optkit.common.errors import InputError, OptkitError, RecipeError
from optkit.common.fileio import require_file
from optkit.common.lazy import lazy_import
from optkit.passes import REGISTRY, get_pass
from optkit.passes.config import path_params
from optkit.common.errors import ParameterError
from optkit.passes.base import config_to_dict

# Parameters holding paths; relative values are resolved against the recipe's directory.
TOP_KEYS = {"name", "description", "model", "weights", "reference_data", "steps", "verify", "ray"}
RAY_KEYS = {"address", "workers", "shards"}
STEP_KEYS = {"name", "pass", "input", "params", "output"}
VERIFY_KEYS = {"provider", "threshold", "gates", "artifacts", "localize", "batch_size", "threads", "enabled",
               "bench", "baseline", "max_regression", "outputs"}
DEFAULT_RECIPE = "voice_verification.yaml"
# verification results by key (verify.verification_key), inside the output directory
VERIFY_CACHE = ".optkit-cache/verify"


class _Loc(dict):
    """A mapping that remembers the line of each key (1-based) and its own line."""

    line: int = 0
    key_lines: dict[str, int]


def _loader():  # noqa: ANN202
    yaml = lazy_import("yaml")

    class LineLoader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):  # noqa: ANN001, ANN202
        dup = recipe_checks.duplicate_key_error(yaml, node)
        if dup is not None:
            raise dup
        mapping = _Loc(loader.construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if hasattr(k, "value")}
        return mapping

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return yaml, LineLoader


@dataclass
class Step:
    name: str
    pass_name: str
    params: dict[str, Any]
    input: str | None
    line: int
    output: str | None = None


@dataclass
class Recipe:
    path: Path
    name: str
    model: str
    steps: list[Step]
    verify: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    reference_data: str | None = None
    # ``ray:`` in the recipe: {"address", "workers", "shards"}; None = verify in this process
    ray: dict[str, Any] | None = None


def default_recipe_path() -> Path:
    """The default recipe: recipes/voice_verification.yaml of the source tree (the current
    directory's or the one this package sits in) on the full data; otherwise the copy that ships
    inside the package, ``optkit/demo/``, on a demo subset of the same real data (made by
    calibration_data/make_demo.py), so an installed optkit runs the demo from any directory."""
    package = Path(__file__).resolve().parents[1]  # optkit/ (this module is optkit/pipeline/recipe.py)
    candidates = [Path.cwd() / "recipes" / DEFAULT_RECIPE,
                  package.parent / "recipes" / DEFAULT_RECIPE,
                  package / "demo" / DEFAULT_RECIPE]
    for c in candidates:
        if c.exists():
            return c
    raise InputError(
        f"default recipe {DEFAULT_RECIPE} not found in ./recipes/ or in the installed package; "
        "give a RECIPE path")


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str((base / value).resolve())
    return value


def _reject_unknown_keys(mapping: dict, known: set[str], what: str, where: str,
                         key_lines: dict[str, int], default_line: Any) -> None:
    """RecipeError naming the line of the first key of ``mapping`` that is not in ``known``."""
    unknown = sorted(set(mapping) - known)
    if unknown:
        k = unknown[0]
        raise RecipeError(f"{where} line {key_lines.get(k, default_line)}: unknown {what} {k!r}; "
                          f"known: {', '.join(sorted(known))}")


def load_recipe(path: str | Path) -> Recipe:
    path = require_file(path, "recipe")
    yaml, loader = _loader()
    where = path.name
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{where}{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{where}: not a text file") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a mapping with 'model' and 'steps'")
    lines = getattr(data, "key_lines", {})
    _reject_unknown_keys(data, TOP_KEYS, "key", where, lines, "?")
    base = path.parent
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise RecipeError(f"{where}: 'model' is missing (a zoo name, pkg.module:callable or path/file.py:callable)")
    from optkit import zoo

    if model not in zoo.names() and ".py:" in model:
        model = _resolve(base, model.rsplit(":", 1)[0]) + ":" + model.rsplit(":", 1)[1]
    steps_raw = data.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise RecipeError(f"{where} line {lines.get('steps', '?')}: 'steps' must be a non-empty list of passes")
    steps: list[Step] = []
    seen: set[str] = set()
    for i, raw in enumerate(steps_raw):
        line = getattr(raw, "line", "?")
        if not isinstance(raw, dict):
            raise RecipeError(f"{where}: step {i + 1} must be a mapping with a 'pass' key")
        klines = getattr(raw, "key_lines", {})
        _reject_unknown_keys(raw, STEP_KEYS, "step key", where, klines, line)
        recipe_checks.check_step_types(raw, i, where, line, klines)
        pass_name = raw.get("pass")
        if not pass_name:
            raise RecipeError(f"{where} line {line}: step {i + 1} has no 'pass'")
        if pass_name not in REGISTRY:
            raise RecipeError(f"{where} line {klines.get('pass', line)}: unknown pass {pass_name!r}; known: {', '.join(REGISTRY)}")
        name = str(raw.get("name") or pass_name)
        if name in seen:
            raise RecipeError(f"{where} line {line}: duplicate step name {name!r}; give the step a 'name'")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise RecipeError(f"{where} line {klines.get('params', line)}: 'params' must be a mapping")
        plines = getattr(params, "key_lines", {})
        p = get_pass(pass_name)
        paths = path_params(p.config_cls)  # declared with the option (optkit.passes.config)
        params = {k: (_resolve(base, v) if k in paths else v) for k, v in params.items()}
        if pass_name == "export":
            params.setdefault("model", model)
            if data.get("weights"):
                params.setdefault("weights", _resolve(base, data["weights"]))
            if data.get("reference_data"):
                params.setdefault("reference_data", _resolve(base, data["reference_data"]))
        inp = raw.get("input")
        if i == 0 and pass_name != "export":
            raise RecipeError(f"{where} line {line}: the first step must be 'export'")
        if inp is None and i > 0:
            inp = steps[-1].name
        if inp is not None and inp not in seen:
            raise RecipeError(f"{where} line {klines.get('input', line)}: input {inp!r} is not an earlier step")
        if pass_name == "export" and i > 0:
            raise RecipeError(f"{where} line {line}: 'export' can only be the first step")
        # Validate the params now, so a typo fails before any work is done.
        try:
            p.make_config(params, where=f"step {name}")
        except RecipeError as exc:
            at = plines.get(getattr(exc, "param", None), klines.get("params", line))
            raise RecipeError(f"{where} line {at}: {exc}") from None
        steps.append(Step(name, pass_name, params, inp, line if isinstance(line, int) else 0, raw.get("output")))
        seen.add(name)
    verify = data.get("verify") or {}
    if not isinstance(verify, dict):
        raise RecipeError(f"{where} line {lines.get('verify', '?')}: 'verify' must be a mapping")
    vlines = getattr(verify, "key_lines", {})
    _reject_unknown_keys(verify, VERIFY_KEYS, "verify key", where, vlines, "?")
    recipe_checks.check_verify_values(verify, where, vlines)
    recipe_checks.check_step_outputs(steps, where)
    if "outputs" in verify:
        try:
            output_settings(verify)
        except RecipeError as exc:
            raise RecipeError(f"{where} line {vlines.get('outputs', '?')}: {exc}") from None
    if "gates" in verify:
        from optkit.verification.verify import merge_gates

        try:
            merge_gates(verify["gates"], where="verify.gates")
        except RecipeError as exc:
            raise RecipeError(f"{where} line {vlines.get('gates', '?')}: {exc}") from None
    try:
        verify_providers(verify)
    except RecipeError as exc:
        raise RecipeError(f"{where} line {vlines.get('provider', '?')}: {exc}") from None
    for a in verify.get("artifacts") or []:
        if a not in seen:
            raise RecipeError(f"{where} line {vlines.get('artifacts', '?')}: verify artifact {a!r} is not a step")
    _check_release_keys(verify, vlines, where, base)
    ray = parse_ray_setting(data.get("ray"), f"{where} line {lines.get('ray', '?')}")
    return Recipe(path, str(data.get("name") or path.stem), model, steps, dict(verify), ray=ray)


def _check_release_keys(verify: dict[str, Any], vlines: dict[str, int], where: str, base: Path) -> None:
    """verify.bench / baseline / max_regression: validated now, the baseline path made absolute."""
    from optkit.release.regression import make_limits
    from optkit.release.view import bench_config

    for key, check in (("bench", lambda v: bench_config(v, where="verify.bench")),
                       ("max_regression", lambda v: make_limits(v, where="verify.max_regression"))):
        if key in verify:
            try:
                check(verify[key])
            except OptkitError as exc:
                raise RecipeError(f"{where} line {vlines.get(key, '?')}: {exc}") from None
    if verify.get("baseline") is not None:
        if not isinstance(verify["baseline"], str):
            raise RecipeError(f"{where} line {vlines.get('baseline', '?')}: verify.baseline must be a path to a "
                              "previous report.json or output directory")
        verify["baseline"] = _resolve(base, verify["baseline"])


def cache_key(pass_name: str, config: dict[str, Any], parent_sha: str | None, fingerprint: str,
              output: str | None = None) -> str:
    payload = {
        "pass": pass_name, "config": config, "parent": parent_sha, "fingerprint": fingerprint, "output": output,
        "tools": tool_versions("torch", "onnx", "onnxruntime", "onnxsim", "onnxscript", "onnxconverter-common",
                               "openvino", "tensorrt"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StepOutcome:
    step: str
    pass_name: str
    status: str  # "ran", "cached", "skipped"
    artifact: Artifact | None
    seconds: float
    messages: list[str]
    reason: str | None = None


@dataclass
class RunOutcome:
    recipe: Recipe
    out_dir: Path
    steps: list[StepOutcome]
    report: Any = None  # VerifyReport
    report_paths: tuple[Path, Path] | None = None


class _StepCache:
    """Runs a pass as a cached step of ``out_dir``: an unchanged cache key, an intact artifact and
    intact side files (sha256 of each re-checked) reuse the recorded result."""

    def __init__(self, out_dir: Path, manifest: Manifest, force: bool, echo: Callable[[str], None]):
        self.out_dir, self.manifest, self.force, self.echo = out_dir, manifest, force, echo

    def run(self, step_name: str, p: Any, cfg: Any, parent: Artifact | None, out_path: Path,
            pre_steps: bool = True) -> StepOutcome:
        key = cache_key(p.name, config_to_dict(cfg), parent.sha256 if parent else None, p.fingerprint(cfg),
                        output=out_path.name)
        cached = None if self.force else self.manifest.get(step_name)
        entry = self.manifest.entries.get(step_name, {})
        if (cached is not None and entry.get("cache_key") == key and _sha_matches(cached)
                and _side_files_intact(self.out_dir, entry.get("side_files"))):
            self.echo(f"[{step_name}] cached: {cached.path.name} (inputs and parameters unchanged)")
            return StepOutcome(step_name, p.name, "cached", cached, 0.0, [])
        self.echo(f"[{step_name}] running {p.name} -> {out_path.name}")
        t0 = time.perf_counter()
        try:
            result = p(parent, cfg, out_path, pre_step=self.pre_step_runner(step_name, out_path))
        except ParameterError as exc:  # name the parameter the way the recipe spells it
            raise InputError(f"step {step_name} ({p.name}): {exc.spelled('params.' + exc.param)}") from exc
        except OptkitError as exc:
            raise type(exc)(f"step {step_name} ({p.name}): {exc}") from exc
        seconds = time.perf_counter() - t0
        for m in result.messages:
            self.echo(f"[{step_name}]   {m}")
        if result.skipped:
            self.echo(f"[{step_name}] SKIPPED: {result.skipped}")
            self.manifest.entries[step_name] = {"status": "skipped", "reason": result.skipped, "pass": p.name}
            self.manifest.save()
            return StepOutcome(step_name, p.name, "skipped", None, seconds, result.messages, result.skipped)
        art = result.artifact
        assert art is not None
        self.manifest.record(step_name, art, key, status="ran", seconds=round(seconds, 3), info=result.info,
                             side_files=[_side_file_entry(self.out_dir, f) for f in result.side_files])
        self.manifest.save()
        return StepOutcome(step_name, p.name, "ran", art, seconds, result.messages)

    def pre_step_runner(self, step_name: str, out_path: Path) -> Callable[..., Any]:
        """A pass's pre-step (build-engine's fp16/int8 model) as its own cached step
        ``<step>.<pass>``, written beside the step's output."""
        from optkit.passes.base import PassResult

        def run(pre: Any, src: Artifact, cfg: Any) -> PassResult:
            stem = out_path.name[: -len("".join(out_path.suffixes))] if out_path.suffixes else out_path.name
            done = self.run(f"{step_name}.{pre.name}", pre, cfg, src,
                            out_path.with_name(f"{stem}.{pre.name}{pre.output_suffix}"))
            return PassResult(done.artifact, done.messages, skipped=done.reason if done.status == "skipped" else None)

        return run


def output_settings(verify: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """``verify.outputs``: ({name: kind}, {name: {precision: Gate}}) - each output's kind and its own
    gate (the recipe's gates with that output's limits on top)."""
    from optkit.verification.output_kinds import parse_output_settings
    from optkit.verification.verify import output_gates

    kinds, per_output = parse_output_settings(verify.get("outputs"), "verify.outputs")
    return kinds, output_gates(per_output, verify.get("gates") or {}, "verify.outputs.{name}.gates")


def _with_verify_gate(pass_name: str, params: dict[str, Any], verify: dict[str, Any]) -> dict[str, Any]:
    """quantize-int8 searches until the int8 gate passes: by default the gate this recipe's
    verify applies (its ``gates.int8``, ``threshold`` and ``outputs``: kinds and int8 limits),
    unless the step sets its own."""
    if pass_name != "quantize-int8":
        return params
    params = dict(params)
    gates = (verify.get("gates") or {}).get("int8")
    if "gates" not in params and isinstance(gates, dict) and gates:
        params["gates"] = dict(gates)
    if "threshold" not in params and verify.get("threshold") is not None:
        params["threshold"] = verify["threshold"]
    # every trial is judged on each runtime the release verifies the int8 model on
    providers = verify.get("provider")
    if "validate_on" not in params and providers:
        names = [providers] if isinstance(providers, str) else list(providers)
        onnx_runtimes = [p for p in names if p != "tensorrt"]  # ORT's TensorRT EP is not a trial judge here
        if onnx_runtimes:
            params["validate_on"] = onnx_runtimes
    if "outputs" not in params and verify.get("outputs"):
        outputs = {}
        for name, spec in verify["outputs"].items():
            item = {"kind": spec["kind"]} if spec.get("kind") else {}
            int8 = (spec.get("gates") or {}).get("int8")
            if int8:
                item["gates"] = {"int8": dict(int8)}
            outputs[name] = item
        params["outputs"] = outputs
    return params


def run_recipe(recipe: Recipe, out_dir: str | Path, *, force: bool = False,
               echo: Callable[[str], None] = lambda s: None, verify: bool = True,
               ray: dict[str, Any] | None = None, baseline: str | Path | None = None,
               wait: bool = False) -> RunOutcome:
    """Run ``recipe`` into ``out_dir`` holding an exclusive lock on it (``wait``: block until a
    concurrent run is done instead of failing), after removing what a killed run left behind;
    ``ray`` ({"address", "workers", "shards"}) overrides the recipe's own ``ray:`` setting for
    verification, ``baseline`` (a previous report.json or output directory) the recipe's
    ``verify: baseline:``."""
    from optkit.common.fileio import ensure_output_dir
    from optkit.common.workspace import clean_partial_files, clean_stale_work_dirs, output_lock

    recipe_checks.check_recipe_files(recipe, out_dir)  # before anything is created or run
    out_dir = ensure_output_dir(out_dir)
    with output_lock(out_dir, wait=wait):
        for p in clean_partial_files(out_dir):
            echo(f"removed {p.name} (a partial file left by a run that was killed)")
        for p in clean_stale_work_dirs():
            echo(f"removed {p} (a work directory left by an optkit process that was killed)")
        recipe_checks.check_manifest_owner(Manifest.load(out_dir / "manifest.json"), recipe.name, out_dir)
        from optkit.pipeline.distributed import executor_for

        # One Ray session (when asked for) serves the int8 steps' calibration and the verification.
        from optkit.quantization.executor import calibration_on
        ray = ray or recipe.ray or {}
        with executor_for(ray.get("address"), ray.get("workers"), ray.get("shards"), echo=echo) as executor, \
                calibration_on(executor):
            return _run_steps(recipe, out_dir, force=force, echo=echo, verify=verify, executor=executor,
                              baseline=baseline)


def _run_steps(recipe: Recipe, out_dir: Path, *, force: bool, echo: Callable[[str], None],
               verify: bool, executor: Any, baseline: str | Path | None) -> RunOutcome:
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output directory {out_dir} is a file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from exc
    manifest = Manifest.load(out_dir / "manifest.json")
    manifest.recipe = recipe.name
    steps = _StepCache(out_dir, manifest, force, echo)
    produced: dict[str, Artifact | None] = {}
    outcomes: list[StepOutcome] = []
    for step in recipe.steps:
        p = get_pass(step.pass_name)
        cfg = p.make_config(_with_verify_gate(step.pass_name, step.params, recipe.verify), where=f"step {step.name}")
        parent = produced.get(step.input) if step.input else None
        if step.input and parent is None:
            reason = f"its input step {step.input!r} was skipped"
            echo(f"[{step.name}] skipped: {reason}")
            outcomes.append(StepOutcome(step.name, step.pass_name, "skipped", None, 0.0, [], reason))
            produced[step.name] = None
            manifest.entries[step.name] = {"status": "skipped", "reason": reason, "pass": step.pass_name}
            continue
        out_path = out_dir / (step.output or f"{step.name}{p.output_suffix}")
        done = steps.run(step.name, p, cfg, parent, out_path)
        outcomes.append(done)
        produced[step.name] = done.artifact
    outcome = RunOutcome(recipe, out_dir, outcomes)
    if verify and recipe.verify.get("enabled", True):
        outcome.report, outcome.report_paths = _verify(recipe, out_dir, produced, outcomes, echo, executor, baseline)
    manifest.save()
    return outcome


def parse_ray_setting(raw: Any, where: str) -> dict[str, Any] | None:
    """``ray: true`` (a local Ray instance), ``ray: ADDRESS`` or ``ray: {address, workers, shards}``."""
    if raw is None or raw is False:
        return None
    if raw is True:
        return {"address": "local"}
    if isinstance(raw, str) and raw.strip():
        return {"address": raw.strip()}
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - RAY_KEYS)
        if unknown:
            raise RecipeError(f"{where}: unknown ray key {unknown[0]!r}; known: {', '.join(sorted(RAY_KEYS))}")
        for k in ("workers", "shards"):
            v = raw.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise RecipeError(f"{where}: ray.{k} must be a whole number >= 1, got {v!r}")
        address = raw.get("address", "local")
        if not isinstance(address, str) or not address.strip():
            raise RecipeError(f"{where}: ray.address must be 'local', 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
        return {"address": address.strip(), "workers": raw.get("workers"), "shards": raw.get("shards")}
    raise RecipeError(f"{where}: 'ray' must be true, an address, or a mapping with address/workers/shards")


def _side_file_entry(out_dir: Path, path: Path) -> dict[str, str]:
    from optkit.common.fileio import sha256_file

    path = Path(path)
    shown = str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path)
    return {"path": shown, "sha256": sha256_file(path)}


def _side_files_intact(out_dir: Path, entries: Any) -> bool:
    """Every side file recorded with a step still has its recorded sha256 (an entry without one,
    from an older manifest, counts as changed: the step runs again)."""
    from optkit.common.fileio import sha256_file

    for e in entries or []:
        if not isinstance(e, dict) or "sha256" not in e:
            return False
        path = out_dir / e["path"]
        try:
            if sha256_file(path) != e["sha256"]:
                return False
        except OSError:
            return False
    return True


def verify_providers(verify: dict[str, Any]) -> list[str]:
    """``verify.provider``: one runtime name or a list; every ONNX artifact is verified on each."""
    raw = verify.get("provider", "cpu")
    providers = [raw] if isinstance(raw, str) else raw
    if not isinstance(providers, list) or not providers or not all(isinstance(p, str) for p in providers):
        raise RecipeError(f"verify.provider: expected a runtime name or a list of them, got {raw!r}")
    from optkit.runtime.registry import PROVIDERS

    bad = [p for p in providers if p not in PROVIDERS]
    if bad:
        raise RecipeError(f"verify.provider: unknown runtime {bad[0]!r}; use {', '.join(PROVIDERS)}")
    return providers


def _sha_matches(art: Artifact) -> bool:
    from optkit.model.artifact import artifact_sha256
    from optkit.common.errors import OptkitError

    try:
        return artifact_sha256(art.path) == art.sha256  # the manifest's identity: weights files included
    except (OSError, OptkitError):
        return False


def _verify(recipe: Recipe, out_dir: Path, produced: dict[str, Artifact | None], outcomes: list[StepOutcome],
            echo: Callable[[str], None], executor: Any, baseline: str | Path | None = None):  # noqa: ANN202
    """Verify the recipe's artifacts (``executor``: None = this process, or a RayExecutor)."""
    from optkit.verification.reference import load_reference, reference_path_for
    from optkit.release.regression import make_limits, prepare_baseline
    from optkit.release.view import bench_config, release_view
    from optkit.release.report import write_reports
    from optkit.verification.verify import merge_gates, verify_on_providers

    v = recipe.verify
    export = produced.get(recipe.steps[0].name)
    if export is None:
        raise InputError("nothing to verify: the export step produced no model")
    ref_path = reference_path_for(export.path)
    reference = load_reference(ref_path)
    baseline = baseline or v.get("baseline")
    base = prepare_baseline(baseline, reference) if baseline else None
    names = v.get("artifacts") or [s.name for s in recipe.steps]
    arts = [(n, produced.get(n)) for n in names]
    todo = [a for n, a in arts if a is not None and a.kind in ("onnx", "engine")]
    # The fp32 parent chain gives the model to localise int8 error against.
    fp32 = next((a.path for a in todo if a.precision == "fp32" and a.kind == "onnx"), None)
    from optkit.verification.output_kinds import check_output_names, detect_kinds

    kind_overrides, output_gates = output_settings(v)
    kinds = detect_kinds(reference.outputs, fp32, kind_overrides, where="verify.outputs")
    threshold = float(v.get("threshold", DECISION_THRESHOLD))
    for k in kinds.values():
        echo(f"[verify] {k.line(threshold, reference.labels is not None)}")
    check_output_names(output_gates, list(reference.outputs), "verify.outputs.{name}")
    report = verify_on_providers(
        todo, reference, verify_providers(v), reference_path=str(ref_path),
        threshold=threshold, gates=merge_gates(v.get("gates")), output_kinds=kinds, output_gates=output_gates,
        batch_size=int(v.get("batch_size", BATCH_SIZE)), threads=v.get("threads"),
        localize=v.get("localize", "on-failure"), fp32_model=fp32,
        progress=lambda p, m: echo(f"[verify:{p}] {m}"), cache_dir=out_dir / VERIFY_CACHE, executor=executor,
    )
    report.skipped = [{"step": o.step, "pass": o.pass_name, "reason": o.reason} for o in outcomes if o.status == "skipped"]
    release_view(report, reference, bench=bench_config(v.get("bench"), where="verify.bench"), threads=v.get("threads"),
                 baseline=base, limits=make_limits(v.get("max_regression"), where="verify.max_regression"),
                 progress=lambda m: echo(f"[release] {m}"))
    paths = write_reports(report, out_dir)
    return report, paths
