"""Data directories read lazily, shard by shard (optkit.data.source), and the references that link
them: the same outputs, statistics and reports as the same data held in one .npz, with and
without Ray."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke
from optkit.quantization import calib_stats
from optkit.data import source as datasource
from optkit.data.source import load_samples
from optkit.data.source import open_samples, write_shard
from optkit.common.errors import InputError
from optkit.verification.reference import load_reference

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
N = 37
SPLITS = [0, 10, 11, 25, N]  # uneven shards, one of a single sample


def comparable(report: dict) -> dict:
    """A report without what differs between runs or between the two reference files (their
    path, sha256 and the data path they name)."""
    r = json.loads(json.dumps(report))
    r.pop("created"), r.pop("execution")
    for key in ("path", "sha256"):
        r["reference"].pop(key)
    r["reference"]["meta"].pop("source")
    for a in r["artifacts"]:
        a.pop("seconds"), a.pop("path")
        a["runner"].pop("threads", None)
        a.pop("runtime_text", None)
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same 37 labelled samples as one .npz and as a directory of 4 .npz shards."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, *TINY_SHAPE)).astype(np.float32)
    y = rng.integers(0, 2, N)
    np.savez(d / "all.npz", x=x, y=y)
    (d / "shards").mkdir()
    for i, (a, b) in enumerate(zip(SPLITS, SPLITS[1:])):
        write_shard(d / "shards" / f"part-{i:03d}.npz", x[a:b], y[a:b], group=np.array(["g"] * (b - a)))
    return d, x, y


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """The tiny model exported twice: reference inputs embedded (from the .npz) and linked (to the
    shard directory)."""
    from click.testing import CliRunner

    d, _, _ = data
    out = tmp_path_factory.mktemp("exported")
    runner = CliRunner()
    for name, src, extra in (("embed", d / "all.npz", []), ("link", d / "shards", ["--reference-inputs", "link"])):
        res = invoke(runner, ["export", f"{MODELS}:tiny_voice", "-o", out / f"{name}.onnx", "--reference-data", src,
                              *extra])
        assert res.exit_code == 0, res.output
    return out


def test_a_shard_directory_is_opened_from_headers_and_read_on_demand(data, monkeypatch):
    d, x, y = data
    source = open_samples(d / "shards", TINY_SHAPE)
    assert len(source) == N and source.kind == "npz" and source.n_shards == 4
    assert source.shard_bounds() == list(zip(SPLITS, SPLITS[1:]))
    assert source.labels.tolist() == y.tolist()
    read: list[str] = []
    real = datasource.DataSource._read_bytes
    monkeypatch.setattr(datasource.DataSource, "_read_bytes", lambda self, j: read.append(self.files[j]) or real(self, j))
    arr = source.array()
    assert arr.shape == (N, *TINY_SHAPE) and arr.dtype == np.float32
    assert np.array_equal(arr[8:12], x[8:12])  # across the one-sample shard
    assert read == ["part-000.npz", "part-001.npz", "part-002.npz"]
    assert np.array_equal(arr.view(9, 30)[1:4], x[10:13]) and np.array_equal(arr[-1], x[-1])
    assert np.array_equal(np.concatenate(list(arr.view(5, 30).chunks())), x[5:30])
    assert np.array_equal(load_samples(d / "shards", TINY_SHAPE).x, x)
    head = load_samples(d / "shards", TINY_SHAPE, limit=12)
    assert np.array_equal(head.x, x[:12]) and head.y.tolist() == y[:12].tolist()


def test_npy_directories_of_samples_and_batches(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, *TINY_SHAPE)).astype(np.float32)
    np.save(tmp_path / "a.npy", x[0])        # one sample
    np.save(tmp_path / "b.npy", x[1:5])      # a batch
    np.save(tmp_path / "c.npy", x[5:].astype(np.float64))  # float64 is cast, as before
    source = open_samples(tmp_path, TINY_SHAPE)
    assert source.kind == "npy" and source.counts == (1, 4, 2) and source.labels is None
    assert np.array_equal(source.array()[0:7], x)
    assert np.array_equal(load_samples(tmp_path, TINY_SHAPE).x, x)


def test_an_audio_directory_becomes_mfccs_per_shard_with_labels_from_a_csv(tmp_path, monkeypatch):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    from optkit.data import features

    rng = np.random.default_rng(1)
    t = np.arange(8000) / 16000
    for i in range(5):
        clip = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"u{i}.wav", clip.astype(np.float32), 16000 if i != 3 else 8000)
    (tmp_path / "labels.csv").write_text("file,label\n" + "".join(f"u{i}.wav,{i % 2}\n" for i in range(5)))
    monkeypatch.setattr(datasource, "AUDIO_SHARD", 2)
    source = open_samples(tmp_path, features.FEATURE_SHAPE)
    assert source.kind == "audio" and len(source) == 5 and source.shard_bounds() == [(0, 2), (2, 4), (4, 5)]
    assert source.labels.tolist() == [0, 1, 0, 1, 0]
    expected = np.concatenate([features.mfcc_from_wav(tmp_path / f"u{i}.wav") for i in range(5)])
    assert np.array_equal(source.array()[1:5], expected[1:5])
    (tmp_path / "labels.csv").write_text("file,label\nu0.wav,1\n")
    with pytest.raises(InputError, match="no label for 4 audio file"):
        open_samples(tmp_path, features.FEATURE_SHAPE)


def test_bad_directories_are_one_clear_error(tmp_path, data):
    d, x, y = data
    with pytest.raises(InputError, match="has no .npy files"):
        open_samples(tmp_path)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_shard(mixed / "a.npz", x[:2], y[:2])
    write_shard(mixed / "b.npz", x[2:4])
    with pytest.raises(InputError, match="some shards have labels"):
        open_samples(mixed, TINY_SHAPE)
    write_shard(mixed / "b.npz", x[2:4, :, :, :10], y[2:4])
    with pytest.raises(InputError, match=r"b.npz:x: shape \(2, 1, 40, 10\) does not match"):
        open_samples(mixed, TINY_SHAPE)
    write_shard(mixed / "b.npz", np.full_like(x[2:4], np.nan), y[2:4])
    source = open_samples(mixed, TINY_SHAPE)  # values are checked when the shard is read
    with pytest.raises(InputError, match="NaN/Inf"):
        source.array()[0:4]


def test_shard_bytes_are_deterministic(data):
    _, x, y = data
    assert datasource.shard_bytes(x[:3], y[:3]) == datasource.shard_bytes(x[:3].copy(), y[:3].copy())
    assert datasource.shard_bytes(x[:3], y[:3]) != datasource.shard_bytes(x[1:4], y[:3])


def test_a_linked_reference_equals_the_embedded_one(exported):
    embed = load_reference(exported / "embed.reference.npz")
    link = load_reference(exported / "link.reference.npz")
    assert link.linked and not embed.linked
    assert np.array_equal(link.outputs["output_wvp"], embed.outputs["output_wvp"])  # bit-identical PyTorch outputs
    assert link.labels.tolist() == embed.labels.tolist()
    assert link.identity() == embed.identity()
    # the linked file holds no inputs: it is a fraction of the embedded one
    assert (exported / "link.reference.npz").stat().st_size < (exported / "embed.reference.npz").stat().st_size / 10


@pytest.mark.parametrize("ray", [False, True])
def test_verify_on_a_linked_reference_gives_the_same_report(exported, cli_runner, tmp_path, ray, request):
    extra = []
    if ray:
        request.getfixturevalue("ray_local")
        extra = ["--ray", "--shards", "3"]
    reports = {}
    for name in ("embed", "link"):
        res = invoke(cli_runner, ["verify", exported / "embed.onnx", "--reference", exported / f"{name}.reference.npz",
                                  "--batch-size", "4", "--report-dir", tmp_path / name, *extra])
        assert res.exit_code == 0, res.output
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    assert reports["link"]["execution"]["engine"] == ("ray" if ray else "local")
    assert comparable(reports["link"]) == comparable(reports["embed"])


def test_moved_or_changed_data_is_refused_and_reference_data_points_to_it(exported, data, tmp_path, cli_runner):
    d, x, y = data
    ref = tmp_path / "link.reference.npz"
    shutil.copy(exported / "link.reference.npz", ref)  # its relative path no longer leads to the data
    moved = tmp_path / "moved"
    shutil.copytree(d / "shards", moved)
    base = ["verify", exported / "embed.onnx", "--reference", ref, "--batch-size", "4"]
    ok = invoke(cli_runner, base + ["--reference-data", moved])
    assert ok.exit_code == 0, ok.output
    write_shard(moved / "part-002.npz", x[11:25] + 1, y[11:25])
    bad = invoke(cli_runner, base + ["--reference-data", moved])
    assert bad.exit_code == 1 and "part-002.npz is not the file the reference was made from" in bad.output
    assert "Traceback" not in bad.output
    gone = invoke(cli_runner, base + ["--reference-data", tmp_path / "nowhere"])
    assert gone.exit_code == 1 and "pass its location with --reference-data" in gone.output
    embedded = invoke(cli_runner, ["verify", exported / "embed.onnx", "--reference", exported / "embed.reference.npz",
                                   "--reference-data", moved])
    assert embedded.exit_code == 1 and "holds its inputs" in embedded.output


def test_a_missing_linked_data_directory_is_named_normalised(exported, data, tmp_path, monkeypatch, cli_runner):
    """The data directory of a reference linked with a relative path is named as a normalised path
    ("/x/vs", not "vsm/../vs"), and the relative link is still followed from the reference's real
    directory (through a symlink to it, after the whole tree moved)."""
    from optkit.verification.reference import save_reference

    d, _, _ = data
    proj = tmp_path.resolve() / "proj"
    shutil.copytree(d / "shards", proj / "vs")
    (proj / "vsm").mkdir()
    save_reference(proj / "vsm" / "m.reference.npz", load_reference(exported / "link.reference.npz", data=proj / "vs"))
    monkeypatch.chdir(proj)
    assert len(load_reference("vsm/m.reference.npz")) == N
    (proj / "vs").rename(proj / "vs-moved")
    with pytest.raises(InputError) as e:
        load_reference("vsm/m.reference.npz")
    assert str(e.value) == (f"vsm/m.reference.npz links its inputs to the data directory {proj / 'vs'}, which does "
                            "not exist; pass its location with --reference-data DIR")
    res = invoke(cli_runner, ["verify", exported / "embed.onnx", "--reference", "vsm/m.reference.npz"])
    assert res.exit_code == 1 and f"data directory {proj / 'vs'}, which" in res.output and ".." not in res.output
    (proj / "elsewhere").mkdir()
    shutil.copy(proj / "vsm" / "m.reference.npz", proj / "elsewhere" / "m.reference.npz")
    with pytest.raises(InputError, match=rf"data directory {proj / 'vs'}, which does not exist; pass"):
        load_reference(proj / "elsewhere" / ".." / "elsewhere" / "m.reference.npz")
    (proj / "deeper" / "still").mkdir(parents=True)
    shutil.copy(proj / "vsm" / "m.reference.npz", proj / "deeper" / "still" / "m.reference.npz")
    with pytest.raises(InputError) as e:
        load_reference(proj / "deeper" / "still" / "m.reference.npz")
    assert (f"data directory {proj / 'deeper' / 'vs'}, which does not exist (nor does {proj / 'vs'}, where it was "
            "when the reference was made)") in str(e.value) and ".." not in str(e.value)
    # the tree moves and is reached through a symlink: "../vs" is taken from the real directory
    (proj / "vs-moved").rename(proj / "vs")
    monkeypatch.chdir(tmp_path)
    proj.rename(tmp_path / "proj2")
    (tmp_path / "alias").symlink_to(tmp_path / "proj2" / "vsm", target_is_directory=True)
    assert len(load_reference(tmp_path / "alias" / "m.reference.npz")) == N


def test_link_needs_a_data_directory(cli_runner, tmp_path, data):
    d, _, _ = data
    res = invoke(cli_runner, ["export", f"{MODELS}:tiny_voice", "-o", tmp_path / "m.onnx", "--reference-data",
                              d / "all.npz", "--reference-inputs", "link"])
    assert res.exit_code == 1 and "--reference-inputs link needs a data directory" in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def single_stats(exported, data):
    _, x, _ = data
    return calib_stats.collect_stats(exported / "embed.onnx", x, "input_mfcc", progress=False)


@pytest.mark.parametrize("ray", [False, True])
def test_calibration_statistics_of_a_shard_directory_equal_the_in_memory_ones(exported, data, single_stats, ray,
                                                                             request):
    from optkit.pipeline.distributed import RayExecutor
    from optkit.quantization.executor import calibration_on, collect_stats

    d, _, _ = data
    lazy = open_samples(d / "shards", TINY_SHAPE).array()
    executor = RayExecutor(request.getfixturevalue("ray_local"), workers=2, shards=3) if ray else None
    with calibration_on(executor):
        stats = collect_stats(exported / "embed.onnx", lazy, "input_mfcc", progress=False)
    assert stats.same_as(single_stats)
    assert {m: stats.ranges(m) for m in calib_stats.METHODS} == {m: single_stats.ranges(m) for m in calib_stats.METHODS}


def test_a_ray_worker_that_cannot_find_the_data_says_what_a_cluster_needs(exported, data, tmp_path, ray_local):
    from optkit.pipeline.distributed import RayExecutor
    from optkit.verification.verify import verify_artifacts

    d, _, _ = data
    moved = tmp_path / "shards"
    shutil.copytree(d / "shards", moved)
    ref = load_reference(exported / "link.reference.npz", data=moved)
    shutil.rmtree(moved)  # gone after the driver opened it: the worker cannot find it
    with pytest.raises(InputError, match="Ray worker on .*: data directory .* does not exist; every node must see"):
        verify_artifacts([exported / "embed.onnx"], ref, batch_size=4,
                         executor=RayExecutor(ray_local, workers=2, shards=2))


def test_a_recipe_exports_a_linked_reference_and_verifies_on_it(data, exported, cli_runner, tmp_path):
    d, _, _ = data
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: linked
model: {MODELS}:tiny_voice
steps:
  - pass: export
    params:
      reference_data: {d / "shards"}
      reference_inputs: link
verify:
  threshold: 0.5
""")
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    ref = load_reference(tmp_path / "out" / "export.reference.npz")
    assert ref.linked and len(ref) == N
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["reference"]["identity"] == load_reference(exported / "embed.reference.npz").identity()
