"""The MFCC front end (optkit.data.features) and the ``optkit features`` command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import invoke, listdir_names
from optkit.data import features
from optkit.common.errors import InputError

sf = pytest.importorskip("soundfile")
pytest.importorskip("librosa")


def _tone_clip(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic sound with a moving pitch plus a little noise (no espeak needed)."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t) ** 2)
    y += 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.2 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture
def wav(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(str(path), _tone_clip(3.0), 16_000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def espeak_wav(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("espeak") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "The old farmer carried a wooden box to the harbour."],
                   check=True, capture_output=True)
    return path


def test_constants_describe_the_model_input():
    assert features.FEATURE_SHAPE == (1, features.N_MFCC, features.N_FRAMES) == (1, 40, 241)
    assert features.WINDOW_SAMPLES == 38_560 == int(2.41 * features.SAMPLE_RATE)
    assert features.WIN_LENGTH / features.SAMPLE_RATE == 0.025
    assert features.HOP_LENGTH / features.SAMPLE_RATE == 0.010
    # librosa's centre framing gives 242 frames for 2.41 s; the documented rule drops the last one.
    assert features.mfcc_frames(np.zeros(features.WINDOW_SAMPLES, np.float32)).shape == (40, 242)


def test_numpy_clip_shape_dtype_determinism(wav):
    a = features.mfcc_from_wav(wav)
    b = features.mfcc_from_wav(wav)
    assert a.shape == (1, 40, 241) and a.dtype == np.float32
    assert np.isfinite(a).all()
    assert np.array_equal(a, b)
    # cepstral mean normalisation: every coefficient has zero mean over the window
    np.testing.assert_allclose(a.mean(axis=-1), 0, atol=1e-3)
    assert a.std() > 1.0  # not a constant array


def test_espeak_clip(espeak_wav):
    x = features.mfcc_from_wav(espeak_wav)
    assert x.shape == (1, 40, 241) and x.dtype == np.float32 and np.isfinite(x).all()
    y, sr = sf.read(str(espeak_wav), dtype="float32")
    assert sr == 22_050  # espeak-ng's rate: the front end resamples
    np.testing.assert_array_equal(x, features.mfcc_from_audio(y, sr))


def test_crop_takes_the_centre_and_matches_manual_pipeline():
    y = _tone_clip(4.0)
    start = (y.size - features.WINDOW_SAMPLES) // 2
    manual = features.mfcc_frames(y[start : start + features.WINDOW_SAMPLES])[:, :241]
    manual = manual - manual.mean(axis=1, keepdims=True)
    np.testing.assert_array_equal(features.mfcc_from_audio(y, 16_000)[0], manual.astype(np.float32))
    assert not np.array_equal(features.mfcc_from_audio(y, 16_000), features.mfcc_from_audio(y, 16_000, offset=0))


def test_short_clip_is_zero_padded_at_the_end():
    short = _tone_clip(1.0)
    padded = np.concatenate([short, np.zeros(features.WINDOW_SAMPLES - short.size, np.float32)])
    a = features.mfcc_from_audio(short, 16_000)
    assert a.shape == (1, 40, 241)
    np.testing.assert_array_equal(a, features.mfcc_from_audio(padded, 16_000))


def test_stereo_and_other_sample_rates(tmp_path):
    mono16 = _tone_clip(3.0)
    stereo = np.stack([mono16, mono16], axis=1)
    sf.write(str(tmp_path / "st.wav"), stereo, 16_000, subtype="FLOAT")
    np.testing.assert_allclose(features.mfcc_from_wav(tmp_path / "st.wav"), features.mfcc_from_audio(mono16, 16_000),
                               atol=1e-3)
    mono44 = _tone_clip(3.0, sr=44_100)
    sf.write(str(tmp_path / "hi.flac"), mono44, 44_100)
    x44 = features.mfcc_from_wav(tmp_path / "hi.flac")
    x16 = features.mfcc_from_audio(_tone_clip(3.0), 16_000)
    assert x44.shape == (1, 40, 241)
    # the same sound recorded at 44.1 kHz gives nearly the same features after resampling
    low = slice(0, 13)
    cos = (x44[0, low] * x16[0, low]).sum() / np.linalg.norm(x44[0, low]) / np.linalg.norm(x16[0, low])
    assert cos > 0.9


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.full(100, np.nan, np.float32), np.zeros((10, 2, 2), np.float32)])
def test_bad_audio_arrays(bad):
    with pytest.raises(InputError):
        features.mfcc_from_audio(bad, 16_000)


def test_silence_is_finite():
    x = features.mfcc_from_audio(np.zeros(16_000, np.float32), 16_000)
    assert np.isfinite(x).all()


# --- the CLI ------------------------------------------------------------------------------

def test_cli_writes_one_npy_per_input(cli_runner, wav, espeak_wav, tmp_path):
    out = tmp_path / "mfcc" / "sub"  # created, parents included
    r = invoke(cli_runner, ["features", wav, espeak_wav, "-o", out])
    assert r.exit_code == 0, r.output
    assert listdir_names(out) == {"tone.npy", "speech.npy"}
    np.testing.assert_array_equal(np.load(out / "tone.npy"), features.mfcc_from_wav(wav))
    # the folder is a valid calibration set for the model input
    from optkit.data.source import load_samples

    assert load_samples(out, sample_shape=(1, 40, 241)).x.shape == (2, 1, 40, 241)


def test_cli_help_has_example(cli_runner):
    r = invoke(cli_runner, ["features", "--help"])
    assert r.exit_code == 0 and "Example" in r.output and "optkit features" in r.output


def test_cli_missing_file(cli_runner, wav, tmp_path):
    out = tmp_path / "out"
    r = invoke(cli_runner, ["features", wav, tmp_path / "nope.wav", "-o", out])
    assert r.exit_code == 1
    assert "nope.wav does not exist" in r.stderr
    assert not out.exists()  # nothing written, not even tone.npy


def test_cli_non_audio_file(cli_runner, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    out = tmp_path / "out"
    out.mkdir()
    r = invoke(cli_runner, ["features", bad, "-o", out])
    assert r.exit_code == 1
    assert "not a readable audio file" in r.stderr
    assert listdir_names(out) == set()


def test_cli_empty_audio_file(cli_runner, tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16_000)
    out = tmp_path / "out"
    out.mkdir()
    r = invoke(cli_runner, ["features", empty, "-o", out])
    assert r.exit_code == 1
    assert "contains no samples" in r.stderr
    assert listdir_names(out) == set()


def test_cli_very_short_audio_is_padded(cli_runner, tmp_path):
    short = tmp_path / "blip.wav"
    sf.write(str(short), _tone_clip(0.05), 16_000)
    r = invoke(cli_runner, ["features", short, "-o", tmp_path / "out"])
    assert r.exit_code == 0
    x = np.load(tmp_path / "out" / "blip.npy")
    assert x.shape == (1, 40, 241) and np.isfinite(x).all()


def test_cli_unwritable_output_dir(cli_runner, wav, tmp_path, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    # CI runs as root, which chmod cannot lock out: simulate a read-only directory instead.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(out) else real_access(p, mode))
    r = invoke(cli_runner, ["features", wav, "-o", out])
    assert r.exit_code == 1
    assert "not writable" in r.stderr
    assert listdir_names(out) == set()


def test_cli_output_dir_is_a_file(cli_runner, wav, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = invoke(cli_runner, ["features", wav, "-o", f])
    assert r.exit_code != 0
    assert f.read_text() == "x"


def test_cli_duplicate_output_names(cli_runner, wav, tmp_path):
    other = tmp_path / "b"
    other.mkdir()
    shutil.copy(wav, other / wav.name)
    out = tmp_path / "out"
    r = invoke(cli_runner, ["features", wav, other / wav.name, "-o", out])
    assert r.exit_code == 1 and "both write" in r.stderr
    assert not out.exists()


def test_write_features_library_unwritable_is_input_error(wav, tmp_path, monkeypatch):
    # Simulates an unwritable folder even when the tests run as root.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path / "ro") else real_access(p, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(InputError, match="not writable"):
        features.write_features([wav], tmp_path / "ro")
    assert listdir_names(tmp_path / "ro") == set()
