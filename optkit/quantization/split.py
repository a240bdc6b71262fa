"""The calibration / validation split of ``quantize --int8``: the same samples give the same split,
whatever their file names or load order.

- Samples are put in *content order* first: by the sha256 of each sample's bytes (and its label),
  so a directory and its renamed, reversed or shuffled copy hold the same samples in the same order.
  Everything after (the split, the calibration statistics, the trials, the model bytes) sees that
  order only. (The statistics do not depend on order anyway - :mod:`optkit.quantization.calib_stats`
  adds counts and takes a fixed per-sample subsample - but the model check and the equalisation
  read samples in order.)
- The held-out part is a seeded random sample (:data:`SPLIT_SEED`) of that order, stratified: by
  label where labels exist, else by the fp32 model's own decision at the threshold (for an output
  with one decision per sample). Each class with at least two samples has samples in both parts,
  so a folder sorted by speaker cannot put every target sample on one side.
- A mixed-length set (a dynamic time axis) is stratified by length bucket too
  (:func:`split_by_length`): the strata are class x length bucket, so every bucket with at least two
  samples of a class has samples of it in both parts, and the trials are validated over every
  length the calibration saw.
- Counts per class of each part are reported; a part with one class only is a warning (its
  decision agreement cannot see a flip towards the missing class), never an error.

A tail split (``x[-n:]``, as before) is hand-written order dependence; numpy's Generator is the
random part.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLIT_SEED = 0


def content_order(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Indices that sort the samples by the sha256 of their bytes (then label): a permutation that
    depends on the samples only, not on where they came from."""
    keys = []
    for i in range(len(x)):
        h = hashlib.sha256(np.ascontiguousarray(x[i]).tobytes())
        if y is not None:
            h.update(str(int(y[i])).encode())
        keys.append(h.hexdigest())
    return np.array(sorted(range(len(x)), key=lambda i: keys[i]), dtype=np.int64)


@dataclass
class Split:
    """Indices (into the content-ordered samples, ascending) of the two parts, and their classes."""

    calibration: np.ndarray
    validation: np.ndarray
    by: str | None                       # "label" | "fp32 decision" | None (not stratified)
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)   # part -> class -> samples
    warnings: list[str] = field(default_factory=list)
    seed: int = SPLIT_SEED
    lengths: dict[str, dict[str, int]] = field(default_factory=dict)  # part -> length bucket -> samples

    def describe(self) -> str:
        n, v = len(self.calibration), len(self.validation)
        by = [b for b in (self.by, "length bucket" if self.lengths else None) if b]
        if not by:
            return f"{v} of {n + v} samples held out for validation at random (seed {self.seed}; not stratified)"
        return (f"{v} of {n + v} samples held out for validation at random (seed {self.seed}), stratified by "
                f"{' and '.join(by)}: " + "; ".join(x for x in (class_line(self.counts), class_line(self.lengths)) if x))

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "stratified_by": self.by, "calibration_samples": int(len(self.calibration)),
                "validation_samples": int(len(self.validation)), "classes": self.counts,
                **({"length_buckets": self.lengths} if self.lengths else {}),
                "warnings": list(self.warnings), "order": "sha256 of each sample's bytes"}


def class_names(strata: np.ndarray, by: str | None) -> dict[Any, str]:
    """Readable class names: accept/reject for decisions, label values otherwise."""
    values = sorted(set(np.asarray(strata).tolist()))
    if by == "fp32 decision":
        return {v: ("accept" if v else "reject") for v in values}
    return {v: f"label {v}" for v in values}


def count_classes(strata: np.ndarray | None, by: str | None) -> dict[str, int]:
    if strata is None or by is None:
        return {}
    names = class_names(strata, by)
    s = np.asarray(strata).tolist()
    return {names[v]: int(s.count(v)) for v in names}


def class_line(counts: dict[str, dict[str, int]]) -> str:
    """'calibration 96 label 0 / 96 label 1; validation 32 label 0 / 32 label 1'."""
    return "; ".join(f"{part} " + " / ".join(f"{n} {c}" for c, n in cls.items()) for part, cls in counts.items())


def one_class_warnings(counts: dict[str, dict[str, int]], by: str | None) -> list[str]:
    """A warning for each part that holds one class only (nothing when not stratified)."""
    out = []
    for part, cls in counts.items():
        present = [c for c, n in cls.items() if n]
        if by is not None and len(present) == 1:
            out.append(f"the {part} part holds one class only ({present[0]}, by {by}): its decisions cannot "
                       "show a flip towards the other class")
    return out


