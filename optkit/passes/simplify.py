"""simplify: graph simplification with onnxsim, checked against the input model."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

from optkit.model.artifact import Artifact
from optkit.common.errors import PassFailed, first_line
from optkit.common.lazy import lazy_import
from optkit.model.onnx_utils import io_specs
from optkit.passes.config import option
from optkit.passes.rewrite import GraphRewrite, RewriteConfig


@dataclass(frozen=True)
class SimplifyConfig(RewriteConfig):
    check_runs: int = option(3, "Random-input comparisons onnxsim performs.", min=0)
    skip_fuse_bn: bool = option(False, "Keep BatchNormalization separate from Conv.")


class Simplify(GraphRewrite):
    name, config_cls, result_name = "simplify", SimplifyConfig, "simplified model"
    tools = ("onnxsim", "onnx", "onnxruntime")

    def rewrite(self, model: Any, src: Artifact, cfg: SimplifyConfig) -> tuple[Any, dict[str, Any], str]:
        onnxsim = lazy_import("onnxsim")
        inputs, _ = io_specs(model)
        test_shapes = {s.name: list(s.concrete_shape(cfg.check_batch, src.path.name)) for s in inputs}
        try:
            # onnxsim prints its check progress to stdout; the CLI prints its own summary.
            with contextlib.redirect_stdout(io.StringIO()):
                simplified, ok = onnxsim.simplify(
                    model, check_n=cfg.check_runs, skip_fuse_bn=cfg.skip_fuse_bn,
                    test_input_shapes=test_shapes,
                )
        except Exception as exc:
            raise PassFailed(f"onnxsim failed on {src.path.name}: {type(exc).__name__}: {first_line(exc)}") from exc
        if not ok:
            raise PassFailed(f"onnxsim could not prove {src.path.name} unchanged after simplification")
        return simplified, {}, ""
