"""Calibration statistics: exact, mergeable, independent of chunking and order; ranges from them."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_SHAPE

onnx = pytest.importorskip("onnx")

from optkit.quantization import calib_stats as cs  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402
from optkit.passes.quantize_int8 import preprocess  # noqa: E402


@pytest.fixture(scope="module")
def pre(tmp_path_factory, tiny_onnx_session):
    dst = tmp_path_factory.mktemp("stats") / "pre.onnx"
    preprocess(tiny_onnx_session, dst)
    return dst


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(5)
    # per-sample scales differ, so later samples widen the ranges (what broke ORT's re-binning)
    scale = np.geomspace(0.1, 10.0, 12).astype(np.float32)[:, None, None, None]
    return (rng.standard_normal((12, *TINY_SHAPE)).astype(np.float32) * scale)


@pytest.fixture(scope="module")
def stats_by_chunk(pre, x):
    # a small histogram cap, so the in-graph subsample (Slice with a stride) is exercised
    return {c: cs.collect_stats(pre, x, "input_mfcc", chunk_size=c, hist_cap=512) for c in (1, 2, 16)}


def test_ranges_identical_for_chunk_sizes_1_2_16(stats_by_chunk):
    one = stats_by_chunk[1]
    assert len(one.names) > 10 and one.samples == 12
    for c in (2, 16):
        assert stats_by_chunk[c].same_as(one), f"chunk size {c} changed the statistics"
        for method in cs.METHODS:
            assert stats_by_chunk[c].ranges(method) == one.ranges(method), (c, method)


def test_merge_is_exactly_the_union(pre, x, stats_by_chunk):
    whole = stats_by_chunk[2]
    order = np.random.default_rng(0).permutation(len(x))
    a = cs.collect_stats(pre, x[order[:7]], "input_mfcc", chunk_size=3, hist_cap=512)
    b = cs.collect_stats(pre, x[order[7:]], "input_mfcc", chunk_size=5, hist_cap=512)
    merged = a.merge(b)
    assert merged.same_as(whole)
    assert b.merge(a).same_as(whole)
    for method in cs.METHODS:
        assert merged.ranges(method) == whole.ranges(method)
    # the inputs of merge are unchanged
    assert a.samples == 7 and b.samples == 5


def test_serialisation_round_trip(stats_by_chunk, tmp_path):
    s = stats_by_chunk[1]
    s.meta = {"model": "x"}
    path = s.save(tmp_path / "s.npz")
    back = cs.CalibStats.load(path)
    assert back.same_as(s) and back.meta == {"model": "x"}
    assert cs.CalibStats.from_dict(s.to_dict()).same_as(s)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="unreadable calibration statistics"):
        cs.CalibStats.load(bad)


def test_minmax_is_exact_over_every_element(pre, x, stats_by_chunk):
    """The input tensor's min/max are those of the data itself (not of the subsample)."""
    s = stats_by_chunk[16]
    i = s.names.index("input_mfcc")
    assert s.mins[i] == float(x.min()) and s.maxs[i] == float(x.max())
    assert s.counts[i] == x.size
    assert s.hist[i].sum() < x.size  # the histogram is a subsample of it


def test_relu_outputs_derived_equal_measured(pre, x):
    derived = cs.collect_stats(pre, x[:6], "input_mfcc", hist_cap=512)
    measured = cs.collect_stats(pre, x[:6], "input_mfcc", hist_cap=512, derive_relu=False)
    relus = cs.relu_sources(onnx.load(str(pre)), derived.names)
    assert relus, "the tiny model has calibrated Relu outputs"
    np.testing.assert_array_equal(derived.mins, measured.mins)
    np.testing.assert_array_equal(derived.maxs, measured.maxs)
    for method in cs.METHODS:
        a, b = derived.ranges(method), measured.ranges(method)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=f"{method} {k}")


def test_histogram_bins_and_stride():
    assert cs.hist_stride(100, 512) == 1
    s = cs.hist_stride(10_000, 512)
    assert s % 2 == 1 and -(-10_000 // s) <= 512
    v = np.array([0.0, 1.0, 1.001, -1.0, 2.0, 3.0e-8], np.float32)
    k = cs.hist_keys(v)
    assert k[1] == k[2] != k[4]            # 1.0 and 1.001 share a bin (~0.4 % wide), 2.0 does not
    assert k[3] != k[1] and k[0] == 0       # the sign is part of the key; +0.0 is key 0


def test_range_methods_on_a_known_distribution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 4096)).astype(np.float32)
    x[0, 0] = 50.0  # one outlier
    s = cs.array_stats("t", x, hist_cap=4096)
    lo, hi = s.ranges("minmax")["t"]
    assert hi == 50.0 and lo == float(x.min())
    p = s.ranges("percentile", percentile=99.9)["t"][1]
    assert 3.0 < p < 3.6  # |N(0,1)| 99.9th percentile is 3.29
    t = s.ranges("entropy")["t"][1]
    assert 2.0 < t < 10.0, f"entropy kept the outlier ({t:.3g})"
    # mse: the expected u8 error (rounding inside, clipping outside) of its range is the least
    # of a brute-force scan over thresholds, computed here on the raw values
    def u8_error(t):
        low, high = max(lo, -t), min(hi, t)
        step = (high - low) / 255
        return float(np.sum((x - np.clip(x, low, high)) ** 2) + x.size * step**2 / 12)

    t_mse = s.ranges("mse")["t"][1]
    best = min(u8_error(t) for t in np.geomspace(0.05, 50.0, 400))
    assert t_mse < 50.0 and u8_error(t_mse) <= 1.01 * best
    nonneg = cs.array_stats("r", np.maximum(x, 0), hist_cap=4096)
    assert nonneg.ranges("mse")["r"][0] == 0.0 and nonneg.ranges("entropy")["r"][0] == 0.0
    with pytest.raises(InputError, match="unknown range method"):
        s.ranges("kl")


def test_merge_refuses_different_tensor_sets():
    a = cs.array_stats("a", np.ones((2, 4), np.float32))
    b = cs.array_stats("b", np.ones((2, 4), np.float32))
    with pytest.raises(InputError, match="different tensor sets"):
        a.merge(b)