def allocate(sizes: list[int], n_val: int) -> list[int]:
    """Validation samples per stratum: ``n_val`` shared in proportion to the strata's sizes (the
    stratum furthest below its share gets the next sample), each stratum of >= 2 samples giving at
    least 1 and keeping at least 1 (``n_val`` grows to the number of such strata when smaller: both
    classes on both sides)."""
    n = sum(sizes)
    low = [1 if k >= 2 else 0 for k in sizes]
    high = [max(k - 1, 0) for k in sizes]
    n_val = max(n_val, sum(low))
    quota = [n_val * k / n if n else 0.0 for k in sizes]
    take = [min(max(int(q), lo), hi) for q, lo, hi in zip(quota, low, high)]
    idx = range(len(sizes))
    while sum(take) < n_val:
        room = [i for i in idx if take[i] < high[i]]
        if not room:
            break
        take[max(room, key=lambda i: (quota[i] - take[i], -i))] += 1
    while sum(take) > n_val:
        spare = [i for i in idx if take[i] > low[i]]
        if not spare:
            break
        take[max(spare, key=lambda i: (take[i] - quota[i], -i))] -= 1
    return take


def stratified_split(n: int, holdout: float, strata: np.ndarray | None, by: str | None,
                     seed: int = SPLIT_SEED) -> Split:
    """Hold out ``holdout`` of ``n`` content-ordered samples (at least 1, at most n - 1) at random,
    stratified (:func:`allocate`)."""
    rng = np.random.default_rng(seed)
    if strata is None or by is None:
        groups = [np.arange(n)]
    else:
        s = np.asarray(strata)
        groups = [np.flatnonzero(s == v) for v in sorted(set(s.tolist()))]
    n_val = min(max(1, int(round(n * holdout))), max(n - 1, 0))
    sizes = [len(g) for g in groups]
    if len(groups) == 1:
        takes = [n_val]
    else:
        takes = allocate(sizes, n_val)
    val = [rng.permutation(idx)[:t] for idx, t in zip(groups, takes)]
    v = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    c = np.setdiff1d(np.arange(n), v)
    sp = Split(c.astype(np.int64), v.astype(np.int64), by)
    _count_classes(sp, strata, by)
    return sp


def _count_classes(sp: Split, strata: np.ndarray | None, by: str | None) -> None:
    if strata is not None and by is not None:
        s = np.asarray(strata)
        names = class_names(s, by)
        sp.classes = list(names.values())
        sp.counts = {part: {names[val_]: int(np.sum(s[idx] == val_)) for val_ in names}
                     for part, idx in (("calibration", sp.calibration), ("validation", sp.validation))}
        sp.warnings = one_class_warnings(sp.counts, by)


def split_by_length(lengths: np.ndarray, holdout: float, strata: np.ndarray | None, by: str | None,
                    seed: int = SPLIT_SEED) -> Split:
    """:func:`stratified_split` of a mixed-length set over class x length bucket. The buckets are
    verify's (``verification.lengths.length_buckets``: one per distinct length, or ranges of about
    equal counts) with at least ``ceil(1 / holdout)`` samples each where the set allows, so each can
    give the validation part one. A bucket with no class of two samples stays in calibration (a
    warning)."""
    import math

    from optkit.verification.lengths import bucket_label, length_buckets

    lengths = np.asarray(lengths, dtype=np.int64)
    buckets = length_buckets(lengths, min_samples=max(2, math.ceil(1 / holdout)) if holdout > 0 else 2)
    bucket = np.searchsorted(np.array([hi for _, hi in buckets]), lengths)
    cls = np.zeros(len(lengths), np.int64) if strata is None or by is None else \
        np.unique(np.asarray(strata), return_inverse=True)[1].astype(np.int64)
    sp = stratified_split(len(lengths), holdout, cls * len(buckets) + bucket, "class x length", seed)
    # the counts and warnings stratified_split made are of the class x length strata: start over
    # from the classes alone (none without labels or decisions)
    sp.by, sp.counts, sp.classes, sp.warnings = by, {}, [], []
    _count_classes(sp, strata, by)
    labels = [bucket_label(lo, hi) for lo, hi in buckets]
    sp.lengths = {part: {labels[i]: int(np.sum(bucket[idx] == i)) for i in range(len(buckets))}
                  for part, idx in (("calibration", sp.calibration), ("validation", sp.validation))}
    missing = [lab for lab in labels if not sp.lengths["validation"][lab]]
    if missing:
        sp.warnings.append(f"length bucket{'s' if len(missing) > 1 else ''} {', '.join(missing)}: too few "
                           "samples of one class to hold one out; calibrated on, not validated")
    return sp
