"""Named dynamic axes besides the batch (a time axis of variable-length speech) and the length
range a model declares for them.

``--dynamic-axis input_mfcc:3`` (``NAME:AXIS[=LABEL]``) makes axis 3 of the tensor ``input_mfcc``
dynamic in the exported graph; ``--length-range MIN:MAX`` declares the lengths the model will see
on every dynamic axis besides the batch. The export checks the model against PyTorch at lengths
spread over that range (:func:`check_lengths`) and records the axes and the range in the ONNX
model's ``metadata_props`` under :data:`META_KEY` (JSON), where the later passes, the runners and
the service read it (:func:`read_dynamic_axes`). A graph's ``dim_param`` alone says an axis is
dynamic, not which lengths were verified; the metadata says that.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optkit.common.errors import InputError

META_KEY = "optkit.dynamic_axes"


@dataclass(frozen=True)
class DynamicAxis:
    tensor: str                    # an input or output name
    axis: int
    label: str                     # the dim_param written into the graph
    min: int | None = None         # the declared length range (None for the batch axis)
    max: int | None = None
    opt: int | None = None         # the export length (TensorRT's default profile tunes for it)

    @property
    def is_batch(self) -> bool:
        return self.axis == 0

    def describe(self) -> str:
        rng = "" if self.is_batch else f" {self.min}..{self.max}"
        return f"{self.tensor}[{self.axis}] ({self.label}{rng})"

    def contains(self, length: int) -> bool:
        return self.is_batch or (self.min is None or length >= self.min) and (self.max is None or length <= self.max)


def parse_dynamic_axis(text: str) -> tuple[str, int, str | None]:
    """``NAME:AXIS[=LABEL]`` -> (name, axis, label or None); InputError for anything else."""
    spec, _, label = str(text).strip().partition("=")
    name, sep, axis = spec.rpartition(":")
    if not sep or not name or not axis.strip().isdigit():
        raise InputError(f"{text!r} is not a dynamic axis like input_mfcc:3 (NAME:AXIS, optionally =LABEL)")
    if label and not label.replace("_", "").isalnum():
        raise InputError(f"{text!r}: the axis label {label!r} must be letters, digits and _")
    return name.strip(), int(axis), label or None


def check_dynamic_axes(values: Sequence[str]) -> None:
    """The config check of ``--dynamic-axis`` (each value parses; no axis named twice)."""
    seen = set()
    for v in values:
        name, axis, _ = parse_dynamic_axis(v)
        if (name, axis) in seen:
            raise InputError(f"{name}:{axis} is named twice")
        seen.add((name, axis))


def parse_length_range(text: str) -> tuple[int, int]:
    """``MIN:MAX`` -> (min, max), positive integers with min <= max."""
    lo, sep, hi = str(text).strip().partition(":")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        a = b = 0
    if not sep or a < 1 or b < 1:
        raise InputError(f"{text!r} is not a length range like 100:1000 (MIN:MAX, positive integers)")
    if a > b:
        raise InputError(f"{text!r}: the minimum {a} is above the maximum {b}")
    return a, b


def resolve_axes(values: Iterable[str], shapes: dict[str, int], length_range: str | None,
                 batch_names: Iterable[str] = ()) -> list[DynamicAxis]:
    """The declared axes checked against the tensors they name (``shapes``: name -> rank): every
    axis exists; a dynamic axis besides the batch needs the length range. ``batch_names``: tensors
    whose axis 0 is dynamic anyway (a dynamic batch)."""
    axes: dict[tuple[str, int], DynamicAxis] = {}
    rng = parse_length_range(length_range) if length_range else None
    for v in values:
        name, axis, label = parse_dynamic_axis(v)
        if name not in shapes:
            raise InputError(f"dynamic axis {v!r}: the model has no tensor {name!r} "
                             f"(its input and output are {', '.join(shapes)})")
        if axis >= shapes[name]:
            raise InputError(f"dynamic axis {v!r}: {name} has {shapes[name]} dimensions (axes 0..{shapes[name] - 1})")
        if axis == 0:
            axes[(name, 0)] = DynamicAxis(name, 0, label or "batch")
            continue
        if rng is None:
            raise InputError(f"dynamic axis {v!r}: declare the lengths the model will see with --length-range MIN:MAX "
                             "(the export checks them against PyTorch and records them)")
        axes[(name, axis)] = DynamicAxis(name, axis, label or "length", rng[0], rng[1])
    for name in batch_names:
        axes.setdefault((name, 0), DynamicAxis(name, 0, "batch"))
    if rng is not None and not any(not a.is_batch for a in axes.values()):
        raise InputError(f"--length-range {length_range} is given but no dynamic axis besides the batch "
                         "(add --dynamic-axis NAME:AXIS)")
    return sorted(axes.values(), key=lambda a: (a.tensor, a.axis))


def torch_dynamic_axes(axes: Iterable[DynamicAxis]) -> dict[str, dict[int, str]] | None:
    """The ``dynamic_axes`` argument of ``torch.onnx.export``."""
    out: dict[str, dict[int, str]] = {}
    for a in axes:
        out.setdefault(a.tensor, {})[a.axis] = a.label
    return out or None


def check_lengths(lo: int, hi: int, export_length: int, given: Sequence[int] = ()) -> list[int]:
    """The lengths an export is checked at: ``given`` (each inside the range), else the extremes,
    the export length when inside, and three lengths spread between."""
    if given:
        outside = [n for n in given if not lo <= n <= hi]
        if outside:
            raise InputError(f"check length(s) {', '.join(map(str, outside))} outside the length range {lo}:{hi}")
        return sorted(set(given))
    spread = {lo, hi, *(round(lo + (hi - lo) * f) for f in (0.25, 0.5, 0.75))}
    if lo <= export_length <= hi:
        spread.add(export_length)
    return sorted(spread)


def write_dynamic_axes(model: Any, axes: Iterable[DynamicAxis]) -> None:
    """Record ``axes`` (and their range) in the ONNX model's metadata_props."""
    data = [asdict(a) for a in axes if not a.is_batch]
    props = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    if data:
        entry = model.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(data)


def read_dynamic_axes(model: Any) -> list[DynamicAxis]:
    """The dynamic axes besides the batch that an ONNX model declares (none: [])."""
    return axes_from_metadata({p.key: p.value for p in model.metadata_props})


def axes_from_metadata(metadata: dict[str, str]) -> list[DynamicAxis]:
    """The same from a metadata map (ONNX Runtime's ``custom_metadata_map``, an engine sidecar)."""
    text = metadata.get(META_KEY)
    if not text:
        return []
    try:
        return [DynamicAxis(**d) for d in json.loads(text)]
    except (ValueError, TypeError) as exc:
        raise InputError(f"the model's {META_KEY} metadata is not valid: {exc}") from None


def input_ranges(metadata: dict[str, str]) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """{tensor: ((axis, min, max), ...)}: what ``TensorSpec.ranges`` holds."""
    out: dict[str, list[tuple[int, int, int]]] = {}
    for a in axes_from_metadata(metadata):
        out.setdefault(a.tensor, []).append((a.axis, int(a.min or 1), int(a.max or a.min or 1)))
    return {k: tuple(v) for k, v in out.items()}


def length_dims(axes: Iterable[DynamicAxis], tensor: str, length: int) -> dict[int, int]:
    """{axis: length} for every dynamic axis besides the batch of ``tensor``."""
    return {a.axis: length for a in axes if a.tensor == tensor and not a.is_batch}
