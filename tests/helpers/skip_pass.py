"""A pass that can never run here, for testing how recipes report skipped steps."""
from dataclasses import dataclass

from optkit.passes.base import Pass, PassResult


@dataclass(frozen=True)
class NeverConfig:
    reason: str = "the hardware is absent"


class Never(Pass):
    name = "never"
    config_cls = NeverConfig

    def run(self, src, cfg, out):
        return PassResult(None, skipped=cfg.reason)
