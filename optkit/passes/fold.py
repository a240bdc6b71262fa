"""fold: constant folding with onnxscript's optimizer (maintained by the ONNX exporter team)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optkit.artifact import Artifact, tool_versions
from optkit.equivalence import save_if_equivalent
from optkit.errors import PassFailed, first_line
from optkit.fileio import check_output_path
from optkit.lazy import lazy_import
from optkit.onnx_utils import check_model, graph_stats, load_onnx, model_precision
from optkit.passes.base import Pass, PassResult, config_to_dict


@dataclass(frozen=True)
class FoldConfig:
    remove_unused: bool = True          # drop nodes and initializers that no output needs
    output_size_limit: int = 1 << 22    # largest folded tensor (elements) to materialise
    check_batch: int = 2


class Fold(Pass):
    name = "fold"
    config_cls = FoldConfig
    output_suffix = ".onnx"

    def run(self, src: Artifact | None, cfg: FoldConfig, out: Path) -> PassResult:
        optimizer = lazy_import("onnxscript.optimizer")
        assert src is not None
        out = check_output_path(out)
        model = load_onnx(src.path)
        before = graph_stats(model, src.path)
        try:
            result = optimizer.fold_constants(model, output_size_limit=cfg.output_size_limit)
            if cfg.remove_unused:
                optimizer.remove_unused_nodes(model)
        except Exception as exc:
            raise PassFailed(f"constant folding failed on {src.path.name}: {type(exc).__name__}: {first_line(exc)}") from exc
        check_model(model, full=True, what="folded model")
        max_diff = save_if_equivalent(model, src.path, out, batch=cfg.check_batch, what="folded model")
        after = graph_stats(model, out)
        return PassResult(
            Artifact.from_file(out, kind="onnx", precision=model_precision(model), made_by=self.name,
                               config=config_to_dict(cfg), parent=src.sha256,
                               tool_versions=tool_versions("onnxscript", "onnx", "onnxruntime")),
            messages=[f"fold: {before.describe()} -> {after.describe()}"
                      + ("" if bool(result) else " (nothing left to fold)"),
                      f"ONNX Runtime matches the input model on random data (max |diff| {max_diff:.2e})"],
            info={"nodes_before": before.nodes, "nodes_after": after.nodes, "modified": bool(result),
                  "size_before": before.file_size, "size_after": after.file_size, "max_abs_diff": max_diff},
        )
