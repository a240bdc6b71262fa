"""fold: constant folding with onnxscript's optimizer (maintained by the ONNX exporter team)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optkit.artifact import Artifact
from optkit.errors import PassFailed, first_line
from optkit.lazy import lazy_import
from optkit.passes.rewrite import GraphRewrite


@dataclass(frozen=True)
class FoldConfig:
    remove_unused: bool = True          # drop nodes and initializers that no output needs
    output_size_limit: int = 1 << 22    # largest folded tensor (elements) to materialise
    check_batch: int = 2


class Fold(GraphRewrite):
    name = "fold"
    config_cls = FoldConfig
    output_suffix = ".onnx"
    tools = ("onnxscript", "onnx", "onnxruntime")
    result_name = "folded model"

    def rewrite(self, model: Any, src: Artifact, cfg: FoldConfig) -> tuple[Any, dict[str, Any], str]:
        optimizer = lazy_import("onnxscript.optimizer")
        try:
            result = optimizer.fold_constants(model, output_size_limit=cfg.output_size_limit)
            if cfg.remove_unused:
                optimizer.remove_unused_nodes(model)
        except Exception as exc:
            raise PassFailed(f"constant folding failed on {src.path.name}: {type(exc).__name__}: {first_line(exc)}") from exc
        return model, {"modified": bool(result)}, "" if bool(result) else " (nothing left to fold)"
