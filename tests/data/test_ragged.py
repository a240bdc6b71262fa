"""Mixed-length sample sets (optkit.data.ragged): .npy directories, the ragged .npz layout with its
offsets validated, audio of natural length, grouping by length without padding."""
from __future__ import annotations

import numpy as np
import pytest

from optkit.common.errors import InputError
from optkit.data.ragged import RaggedSet, load_ragged, split_offsets, write_ragged


def _samples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 4, n)).astype(np.float32) for n in lengths]


def test_npy_directory_of_mixed_lengths_groups_without_padding(tmp_path):
    samples = _samples([30, 12, 30, 7])
    for i, s in enumerate(samples):
        np.save(tmp_path / f"s{i}.npy", s)
    np.save(tmp_path / "s9.npy", np.stack(_samples([12, 12], seed=1)))  # a batch of one length
    rs = load_ragged(tmp_path, sample_ndim=3)
    assert list(rs.lengths) == [30, 12, 30, 7, 12, 12]
    groups = {n: (x, idx) for n, x, idx in rs.groups()}
    assert sorted(groups) == [7, 12, 30]
    x30, idx30 = groups[30]
    assert x30.shape == (2, 1, 4, 30) and list(idx30) == [0, 2]
    np.testing.assert_array_equal(x30[1], samples[2])   # the frames themselves, nothing padded
    assert groups[12][0].shape == (3, 1, 4, 12)
    assert "6 samples, lengths 7..30 (3 distinct)" == rs.describe()


def test_ragged_npz_round_trip_keeps_order_and_labels(tmp_path):
    samples = _samples([5, 9, 3])
    write_ragged(tmp_path / "r.npz", samples, time_axis=-1, y=np.array([1, 0, 1]))
    rs = load_ragged(tmp_path / "r.npz")
    assert [s.shape[-1] for s in rs.samples] == [5, 9, 3]
    for a, b in zip(rs.samples, samples):
        np.testing.assert_array_equal(a, b)
    assert list(rs.labels) == [1, 0, 1]


@pytest.mark.parametrize("offsets, words", [
    ([0, 5, 14, 16], "run from 0 to the length"),
    ([1, 5, 14, 17], "run from 0 to the length"),
    ([0, 9, 5, 17], "increase strictly (sample 1: 9 -> 5)"),
    ([0, 5, 5, 17], "increase strictly"),
    ([[0, 17]], "shape (N + 1,)"),
])
def test_mismatched_offsets_are_one_line(tmp_path, offsets, words):
    x = np.zeros((1, 4, 17), np.float32)
    np.savez(tmp_path / "bad.npz", x=x, offsets=np.array(offsets, np.int64))
    with pytest.raises(InputError, match=r"bad\.npz") as info:
        load_ragged(tmp_path / "bad.npz")
    assert words in str(info.value) and "\n" not in str(info.value)




def test_shapes_may_differ_on_the_time_axis_only():
    with pytest.raises(InputError, match="only axis -1 may differ"):
        RaggedSet([np.zeros((1, 4, 5)), np.zeros((1, 3, 5))], None, "set", -1)
    with pytest.raises(InputError, match="3 labels for 2 samples"):
        RaggedSet([np.zeros((1, 4, 5)), np.zeros((1, 4, 6))], np.array([0, 1, 1]), "set", -1)
    with pytest.raises(InputError, match="not an axis"):
        split_offsets(np.zeros((4, 5)), np.array([0, 5]), 3, "w")


def test_audio_directory_natural_lengths_capped_and_too_short(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    from optkit.data.features import mfcc_from_audio

    rng = np.random.default_rng(0)
    clips = {"a.wav": 38_560, "b.wav": 16_000, "c.wav": 96_000}
    for name, n in clips.items():
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(n)).astype(np.float32), 16_000, subtype="FLOAT")
    rs = load_ragged(tmp_path)
    assert list(rs.lengths) == [241, 100, 600]          # 100 frames per second, natural length
    a, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    # a clip of exactly the fixed window gives exactly the fixed front end's input
    np.testing.assert_allclose(rs.samples[0], mfcc_from_audio(a, 16_000), atol=1e-5)
    capped = load_ragged(tmp_path, max_frames=300)
    assert list(capped.lengths) == [241, 100, 300]
    sf.write(tmp_path / "d.wav", np.zeros(399, np.float32), 16_000, subtype="FLOAT")
    with pytest.raises(InputError, match=r"d\.wav: the audio has 399 samples .* shorter than one frame"):
        load_ragged(tmp_path)
