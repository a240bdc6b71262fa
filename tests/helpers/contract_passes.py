"""Passes for testing the pass contract (registered into optkit.passes.REGISTRY by tests)."""
import shutil
from dataclasses import dataclass

from optkit.passes.base import Pass, PassResult, PreStep


@dataclass(frozen=True)
class CopyConfig:
    check_samples: int = 2


class CopyAfterFp16(Pass):
    """Declares quantize-fp16 as its pre-step, then copies the fp16 model."""

    name = "copy-after-fp16"
    config_cls = CopyConfig
    output_suffix = ".copy.onnx"

    def pre_steps(self, src, cfg):
        return [PreStep("quantize-fp16", {"check_samples": cfg.check_samples})]

    def run(self, src, cfg, out):
        shutil.copyfile(src.path, out.path)
        return PassResult(messages=[f"copied {src.path.name}"], precision=src.precision)
