"""simplify: graph simplification with onnxsim, checked against the input model."""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from optkit.artifact import Artifact, tool_versions
from optkit.equivalence import save_if_equivalent
from optkit.errors import PassFailed, first_line
from optkit.fileio import check_output_path
from optkit.lazy import lazy_import
from optkit.onnx_utils import check_model, graph_stats, io_specs, load_onnx, model_precision
from optkit.passes.base import Pass, PassResult, config_to_dict


@dataclass(frozen=True)
class SimplifyConfig:
    check_runs: int = 3          # random-input comparisons onnxsim performs
    skip_fuse_bn: bool = False   # keep BatchNormalization separate from Conv
    check_batch: int = 2         # batch size for the checks of a dynamic-batch model


class Simplify(Pass):
    name = "simplify"
    config_cls = SimplifyConfig
    output_suffix = ".onnx"

    def run(self, src: Artifact | None, cfg: SimplifyConfig, out: Path) -> PassResult:
        onnxsim = lazy_import("onnxsim")
        assert src is not None
        out = check_output_path(out)
        model = load_onnx(src.path)
        before = graph_stats(model, src.path)
        inputs, _ = io_specs(model)
        test_shapes = {s.name: list(s.concrete_shape(cfg.check_batch)) for s in inputs}
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
        check_model(simplified, full=True, what="simplified model")
        max_diff = save_if_equivalent(simplified, src.path, out, batch=cfg.check_batch, what="simplified model")
        after = graph_stats(simplified, out)
        return PassResult(
            Artifact.from_file(out, kind="onnx", precision=model_precision(simplified), made_by=self.name,
                               config=config_to_dict(cfg), parent=src.sha256,
                               tool_versions=tool_versions("onnxsim", "onnx", "onnxruntime")),
            messages=[f"simplify: {before.describe()} -> {after.describe()}",
                      f"ONNX Runtime matches the input model on random data (max |diff| {max_diff:.2e})"],
            info={"nodes_before": before.nodes, "nodes_after": after.nodes,
                  "size_before": before.file_size, "size_after": after.file_size, "max_abs_diff": max_diff},
        )
