"""fold: constant folding with onnxscript's optimizer (maintained by the ONNX exporter team)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optkit.model.artifact import Artifact
from optkit.common.errors import PassFailed, first_line
from optkit.common.lazy import lazy_import
from optkit.passes.config import option
from optkit.passes.rewrite import GraphRewrite, RewriteConfig


@dataclass(frozen=True)
class FoldConfig(RewriteConfig):
    remove_unused: bool = option(True, "Drop nodes and initializers that no graph output needs "
                                 "(--keep-unused keeps them).", flag="--remove-unused/--keep-unused")
    output_size_limit: int = option(1 << 22, "Largest folded tensor (elements) to materialise.", cli=False)


class Fold(GraphRewrite):
    name, config_cls, result_name = "fold", FoldConfig, "folded model"
    tools = ("onnxscript", "onnx", "onnxruntime")

    def rewrite(self, model: Any, src: Artifact, cfg: FoldConfig) -> tuple[Any, dict[str, Any], str]:
        optimizer = lazy_import("onnxscript.optimizer")
        try:
            result = optimizer.fold_constants(model, output_size_limit=cfg.output_size_limit)
            if cfg.remove_unused:
                optimizer.remove_unused_nodes(model)
        except Exception as exc:
            raise PassFailed(f"constant folding failed on {src.path.name}: {type(exc).__name__}: {first_line(exc)}") from exc
        return model, {"modified": bool(result)}, "" if bool(result) else " (nothing left to fold)"
