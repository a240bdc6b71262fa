"""Pass registry: names used by the CLI and recipes -> pass classes (imported lazily).

To add a pass: write ``optkit/passes/<name>.py`` with a config dataclass and a ``Pass``
subclass, then add one line here.

May import: everything below it (common, data, zoo, model, runtime, verification, quantization);
never release, pipeline (Ray included), serve, lesson or cli: a pass is driven, it does not drive.
"""
from __future__ import annotations

import importlib

from optkit.common.errors import RecipeError

REGISTRY: dict[str, str] = {
    "export": "optkit.passes.export:Export",
    "simplify": "optkit.passes.simplify:Simplify",
    "fold": "optkit.passes.fold:Fold",
    "quantize-int8": "optkit.passes.quantize_int8:QuantizeInt8",
    "quantize-fp16": "optkit.passes.quantize_fp16:QuantizeFp16",
    "build-engine": "optkit.passes.build_engine:BuildEngine",
}


def get_pass(name: str):  # noqa: ANN201 - returns a Pass instance
    try:
        target = REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown pass {name!r}; known passes: {', '.join(REGISTRY)}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()
