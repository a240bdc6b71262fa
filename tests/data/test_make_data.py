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


def test_natural_length_utterances_are_a_mixed_length_set_optkit_quantizes_and_verifies(tmp_path, cli_runner):
    """--natural-length: seeded clips at their own lengths (1-6 s = 100..600 frames) in one ragged
    .npz that export (reference), quantize --int8 (calibration) and verify read."""
    import json

    import numpy as np

    from conftest import invoke
    from optkit.data.ragged import load_ragged

    sys.path.insert(0, str(DATA))
    import make_data

    out = tmp_path / "natural.npz"
    assert make_data.main(["--natural-length", str(out), "--n-val", "12", "--workers", "2"]) == 0
    ragged = load_ragged(out)
    x, y = ragged.samples, ragged.labels
    lengths = [s.shape[-1] for s in x]
    assert len(x) == 12 and all(s.shape[:-1] == (1, 40) for s in x)
    assert len(set(lengths)) >= 6 and 100 <= min(lengths) and max(lengths) <= 600
    assert set(y.tolist()) == {0, 1}
    # deterministic: one worker renders the same samples (the .npz members' timestamps may differ)
    again = tmp_path / "again.npz"
    assert make_data.main(["--natural-length", str(again), "--n-val", "12", "--workers", "1"]) == 0
    with np.load(out) as a, np.load(again) as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)

    models = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"
    model = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{models}:gap_cnn", "-o", model, "--input-shape", "1,1,40,241",
                              "--input-name", "input_mfcc", "--output-name", "output_wvp", "--reference-data", out,
                              "--dynamic-axis", "input_mfcc:3", "--length-range", "100:600", "--check-lengths", "100,600"])
    assert res.exit_code == 0, res.output
    q = tmp_path / "m.int8.onnx"
    res = invoke(cli_runner, ["quantize", model, "--int8", "--calibration", out, "-o", q])
    assert res.exit_code == 0, res.output
    assert f"calibration data: 12 samples of lengths {min(lengths)}..{max(lengths)}" in res.output
    rep = tmp_path / "rep"
    res = invoke(cli_runner, ["verify", q, "--reference", tmp_path / "m.reference.npz", "--report-dir", rep])
    assert res.exit_code in (0, 3), res.output  # read and judged (a 12-sample gate may fail: not the point)
    lengths_info = json.loads((rep / "report.json").read_text())["reference"]["lengths"]
    assert lengths_info["distinct"] == len(set(lengths))


def test_natural_length_refuses_another_mode_in_one_line(capsys):
    sys.path.insert(0, str(DATA))
    import make_data

    with pytest.raises(SystemExit) as exc:
        make_data.main(["--natural-length", "x.npz", "--val-shards", "d"])
    assert exc.value.code == 2 and "--natural-length goes without --val-shards" in capsys.readouterr().err
