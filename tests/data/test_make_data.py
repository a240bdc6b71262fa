"""calibration_data/make_data.py --val-shards: the same seed gives byte-identical shards whatever
the number of workers, local processes or Ray tasks; optkit reads them lazily with their labels."""
from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "calibration_data"

if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
    pytest.skip("rendering speech needs espeak-ng and sox", allow_module_level=True)
pytest.importorskip("librosa")


def render(out: Path, *extra: str) -> dict[str, str]:
    sys.path.insert(0, str(DATA))
    import make_data

    assert make_data.main(["--val-shards", str(out), "--n-val", "5", "--shard-size", "2", *extra]) == 0
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "w1"
    return out, render(out, "--workers", "1")


def test_shards_are_byte_identical_whatever_the_number_of_workers(one_worker, tmp_path):
    out1, files1 = one_worker
    assert list(files1) == ["val-00000.npz", "val-00001.npz", "val-00002.npz"]
    stale = tmp_path / "w2" / "val-00009.npz"
    stale.parent.mkdir()
    stale.write_bytes(b"left from an earlier, larger run")
    assert render(tmp_path / "w2", "--workers", "2") == files1
    assert not stale.exists()


def test_ray_tasks_render_the_same_shards(one_worker, tmp_path, ray_local):
    _, files1 = one_worker
    assert render(tmp_path / "ray", "--ray") == files1


def test_the_shards_are_a_labelled_data_set_optkit_reads_lazily(one_worker):
    import numpy as np

    from optkit.data.source import open_samples

    out, _ = one_worker
    source = open_samples(out, (1, 40, 241))
    assert len(source) == 5 and source.shard_bounds() == [(0, 2), (2, 4), (4, 5)]
    assert set(source.labels.tolist()) <= {0, 1}
    x = source.array()[0:5]
    assert x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-2)  # the front end's mean normalisation
    with np.load(out / "val-00000.npz") as z:
        assert np.array_equal(z["group"] == "target", z["y"] == 1)
