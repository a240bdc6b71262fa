"""Model inputs ("feeds"), the one place that makes them: at random, from a sample set, or in
batches from a reference's inputs.

- :func:`random_feed` - seeded inputs for a model's input specs (equivalence checks, build-engine's
  self-check, bench without data). Float inputs are standard normal, integer inputs 0..3 (safe as
  indices). The random *sample sets* of ``export`` / ``quantize-fp16`` come from
  :func:`optkit.data.samples.random_samples`, which reference files were made with.
- :func:`sample_feeds` - up to 16 distinct batches cut from a sample set (bench ``--data``).
- :func:`reference_batches` - every reference input in batches the runner accepts (verify, the
  export check), padding the last batch of a static-batch model.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.model.onnx_utils import TensorSpec

MAX_DISTINCT_FEEDS = 16


def random_feed(specs: Sequence[TensorSpec], batch: int = 2, seed: int = 0,
                shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """One seeded random feed; ``shapes`` overrides the shape of named inputs. An input with a
    declared length range gets its minimum length for an even seed and its maximum for an odd one
    (so two seeded checks cover both extremes)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        length = None
        if spec.ranges:
            length = spec.ranges[0][2] if seed % 2 else spec.ranges[0][1]
        shape = (tuple(shapes[spec.name]) if shapes and spec.name in shapes
                 else spec.concrete_shape(batch, length=length))
        if np.issubdtype(np.dtype(spec.dtype), np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, 4, size=shape).astype(spec.dtype)
    return feed


def batch_shapes(specs: Sequence[TensorSpec], batch: int, label: str = "artifact",
                 length: int | None = None) -> dict[str, tuple[int, ...]]:
    """Each input's shape at ``batch`` (and ``length`` on an axis with a declared length range);
    InputError for a model with another fixed batch."""
    shapes = {}
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch:
            raise InputError(f"{label}: input {spec.name} has a fixed batch of {spec.shape[0]}; "
                             f"it cannot run batch {batch}")
        shapes[spec.name] = tuple(spec.concrete_shape(batch, label, length=length))
    return shapes


def sample_feeds(specs: Sequence[TensorSpec], batch: int, data: str, label: str = "artifact") -> list[dict[str, np.ndarray]]:
    """Up to 16 distinct batches cut from the sample set ``data`` (cycled through by callers)."""
    shapes = batch_shapes(specs, batch, label)
    if len(specs) != 1:
        raise InputError(f"{label}: sample data feeds single-input models only; this one has "
                         f"{len(specs)} inputs ({', '.join(s.name for s in specs)})")
    from optkit.data.source import load_samples

    spec = specs[0]
    # only what is used: a large data directory is read no further than these batches
    samples = load_samples(data, sample_shape=shapes[spec.name][1:], dtype=spec.dtype,
                           limit=batch * MAX_DISTINCT_FEEDS)
    x = samples.x
    if len(x) < batch:  # too few samples for one batch: repeat them
        x = np.resize(x, (batch, *x.shape[1:]))
    n_feeds = max(1, min(len(x) // batch, MAX_DISTINCT_FEEDS))
    return [{spec.name: np.ascontiguousarray(x[i * batch:(i + 1) * batch])} for i in range(n_feeds)]


def reference_batches(specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray], batch_size: int,
                      label: str = "artifact") -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """(feed, number of real rows) for every ``batch_size`` rows of ``inputs``, checked against the
    runner's input specs. A model with a static batch runs at exactly that batch; the last batch is
    padded by repeating its last row."""
    wanted = {s.name: s for s in specs}
    missing = sorted(set(wanted) - set(inputs))
    if missing:
        raise InputError(f"{label} needs input(s) {', '.join(missing)} that the reference does not have "
                         f"(reference inputs: {', '.join(inputs)})")
    for name, spec in wanted.items():
        arr = inputs[name]
        dims = spec.shape[1:]
        if len(dims) != arr.ndim - 1 or any(isinstance(d, int) and d != a for d, a in zip(dims, arr.shape[1:])):
            raise InputError(f"{label}: input {name} expects shape {spec.shape}, reference has {arr.shape}")
    n = int(next(iter(inputs.values())).shape[0]) if inputs else 0
    static = {s.shape[0] for s in wanted.values() if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    if static:
        batch_size = static.pop()
    for start in range(0, n, batch_size):
        feed: dict[str, Any] = {}
        for name, spec in wanted.items():
            part = np.ascontiguousarray(inputs[name][start : start + batch_size]).astype(spec.dtype, copy=False)
            if static and len(part) < batch_size:
                part = np.concatenate([part, np.repeat(part[-1:], batch_size - len(part), axis=0)], axis=0)
            feed[name] = part
        yield feed, min(batch_size, n - start)
