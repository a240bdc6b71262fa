"""Regenerate the voice-verification data from synthetic speech, deterministically from a seed.

    python calibration_data/make_data.py --seed 0

writes, next to this script,
  calib/calib_NNN.npy   unlabelled MFCC samples (1, 40, 241) float32 for int8 calibration
  val.npz               x (N, 1, 40, 241) float32, y (N,) int64 (1 = enrolled speaker), group (N,) str
and, under ``build/voice_data/`` at the repository root (git-ignored, not committed),
  train_frames.npy, train_meta.npz   un-normalised MFCC frames of whole training clips (the training
                                     script crops random 241-frame windows and normalises them)
  audio/{val,calib}/NNNN.wav         the 16 kHz float audio behind every committed sample
  specs.json                         every clip's voice, sentence and channel settings

Splits use disjoint sentences and disjoint effect settings (SNRs, tempos, band limits, gains,
noise seeds); see calibration_data/README.md. Audio is rendered by ``--jobs`` worker processes;
the result does not depend on the number of workers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import speech  # noqa: E402  (helper module beside this script)
from speech import ClipSpec  # noqa: E402

from optkit import features  # noqa: E402
from optkit.fileio import atomic_output  # noqa: E402

SPLIT_IDS = {"train": 1, "holdout": 2, "val": 3, "calib": 4}

# Channel settings per split: no value is shared between splits.
EFFECTS = {
    "train": {
        "snr": [None, None, 30, 20, 15, 10, 8, 6], "tempo": [0.9, 0.95, 1.0, 1.05, 1.1],
        "band": [None, (300, 3400), (100, 7000)], "gain": [-6.0, -3.0, 0.0, 3.0],
    },
    "val": {
        "snr": [None, None, 25, 17, 12, 9, 7, 5], "tempo": [0.93, 0.98, 1.03, 1.08],
        "band": [None, (200, 4000), (80, 6000)], "gain": [-4.5, -1.5, 1.5],
    },
    "calib": {
        "snr": [None, None, 22, 13, 8.5, 5.5], "tempo": [0.96, 1.02, 1.07],
        "band": [None, (250, 3800)], "gain": [-2.0, 2.0],
    },
}
EFFECTS["holdout"] = EFFECTS["train"]  # the early-stopping slice of the training data
NOISES = ["white", "pink", "brown"]

TARGET_PITCH = (40, 60)  # espeak-ng -p: ~97-117 Hz median F0 for en-us+m3
LOW_PITCH = (5, 25)  # same voice, clearly lower: ~73-85 Hz
TARGET_SPEED = (150, 180)
OTHER_SPEED = (130, 200)
OTHER_PITCH = (20, 80)
GROUPS = [("target", 0.5), ("low-pitch", 0.2), ("us-variant", 0.15), ("other-accent", 0.15)]
MAX_TRAIN_SECONDS = 5.0


def plan_split(split: str, n: int, sentences: list[str], rng: np.random.Generator, seed: int) -> list[ClipSpec]:
    """Clip specs with exact group proportions (shuffled), voices and effects drawn from ``rng``."""
    counts = [int(round(n * frac)) for _, frac in GROUPS]
    counts[0] += n - sum(counts)
    groups = np.concatenate([[g] * c for (g, _), c in zip(GROUPS, counts)])
    rng.shuffle(groups)
    fx = EFFECTS[split]
    other_us = [v for v in speech.VARIANTS if v != speech.TARGET_VARIANT]
    other_lang = [lang for lang in speech.LANGUAGES if lang != speech.TARGET_LANGUAGE]
    specs = []
    for i, group in enumerate(groups):
        lang, variant = speech.TARGET_LANGUAGE, speech.TARGET_VARIANT
        if group == "target":
            pitch, speed = rng.integers(*TARGET_PITCH, endpoint=True), rng.integers(*TARGET_SPEED, endpoint=True)
        elif group == "low-pitch":
            pitch, speed = rng.integers(*LOW_PITCH, endpoint=True), rng.integers(*TARGET_SPEED, endpoint=True)
        else:
            if group == "us-variant":
                variant = str(rng.choice(other_us))
            else:
                lang, variant = str(rng.choice(other_lang)), str(rng.choice(other_us))
            pitch, speed = rng.integers(*OTHER_PITCH, endpoint=True), rng.integers(*OTHER_SPEED, endpoint=True)
        snr = fx["snr"][rng.integers(len(fx["snr"]))]
        band = fx["band"][rng.integers(len(fx["band"]))]
        specs.append(ClipSpec(
            split=split, index=i, label=int(group == "target"), group=str(group),
            sentence=sentences[rng.integers(len(sentences))], language=lang, variant=variant,
            pitch=int(pitch), speed=int(speed), tempo=float(rng.choice(fx["tempo"])), band=band,
            gain_db=float(rng.choice(fx["gain"])), snr_db=None if snr is None else float(snr),
            noise=str(rng.choice(NOISES)),
            noise_seed=int(np.random.SeedSequence([seed, SPLIT_IDS[split], i]).generate_state(1)[0]),
        ))
    return specs


def _train_job(spec: ClipSpec) -> np.ndarray:
    y = speech.render(spec)[: int(MAX_TRAIN_SECONDS * features.SAMPLE_RATE)]
    if y.size < features.WINDOW_SAMPLES:
        y = features.crop_or_pad(y)
    return features.mfcc_frames(y)


def _eval_job(args: tuple[ClipSpec, str]) -> np.ndarray:
    import soundfile as sf

    spec, wav_path = args
    y = speech.render(spec)
    with atomic_output(wav_path) as tmp:
        sf.write(str(tmp), y, features.SAMPLE_RATE, subtype="FLOAT", format="WAV")
    return features.mfcc_from_audio(y, features.SAMPLE_RATE)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def _save_npz(path: Path, compressed: bool = False, **arrays: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=3600, help="training clips incl. the hold-out slice")
    ap.add_argument("--holdout-frac", type=float, default=0.1)
    ap.add_argument("--n-val", type=int, default=576)
    ap.add_argument("--n-calib", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=2, help="worker processes rendering audio")
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where calib/ and val.npz go")
    ap.add_argument("--build-dir", type=Path, default=HERE.parent / "build" / "voice_data")
    ap.add_argument("--skip-train", action="store_true", help="only the committed val/calib data")
    args = ap.parse_args(argv)

    speech.check_voices(speech.LANGUAGES, speech.VARIANTS)
    t0 = time.time()
    n_train_sent, n_hold_sent, n_val_sent, n_calib_sent = 1500, 170, 400, 230
    sentences = speech.make_sentences(n_train_sent + n_hold_sent + n_val_sent + n_calib_sent, args.seed)
    pools = {
        "train": sentences[:n_train_sent],
        "holdout": sentences[n_train_sent : n_train_sent + n_hold_sent],
        "val": sentences[n_train_sent + n_hold_sent : -n_calib_sent],
        "calib": sentences[-n_calib_sent:],
    }
    n_hold = int(round(args.n_train * args.holdout_frac))
    sizes = {"train": args.n_train - n_hold, "holdout": n_hold, "val": args.n_val, "calib": args.n_calib}
    specs = {}
    for split in ["train", "holdout", "val", "calib"]:
        rng = np.random.default_rng([args.seed, SPLIT_IDS[split]])
        specs[split] = plan_split(split, sizes[split], pools[split], rng, args.seed)

    build = args.build_dir
    for sub in ["audio/val", "audio/calib"]:
        (build / sub).mkdir(parents=True, exist_ok=True)
    (args.out_dir / "calib").mkdir(parents=True, exist_ok=True)
    from optkit.fileio import write_json_atomically

    write_json_atomically(build / "specs.json", {k: [asdict(s) for s in v] for k, v in specs.items()})

    with mp.get_context("fork").Pool(args.jobs) as pool:
        for split in ["val", "calib"]:
            jobs = [(s, str(build / "audio" / split / f"{s.index:04d}.wav")) for s in specs[split]]
            x = np.stack(pool.map(_eval_job, jobs, chunksize=4))
            if split == "val":
                y = np.array([s.label for s in specs[split]], dtype=np.int64)
                group = np.array([s.group for s in specs[split]])
                _save_npz(args.out_dir / "val.npz", compressed=True, x=x, y=y, group=group)
            else:
                names = set()
                for i, sample in enumerate(x):
                    name = f"calib_{i:03d}.npy"
                    names.add(name)
                    _save_npy(args.out_dir / "calib" / name, sample)
                for stale in (args.out_dir / "calib").glob("calib_*.npy"):
                    if stale.name not in names:
                        stale.unlink()
            print(f"{split}: {len(x)} samples, {time.time() - t0:.0f} s", flush=True)

        if not args.skip_train:
            all_specs = specs["train"] + specs["holdout"]
            frames = pool.map(_train_job, all_specs, chunksize=8)
            max_len = max(f.shape[1] for f in frames)
            stacked = np.zeros((len(frames), features.N_MFCC, max_len), dtype=np.float32)
            lengths = np.array([f.shape[1] for f in frames], dtype=np.int64)
            for i, f in enumerate(frames):
                stacked[i, :, : f.shape[1]] = f
            _save_npy(build / "train_frames.npy", stacked)
            _save_npz(
                build / "train_meta.npz", lengths=lengths,
                y=np.array([s.label for s in all_specs], dtype=np.int64),
                group=np.array([s.group for s in all_specs]),
                holdout=np.array([s.split == "holdout" for s in all_specs]),
                seed=np.array(args.seed),
            )
            print(f"train: {len(frames)} clips ({n_hold} hold-out), {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
