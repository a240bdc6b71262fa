"""The MFCC front end of the voice model: audio -> float32 array shaped (1, 40, 241).

Every parameter is a module constant, so the training script, the calibration data and the
``optkit features`` command compute exactly the same thing:

* audio is mixed to mono (mean of the channels) and resampled to ``SAMPLE_RATE`` (16 kHz) with
  librosa's default high-quality resampler (soxr);
* the window of ``WINDOW_SAMPLES`` = 38,560 samples (2.41 s) is taken from the **centre** of a
  longer clip (offset ``(n - 38560) // 2``); a shorter clip is **zero-padded at the end**; a clip
  with no samples at all is an error;
* MFCCs: ``N_MFCC`` = 40 coefficients from ``N_MELS`` = 64 mel bands between ``FMIN`` and
  ``FMAX``, power spectrum of ``N_FFT`` = 512-point FFTs of ``WIN_LENGTH`` = 400-sample (25 ms)
  Hann windows every ``HOP_LENGTH`` = 160 samples (10 ms), log power in dB (librosa's
  ``power_to_db``: ref 1.0, floor 1e-10, top_db 80), DCT-II with orthonormal scaling;
* framing: librosa's ``center=True`` with zero padding (``pad_mode="constant"``): frame ``t`` is
  centred on sample ``160 * t``, which gives 1 + 38560 // 160 = 242 frames; the **last frame**
  (centred on the final sample, half of it padding) is dropped, leaving ``N_FRAMES`` = 241;
* normalisation: per-utterance cepstral mean normalisation (each coefficient minus its mean over
  the 241 frames), which removes a constant channel gain / colouring.

librosa is imported lazily, so ``import optkit`` stays light.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import

SAMPLE_RATE = 16_000
N_MFCC = 40
N_MELS = 64
N_FFT = 512
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms at 16 kHz
FMIN = 20.0
FMAX = 7_600.0
TOP_DB = 80.0
N_FRAMES = 241
WINDOW_SAMPLES = N_FRAMES * HOP_LENGTH  # 38,560 samples = 2.41 s
FEATURE_SHAPE = (1, N_MFCC, N_FRAMES)
CROP = "centre"  # which part of a longer clip is kept
PAD = "zeros at the end"  # how a shorter clip is completed


def params() -> dict:
    """Every front-end parameter, for model cards and data READMEs."""
    return {
        "sample_rate": SAMPLE_RATE, "n_mfcc": N_MFCC, "n_mels": N_MELS, "n_fft": N_FFT,
        "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH, "window": "hann", "fmin": FMIN,
        "fmax": FMAX, "top_db": TOP_DB, "dct": "type 2, ortho", "n_frames": N_FRAMES,
        "window_samples": WINDOW_SAMPLES, "crop": CROP, "pad": PAD,
        "framing": "center=True, pad_mode=constant, last of 242 frames dropped",
        "normalisation": "per-utterance cepstral mean normalisation", "dtype": "float32",
    }


def to_mono_16k(y: np.ndarray, sr: int) -> np.ndarray:
    """Mix ``y`` (samples,) or (samples, channels) to mono float32 at SAMPLE_RATE."""
    y = np.asarray(y)
    if y.ndim == 2:
        y = y.mean(axis=1)
    elif y.ndim != 1:
        raise InputError(f"audio must be (samples,) or (samples, channels), got shape {y.shape}")
    if y.size == 0:
        raise InputError("audio contains no samples")
    if not np.issubdtype(y.dtype, np.floating):
        raise InputError(f"audio must be floating point, got dtype {y.dtype}")
    y = y.astype(np.float32)
    if not np.isfinite(y).all():
        raise InputError("audio contains NaN/Inf samples")
    if int(sr) <= 0:
        raise InputError(f"sample rate must be positive, got {sr}")
    if int(sr) != SAMPLE_RATE:
        librosa = lazy_import("librosa", extra="audio")
        y = librosa.resample(y, orig_sr=int(sr), target_sr=SAMPLE_RATE).astype(np.float32)
    return y


def crop_or_pad(y: np.ndarray, offset: int | None = None) -> np.ndarray:
    """Exactly WINDOW_SAMPLES samples: the centre (or ``offset``) of a long clip, zero-padded short one."""
    n = y.shape[0]
    if n >= WINDOW_SAMPLES:
        start = (n - WINDOW_SAMPLES) // 2 if offset is None else int(offset)
        if not 0 <= start <= n - WINDOW_SAMPLES:
            raise InputError(f"offset {offset} is outside a clip of {n} samples")
        return y[start : start + WINDOW_SAMPLES]
    return np.concatenate([y, np.zeros(WINDOW_SAMPLES - n, dtype=y.dtype)])


def mfcc_frames(y: np.ndarray) -> np.ndarray:
    """Un-normalised MFCCs (N_MFCC, 1 + len(y) // HOP_LENGTH) of 16 kHz mono audio, centre framing."""
    librosa = lazy_import("librosa", extra="audio")
    mel = librosa.feature.melspectrogram(
        y=np.ascontiguousarray(y, dtype=np.float32), sr=SAMPLE_RATE, n_fft=N_FFT,
        win_length=WIN_LENGTH, hop_length=HOP_LENGTH, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
    )
    log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=TOP_DB)
    return librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC, dct_type=2, norm="ortho").astype(np.float32)


