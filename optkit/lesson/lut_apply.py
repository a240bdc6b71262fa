"""``optkit lut --apply``: rewrite a model's activations as table lookups and verify it.

The reference is the *original* ONNX model run by ONNX Runtime (CPU) on the reference inputs (a
``.reference.npz``'s inputs, or seeded random ones), so the report measures exactly what the
table changed; the rewritten model is then verified on each runtime asked for with
:func:`optkit.verification.verify.verify_artifacts`, the same metrics, gates and report as ``optkit verify``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from optkit.common.errors import InputError, PassFailed, first_line
from optkit.lesson.lut import LutSpec, apply_to_model

# A table lookup is approximate fp32 arithmetic: the default gate allows what the lesson's
# target table (sigmoid, [-8, 8], delta 1/16, linear: max error 4.7e-5 per activation) leaves
# after a few layers, and no flipped decisions beyond 0.1 %.
LUT_GATE = {"fp32": {"max_abs": 1e-3, "min_agreement": 0.999}}


def _reference_inputs(model: Any, reference_path: str | None, samples: int) -> tuple[dict[str, np.ndarray], Any]:
    from optkit.model.onnx_utils import io_specs

    inputs_spec, _ = io_specs(model)
    if reference_path:
        from optkit.verification.reference import load_reference

        ref = load_reference(reference_path)
        missing = [s.name for s in inputs_spec if s.name not in ref.inputs]
        if missing:
            raise InputError(f"{reference_path} has no input {missing[0]!r} (it has {', '.join(ref.inputs)})")
        return {s.name: ref.inputs[s.name] for s in inputs_spec}, ref.labels
    from optkit.model.feeds import random_feed

    for s in inputs_spec:
        if not s.dtype.startswith("float"):
            raise InputError(f"input {s.name} is {s.dtype}; give --reference with real inputs")
    shapes = {s.name: (samples, *s.concrete_shape(1)[1:]) for s in inputs_spec}
    return random_feed(inputs_spec, seed=0, shapes=shapes), None


def apply_and_verify(spec: LutSpec, table: np.ndarray, model_path: str | Path, out: str | Path, *,
                     reference_path: str | None = None, samples: int = 256, providers: Sequence[str] = ("cpu",),
                     gate_opts: Sequence[str] = (), threshold: float = 0.5, report_dir: str | None = None,
                     echo: Callable[[str], None] = lambda s: None) -> Any:
    from optkit.common.fileio import check_output_path, same_file
    from optkit.common.lazy import lazy_import
    from optkit.model.onnx_utils import check_model, load_onnx, save_onnx_atomically
    from optkit.verification.reference import Reference
    from optkit.release.report import format_table, write_reports
    from optkit.runtime.registry import PROVIDERS
    from optkit.runtime.onnxruntime import OnnxRuntimeRunner
    from optkit.verification.verify import merge_gates, parse_gate_option, run_artifact, verify_on_providers

    model_path, out = Path(model_path), check_output_path(out)
    if same_file(out, model_path):
        raise InputError("the output must differ from the input model (artifacts are immutable)")
    bad = [p for p in providers if p not in PROVIDERS]
    if bad or not providers:
        raise InputError(f"unknown provider {bad[0] if bad else '(none)'!r}; use {', '.join(PROVIDERS)}")
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in LUT_GATE.items()}
    for prec, limits in parse_gate_option(gate_opts).items():
        overrides.setdefault(prec, {}).update(limits)
    gates = merge_gates(overrides, where="--gate")
    if report_dir:
        rd = Path(report_dir)
        if rd.exists() and not rd.is_dir():
            raise InputError(f"report directory {rd} is a file")

    model = load_onnx(model_path)
    rewritten, count = apply_to_model(model, spec, table)
    check_model(rewritten, full=True, what="model with table lookups")
    feeds, labels = _reference_inputs(model, reference_path, samples)
    with OnnxRuntimeRunner(model_path, label=model_path.name) as runner:
        ref_outputs = run_artifact(runner, Reference(feeds, {}), 64)
    ort = lazy_import("onnxruntime")
    try:  # the rewritten model must run before it is written
        sess = ort.InferenceSession(rewritten.SerializeToString(), providers=["CPUExecutionProvider"])
        sess.run(None, {k: v[:1] for k, v in feeds.items()})
    except Exception as exc:
        raise PassFailed(f"ONNX Runtime cannot run the rewritten model: {type(exc).__name__}: {first_line(exc)}") from exc
    save_onnx_atomically(rewritten, out)
    echo(f"replaced {count} {spec.activation} activation(s) of {model_path.name} by table lookups -> {out}")
    reference = Reference(feeds, ref_outputs, labels,
                          meta={"model": str(model_path), "outputs": "the original model on ONNX Runtime (cpu)",
                                "inputs": reference_path or f"{len(next(iter(feeds.values())))} seeded N(0, 1) samples"})
    report = verify_on_providers([out], reference, providers,
                                 reference_path=f"{model_path.name} on ONNX Runtime (cpu)",
                                 threshold=threshold, gates=gates, localize="never")
    echo(f"reference: {model_path.name}'s own outputs (ONNX Runtime, cpu) on {reference.meta['inputs']}"
         + ("; the 'PyTorch reference' task line below is for those outputs" if labels is not None else ""))
    echo(format_table(report))
    if report_dir:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        j, h = write_reports(report, report_dir)
        echo(f"wrote {j} and {h}")
    return report
