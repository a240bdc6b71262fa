"""Check that a transformed ONNX model computes what its input model computed (ORT, CPU)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from optkit.errors import PassFailed
from optkit.runners.onnxruntime import OnnxRuntimeRunner


def random_feed(runner: OnnxRuntimeRunner, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in runner.inputs:
        shape = spec.concrete_shape(batch)
        if np.issubdtype(np.dtype(spec.dtype), np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, 4, size=shape).astype(spec.dtype)
    return feed


def assert_equivalent(before: Path, after: Path, runs: int = 2, batch: int = 2,
                      atol: float = 1e-4, rtol: float = 1e-3, what: str = "result",
                      label: str | None = None) -> float:
    """Run both models on ``runs`` seeded random batches; raise PassFailed if they differ.

    Returns the largest absolute difference seen.
    """
    worst = 0.0
    with OnnxRuntimeRunner(before) as ref, OnnxRuntimeRunner(after, label=label) as new:
        if [s.name for s in ref.inputs] != [s.name for s in new.inputs]:
            raise PassFailed(f"the {what} changed the model inputs")
        for i in range(runs):
            feed = random_feed(ref, batch=batch, seed=i)
            a, b = ref.infer(feed), new.infer(feed)
            for name, va in a.items():
                if name not in b:
                    raise PassFailed(f"the {what} lost output {name}")
                vb = b[name]
                if va.shape != vb.shape:
                    raise PassFailed(f"the {what} changed output {name} shape {va.shape} -> {vb.shape}")
                diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
                if not np.allclose(va, vb, atol=atol, rtol=rtol, equal_nan=False):
                    raise PassFailed(f"the {what} does not match its input on random data: max |diff| {worst:.3g} on {name}")
    return worst
