"""The shape shared by graph rewrites (simplify, fold): load, rewrite, save, prove unchanged.

A rewrite implements :meth:`GraphRewrite.rewrite` only; this class counts nodes before and after
and its :meth:`check` runs the written model against its input on seeded random data
(:mod:`optkit.verification.equivalence`) before ``Pass.__call__`` renames it into place.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dataclasses import dataclass

from optkit.model.artifact import Artifact
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import check_model, graph_stats, load_onnx, model_precision
from optkit.passes.config import option
from optkit.passes.base import Pass, PassOutput, PassResult


@dataclass(frozen=True)
class RewriteConfig:
    """What every rewrite's config has: the batch its equivalence check runs at."""

    check_batch: int = option(2, "Batch size for the checks of a dynamic-batch model.", cli=False, min=1)


class GraphRewrite(Pass):
    # the user-facing name of the result in messages, e.g. "simplified model"
    result_name = "result"

    def rewrite(self, model: Any, src: Artifact, cfg: Any) -> tuple[Any, dict[str, Any], str]:
        """Return (rewritten model, facts for the manifest, a note for the summary line)."""
        raise NotImplementedError  # pragma: no cover

    def run(self, src: Artifact | None, cfg: Any, out: PassOutput) -> PassResult:
        onnx = lazy_import("onnx")
        assert src is not None
        model = load_onnx(src.path)
        before = graph_stats(model, src.path)
        model, info, note = self.rewrite(model, src, cfg)
        check_model(model, full=True, what=self.result_name)
        onnx.save(model, str(out.path))
        after = graph_stats(model, out.path)
        info = {"nodes_before": before.nodes, "nodes_after": after.nodes,
                "size_before": before.file_size, "size_after": after.file_size, **info}
        return PassResult(messages=[f"{self.name}: {before.describe()} -> {after.describe()}{note}"],
                          info=info, precision=model_precision(model))

    def check(self, src: Artifact | None, cfg: Any, written: Path, result: PassResult) -> None:
        from optkit.verification.equivalence import assert_equivalent

        assert src is not None
        max_diff = assert_equivalent(src.path, written, batch=cfg.check_batch, what=self.result_name)
        result.messages.append(f"ONNX Runtime matches the input model on random data (max |diff| {max_diff:.2e})")
        result.info["max_abs_diff"] = max_diff
