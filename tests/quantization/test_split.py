"""The int8 validation split: content order, seeded, stratified."""
from __future__ import annotations

import numpy as np

from optkit.quantization.split import content_order, stratified_split


def test_content_order_does_not_depend_on_the_order_given():
    x = np.random.default_rng(0).standard_normal((30, 3, 4)).astype(np.float32)
    y = np.arange(30) % 2
    perm = np.random.default_rng(1).permutation(30)
    a = x[content_order(x, y)]
    b = x[perm][content_order(x[perm], y[perm])]
    np.testing.assert_array_equal(a, b)


def test_a_set_sorted_by_class_gets_both_classes_on_both_sides():
    """The issue's case: impostors first, the 13 target samples last; the tail split held every target."""
    labels = np.array([0] * 91 + [1] * 13)
    sp = stratified_split(len(labels), 0.25, labels, "label")
    assert sp.counts == {"calibration": {"label 0": 68, "label 1": 10}, "validation": {"label 0": 23, "label 1": 3}}
    assert not sp.warnings
    assert set(sp.calibration) | set(sp.validation) == set(range(104)) and not set(sp.calibration) & set(sp.validation)
    assert "stratified by label: calibration 68 label 0 / 10 label 1; validation 23 label 0 / 3 label 1" in sp.describe()
    again = stratified_split(len(labels), 0.25, labels, "label")
    np.testing.assert_array_equal(sp.validation, again.validation)  # seeded
    other = stratified_split(len(labels), 0.25, labels, "label", seed=1)
    assert not np.array_equal(sp.validation, other.validation)   # random, not the first k


def test_one_class_is_a_warning_and_a_single_sample_class_stays_in_calibration():
    sp = stratified_split(20, 0.25, np.zeros(20, int), "fp32 decision")
    assert len(sp.validation) == 5
    assert len(sp.warnings) == 2 and all("one class only (reject" in w for w in sp.warnings)
    sp = stratified_split(9, 0.25, np.array([0] * 8 + [1]), "label")
    assert sp.counts["validation"] == {"label 0": 2, "label 1": 0} and sp.counts["calibration"]["label 1"] == 1
    assert sp.warnings == ["the validation part holds one class only (label 0, by label): its decisions cannot "
                           "show a flip towards the other class"]


def test_not_stratified_without_a_decision():
    sp = stratified_split(10, 0.3, None, None)
    assert len(sp.validation) == 3 and sp.counts == {} and not sp.warnings and "not stratified" in sp.describe()