def normalise(frames: np.ndarray) -> np.ndarray:
    """Per-utterance cepstral mean normalisation of (N_MFCC, N_FRAMES) -> float32 (1, 40, 241)."""
    frames = frames - frames.mean(axis=-1, keepdims=True)
    return np.ascontiguousarray(frames[None], dtype=np.float32)


def mfcc_from_audio(y: np.ndarray, sr: int, offset: int | None = None) -> np.ndarray:
    """The model input for one clip: float32 (1, 40, 241). See the module docstring for the rules.

    ``offset`` (in 16 kHz samples) picks another window than the centre of a long clip.
    """
    window = crop_or_pad(to_mono_16k(y, sr), offset)
    frames = mfcc_frames(window)[:, :N_FRAMES]  # drop the 242nd frame (centred on the last sample)
    return normalise(frames)


def mfcc_natural_length(y: np.ndarray, sr: int, max_frames: int | None = None) -> np.ndarray:
    """The model input of a whole clip: float32 (1, 40, T) with T = samples // HOP_LENGTH (100 frames
    per second, the same framing as the fixed window: its 38,560 samples give the 241 frames),
    normalised the same way. ``max_frames`` caps T: a longer clip keeps its centre. A clip shorter
    than one analysis window (WIN_LENGTH samples, 25 ms) is refused."""
    y = to_mono_16k(y, sr)
    if len(y) < WIN_LENGTH:
        raise InputError(f"the audio has {len(y)} samples at {SAMPLE_RATE} Hz, shorter than one frame "
                         f"({WIN_LENGTH} samples, {1000 * WIN_LENGTH // SAMPLE_RATE} ms)")
    if max_frames is not None and len(y) // HOP_LENGTH > max_frames:
        keep = max_frames * HOP_LENGTH
        start = (len(y) - keep) // 2
        y = y[start : start + keep]
    n = len(y) // HOP_LENGTH
    return normalise(mfcc_frames(y)[:, :n])


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as float32 (samples, channels) and its sample rate; InputError if unusable."""
    from optkit.common.fileio import require_file

    path = require_file(path, "audio file")
    return decode_audio(str(path), str(path))


def decode_audio(source: Any, where: str) -> tuple[np.ndarray, int]:
    """Decode a path or a binary file object (e.g. ``io.BytesIO`` of a file's bytes) like
    :func:`read_audio`; ``where`` names it in errors."""
    sf = lazy_import("soundfile", extra="audio")
    try:
        y, sr = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"{where}: not a readable audio file ({exc})") from exc
    if y.shape[0] == 0:
        raise InputError(f"{where}: the audio file contains no samples")
    return y, int(sr)


def mfcc_from_wav(path: str | os.PathLike, offset: int | None = None) -> np.ndarray:
    """Read ``path`` (any format libsndfile reads: WAV, FLAC, OGG, ...) -> float32 (1, 40, 241)."""
    y, sr = read_audio(path)
    try:
        return mfcc_from_audio(y, sr, offset)
    except InputError as exc:
        raise InputError(f"{Path(path)}: {exc}") from exc


def write_features(inputs: list[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Write ``<out_dir>/<input stem>.npy`` (float32 (1, 40, 241)) for every input audio file.

    All inputs are read and converted before anything is written, so one bad file leaves no
    output at all; each file is written atomically. ``out_dir`` is created if it does not exist.
    """
    from optkit.common.fileio import atomic_output

    if not inputs:
        raise InputError("no audio files given")
    out_dir = Path(out_dir)
    targets: dict[Path, Path] = {}
    for src in map(Path, inputs):
        dst = out_dir / f"{src.stem}.npy"
        if dst in targets.values():
            raise InputError(f"two inputs would both write {dst}; rename one of them")
        targets[src] = dst
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output directory {out_dir} is not a directory")
    existing = out_dir if out_dir.exists() else next((p for p in out_dir.parents if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"output directory {existing} is not writable")
    arrays = {src: mfcc_from_wav(src) for src in targets}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {out_dir}: {exc.strerror or exc}") from exc
    written = []
    for src, dst in targets.items():
        with atomic_output(dst) as tmp, open(tmp, "wb") as f:
            np.save(f, arrays[src])
        written.append(dst)
    return written
