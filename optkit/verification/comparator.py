"""One comparison of model outputs, used by every check: the passes' self-checks (export,
simplify/fold equivalence, quantize int8/fp16), build-engine's self-check and ``verify``.

Two layers:

- :func:`output_metrics` - how far one output is from its reference (max/mean absolute error,
  max relative error, cosine, SNR, decision agreement at a threshold): what ``verify`` reports
  and gates on.
- :class:`Comparison` - the check a pass runs on its result: outputs matched by name and shape,
  finite, within a per-output :class:`Tolerance`, accumulated over several runs into the
  max |diff| and relative error that the pass reports. Failures raise ``PassFailed`` with one
  line naming the output.

Why not Polygraphy's ``CompareFunc.simple``: it needs its ``RunResults`` wrappers, reports through
Polygraphy's global logger instead of returning one line, and has no decision agreement or SNR;
the arithmetic itself is a few numpy lines.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from optkit.common.errors import PassFailed


def output_metrics(ref: np.ndarray, out: np.ndarray, threshold: float) -> dict[str, Any]:
    """How far ``out`` is from the reference ``ref`` (same shape), element-wise."""
    if ref.shape != out.shape:
        raise ValueError(f"shape {out.shape} differs from the reference {ref.shape}")
    r = ref.astype(np.float64).ravel()
    o = out.astype(np.float64).ravel()
    if not np.isfinite(r).all():
        # A reference with NaN/Inf compares as "equal" under nan-skipping reductions and used to
        # PASS; it is an input error (load_reference refuses it), never a result.
        raise ValueError(f"the reference contains {int((~np.isfinite(r)).sum())} NaN/Inf values")
    finite = bool(np.isfinite(o).all())
    d = np.abs(o - r)
    denom = np.maximum(np.abs(r), 1e-6)
    noise = float(np.sum((o - r) ** 2))
    signal = float(np.sum(r**2))
    if not finite:
        snr = -math.inf
    elif noise == 0.0:
        snr = math.inf
    else:
        snr = 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
    nr, no = float(np.linalg.norm(r)), float(np.linalg.norm(o))
    cosine = float(np.dot(r, o) / (nr * no)) if nr > 0 and no > 0 and finite else (1.0 if nr == no == 0 else 0.0)
    ref_dec = r >= threshold
    out_dec = o >= threshold
    flips = int(np.sum(ref_dec != out_dec))
    return {
        "n": int(r.size),
        "finite": finite,
        # plain max/mean: a NaN in the artifact's output must make the error NaN (which fails
        # every "<=" gate), not disappear as it would with nanmax/nanmean.
        "max_abs": float(np.max(d)) if d.size else 0.0,
        "mean_abs": float(np.mean(d)) if d.size else 0.0,
        "max_rel": float(np.max(d / denom)) if d.size else 0.0,
        "cosine": cosine,
        "snr_db": snr,
        "agreement": 1.0 - flips / max(1, r.size),
        "flipped": flips,
    }


def output_problems(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    """Outputs of ``expected`` that ``actual`` lacks or has in another shape (one line each)."""
    problems = []
    for name, want in expected.items():
        if name not in actual:
            problems.append(f"output {name} missing (artifact outputs: {', '.join(actual)})")
        elif np.shape(actual[name]) != np.shape(want):
            problems.append(f"output {name} shape {np.shape(actual[name])} != reference {np.shape(want)}")
    return problems


def check_finite(outputs: Mapping[str, np.ndarray], what: str, where: str = "", hint: str = "") -> None:
    """PassFailed naming the first floating-point output with inf/NaN."""
    for name, value in outputs.items():
        v = np.asarray(value)
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise PassFailed(f"{what} produces inf/NaN in output {name}{f' {where}' if where else ''}"
                             f"{f'; {hint}' if hint else ''}")


@dataclass(frozen=True)
class Tolerance:
    """|expected - actual| <= atol + rtol * |actual| element-wise (numpy's ``allclose``)."""

    atol: float = math.inf
    rtol: float = 0.0

    def allows(self, expected: np.ndarray, actual: np.ndarray) -> bool:
        return bool(np.allclose(actual, expected, atol=self.atol, rtol=self.rtol, equal_nan=False)) \
            if math.isfinite(self.atol) or self.rtol else True

    def describe(self) -> str:
        return f"{self.atol:g}" + (f" + {self.rtol:g}*|x|" if self.rtol else "")


class Comparison:
    """Outputs of a result vs the outputs it must reproduce, over one or more runs.

    ``what`` names the result in messages ("the simplified model"); ``tolerance`` is one
    Tolerance for every output or a dict by output name (outputs not named are not bounded);
    None checks names, shapes and finiteness only and just measures.
    """

    def __init__(self, what: str, tolerance: Tolerance | Mapping[str, Tolerance] | None = None,
                 require_finite: bool = True, hint: str = "", against: str = "its input"):
        self.what = what
        self.against = against
        self.tolerance = tolerance
        self.require_finite = require_finite
        self.hint = hint
        self.max_abs_diff = 0.0
        self.runs = 0
        self._sq_diff = 0.0
        self._sq_ref = 0.0
        self.per_output: dict[str, float] = {}

    def _tolerance(self, name: str) -> Tolerance | None:
        if isinstance(self.tolerance, Mapping):
            return self.tolerance.get(name)
        return self.tolerance

    def add(self, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], where: str = "") -> None:
        """Compare one run; raise PassFailed on a missing output, another shape, inf/NaN or an
        error beyond the tolerance. ``where`` says which input it was ("on calibration sample 3")."""
        at = f" {where}" if where else ""
        hint = f"; {self.hint}" if self.hint else ""
        for name, want in expected.items():
            if name not in actual:
                raise PassFailed(f"{self.what} lost output {name}")
            got = np.asarray(actual[name])
            if got.shape != np.shape(want):
                raise PassFailed(f"{self.what} changed output {name} shape {np.shape(want)} -> {got.shape}")
            if self.require_finite:
                check_finite({name: got}, self.what, where, self.hint)
            g64, w64 = got.astype(np.float64), np.asarray(want).astype(np.float64)
            d = g64 - w64
            worst = float(np.max(np.abs(d))) if d.size else 0.0
            self.max_abs_diff = max(self.max_abs_diff, worst)
            self.per_output[name] = max(self.per_output.get(name, 0.0), worst)
            self._sq_diff += float(np.sum(d * d))
            self._sq_ref += float(np.sum(w64 * w64))
            tol = self._tolerance(name)
            if tol is not None and not (np.isfinite(worst) and tol.allows(want, got)):
                raise PassFailed(f"{self.what} does not match {self.against}{at}: max |diff| {worst:.3g} "
                                 f"on {name} (tolerance {tol.describe()}){hint}")
        self.runs += 1

    @property
    def rel_error(self) -> float:
        return float(math.sqrt(self._sq_diff) / max(math.sqrt(self._sq_ref), 1e-12))

    def summary(self, **extra: Any) -> dict[str, Any]:
        return {**extra, "max_abs_diff": self.max_abs_diff, "rel_error": self.rel_error,
                "per_output": dict(self.per_output)}
