"""The committed calibration/validation data (calibration_data/): shapes, dtypes, values, labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "calibration_data"
SHAPE = (1, 40, 241)


@pytest.fixture(scope="module")
def val():
    with np.load(DATA / "val.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_calib_samples():
    files = sorted((DATA / "calib").glob("*.npy"))
    assert len(files) >= 256
    stack = []
    for f in files:
        x = np.load(f, allow_pickle=False)
        assert x.shape == SHAPE, f
        assert x.dtype == np.float32, f
        assert np.isfinite(x).all(), f
        stack.append(x)
    stack = np.stack(stack)
    # real, varied samples: no duplicates, not constant
    assert len({s.tobytes() for s in stack}) == len(files)
    assert stack.std() > 1.0


def test_val_arrays(val):
    x, y = val["x"], val["y"]
    assert x.ndim == 4 and x.shape[1:] == SHAPE and x.dtype == np.float32
    assert len(x) >= 512 and y.shape == (len(x),)
    assert np.issubdtype(y.dtype, np.integer) and set(np.unique(y)) == {0, 1}
    assert np.isfinite(x).all()
    assert len({s.tobytes() for s in x}) == len(x)
    # front-end invariant: cepstral mean normalisation per coefficient
    np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-2)


def test_val_label_balance_and_groups(val):
    y = val["y"]
    frac_target = y.mean()
    assert 0.4 <= frac_target <= 0.6, frac_target
    groups = val["group"]
    assert set(np.unique(groups)) == {"target", "low-pitch", "us-variant", "other-accent"}
    assert np.array_equal(groups == "target", y == 1)
    # the hard impostors (same voice, lower pitch) are a real share of the non-targets
    assert (groups == "low-pitch").sum() >= 0.3 * (y == 0).sum()


def test_val_and_calib_are_disjoint(val):
    calib = {np.load(f).tobytes() for f in (DATA / "calib").glob("*.npy")}
    assert not calib & {s.tobytes() for s in val["x"]}


def test_loads_through_optkit_data(val):
    from optkit.data.source import load_samples

    s = load_samples(DATA / "val.npz", sample_shape=SHAPE)
    assert len(s) == len(val["x"]) and s.y is not None
    c = load_samples(DATA / "calib", sample_shape=SHAPE)
    assert len(c) >= 256


def test_committed_size_under_40_mb():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file() and p.suffix in {".npy", ".npz"})
    assert total < 40 * 2**20, total
