"""One small interface every backend implements (after Polygraphy's BaseRunner).

``verify`` and ``bench`` only ever talk to a Runner; they never care how an artifact was made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.model.onnx_utils import TensorSpec


class Runner:
    #: short name shown in reports, e.g. "onnxruntime[cpu]", "openvino", "tensorrt"
    name: str = "runner"

    def __init__(self, path: str | Path, threads: int | None = None, **options: Any):
        self.path = Path(path)
        self.threads = threads
        self.options = options
        self.active = False

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> None:
        """Load the artifact (create the session / compile the model)."""
        raise NotImplementedError

    def deactivate(self) -> None:
        self.active = False

    def __enter__(self) -> "Runner":
        if not self.active:
            self.activate()
            self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        raise NotImplementedError

    @property
    def output_names(self) -> list[str]:
        raise NotImplementedError

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What actually ran: providers in use, precision hints, device. Goes into reports."""
        return {"runner": self.name}
