from __future__ import annotations

import math

import numpy as np
import pytest

from optkit.verification.task_metrics import compare_outputs, eer, json_safe, task_metrics


def test_compare_identical_and_shifted():
    ref = np.array([[0.1], [0.4], [0.6], [0.9]], dtype=np.float32)
    m = compare_outputs(ref, ref.copy(), 0.5)
    assert m["max_abs"] == 0 and m["agreement"] == 1.0 and m["snr_db"] == math.inf and m["cosine"] == pytest.approx(1)
    out = ref + np.array([[0.0], [0.2], [0.0], [0.0]], dtype=np.float32)  # 0.4 -> 0.6 flips
    m = compare_outputs(ref, out, 0.5)
    assert m["max_abs"] == pytest.approx(0.2, abs=1e-6)
    assert m["mean_abs"] == pytest.approx(0.05, abs=1e-6)
    assert m["flipped"] == 1 and m["agreement"] == pytest.approx(0.75)
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    assert m["snr_db"] == pytest.approx(10 * math.log10(signal / 0.04), rel=1e-4)
    assert m["max_rel"] == pytest.approx(0.5, rel=1e-4)


def test_compare_nan_output_is_not_finite():
    ref = np.array([0.2, 0.7])
    m = compare_outputs(ref, np.array([np.nan, 0.7]), 0.5)
    assert m["finite"] is False and m["snr_db"] == -math.inf


def test_compare_shape_mismatch():
    with pytest.raises(ValueError):
        compare_outputs(np.zeros(3), np.zeros(4), 0.5)


def test_eer_separable_and_random():
    labels = np.array([0, 0, 0, 1, 1, 1])
    e, t = eer(np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), labels)
    assert e == 0.0 and 0.3 < t <= 0.7
    e, _ = eer(np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1]), labels)
    assert e == 1.0
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    e, _ = eer(rng.random(4000), y)
    assert 0.45 < e < 0.55


def test_task_metrics_far_frr():
    scores = np.array([0.9, 0.4, 0.6, 0.1])
    labels = np.array([1, 1, 0, 0])
    t = task_metrics(scores, labels, 0.5)
    assert t["accuracy"] == 0.5
    assert t["far"] == 0.5 and t["frr"] == 0.5
    assert t["targets"] == 2 and t["impostors"] == 2


def test_json_safe():
    assert json_safe({"a": [math.inf, -math.inf, math.nan, 1.0, np.float32(2)]}) == {"a": ["inf", "-inf", "nan", 1.0, 2.0]}
