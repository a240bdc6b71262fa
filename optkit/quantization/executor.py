"""Where int8 calibration statistics and search trials run: in this process, or on an executor
(a Ray executor from :mod:`optkit.pipeline.distributed`) that the CLI or recipe layer sets with
:func:`calibration_on`.

The quantize-int8 pass calls :func:`collect_stats` and :func:`trial_map` and never imports Ray
code: the executor is handed in from above, and it cannot change the result (statistics merge
exactly; the search keeps what a sequential search keeps), so it is in no config or cache key.
"""
from __future__ import annotations

import contextlib
import contextvars
from pathlib import Path
from typing import Any, Iterator


_CALIBRATION: contextvars.ContextVar[Any] = contextvars.ContextVar("optkit_calibration_executor", default=None)


@contextlib.contextmanager
def calibration_on(executor: Any) -> Iterator[None]:
    """Compute int8 calibration statistics and run the int8 search's trials with ``executor``
    (a RayExecutor, or None = this process)."""
    token = _CALIBRATION.set(executor)
    try:
        yield
    finally:
        _CALIBRATION.reset(token)


def trial_map(ctx: Any, work_dir: Path) -> Any:
    """The Ray map of int8 search trials when :func:`calibration_on` set an executor, else None
    (the search runs its trials one after the other in this process). The chosen model is the
    same either way (:func:`optkit.quantization.int8_search.search` keeps what a sequential search keeps)."""
    executor = _CALIBRATION.get()
    return None if executor is None else executor.trial_map(ctx, work_dir)


def collect_stats(model_path: Path, samples: Any, input_name: str, **options: Any) -> Any:
    """:func:`optkit.quantization.calib_stats.collect_stats`, on the Ray executor set by :func:`calibration_on`
    when there is one; the statistics are the same either way. ``samples``: an array, or a
    LazyArray (optkit.data.source) that Ray workers read from its directory shard by shard."""
    from optkit.quantization import calib_stats

    executor = _CALIBRATION.get()
    if executor is None:
        return calib_stats.collect_stats(model_path, samples, input_name, **options)
    return executor.collect_stats(model_path, samples, input_name, **options)
