"""Check that a transformed ONNX model computes what its input model computed (ORT, CPU)."""
from __future__ import annotations

from pathlib import Path

from optkit.verification.comparator import Comparison, Tolerance
from optkit.common.errors import PassFailed
from optkit.model.feeds import random_feed
from optkit.runtime.onnxruntime import OnnxRuntimeRunner


def assert_equivalent(before: Path, after: Path, runs: int = 2, batch: int = 2,
                      atol: float = 1e-4, rtol: float = 1e-3, what: str = "result",
                      label: str | None = None) -> float:
    """Run both models on ``runs`` seeded random batches; raise PassFailed if they differ.

    Returns the largest absolute difference seen.
    """
    comparison = Comparison(f"the {what}", Tolerance(atol, rtol))
    with OnnxRuntimeRunner(before) as ref, OnnxRuntimeRunner(after, label=label) as new:
        if [s.name for s in ref.inputs] != [s.name for s in new.inputs]:
            raise PassFailed(f"the {what} changed the model inputs")
        for i in range(runs):
            feed = random_feed(ref.inputs, batch=batch, seed=i)
            comparison.add(ref.infer(feed), new.infer(feed), where="on random data")
    return comparison.max_abs_diff
