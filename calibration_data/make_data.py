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

A large validation set (tens of thousands of utterances) goes to a directory of shards instead:

    python calibration_data/make_data.py --val-shards build/val_50k --n-val 50000 --workers 2
    python calibration_data/make_data.py --val-shards /shared/val_50k --n-val 50000 --ray auto

writes ``val-00000.npz``, ``val-00001.npz``, ... with ``--shard-size`` samples each: ``x``
(n, 1, 40, 241) float32, ``y`` (n,) int64, ``group`` (n,) str - the format optkit reads lazily,
shard by shard (``optkit export --reference-data DIR --reference-inputs link``). Each shard is
rendered by one task (a local process, or a Ray task on any node; the driver writes the bytes it
gets back, each shard atomically) and its bytes depend only on the seed and the shard's clips, so
the same seed gives byte-identical shards whatever the number of workers. Nothing else is written
in this mode (no train data, no calib/, no val.npz).

Utterances of natural length (variable-length speech, a model exported with a dynamic time axis):

    python calibration_data/make_data.py --natural-length build/val_natural.npz --n-val 256

renders the validation split's clips at their own length instead of the 2.41 s window: MFCCs of
the whole clip (``features.mfcc_natural_length``, 100 frames per second), a clip longer than
``--max-seconds`` (6) keeping its centre, one shorter than ``--min-seconds`` (1) completed with
zeros at the end (the fixed window's rule), so every length is in 100..600 frames. It writes one
ragged ``.npz`` (``optkit.data.ragged``: ``x`` (1, 40, sum of lengths), ``offsets``, ``time_axis``,
``y`` labels), which ``optkit export --reference-data``, ``quantize --int8 --calibration`` and
``verify`` read. The lengths come from the sentences, voices and tempos the seed draws: the same
seed gives the same samples whatever the number of workers. Nothing else is written in this mode.
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
from speech import ClipSpec, render as render_clip  # noqa: E402

from optkit.data import features  # noqa: E402
from optkit.common.fileio import atomic_output  # noqa: E402

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


def render_shard(specs: list[ClipSpec]) -> bytes:
    """One validation shard (x, y, group) as .npz bytes; deterministic given the specs."""
    from optkit.data.source import shard_bytes

    try:  # one BLAS thread per worker: measured, OpenBLAS's threads on the front end's small
        # matrix products made one worker 2x slower and use 2x the CPU (threadpoolctl comes with
        # librosa's scikit-learn)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass

    x = np.stack([features.mfcc_from_audio(render_clip(s), features.SAMPLE_RATE) for s in specs])
    return shard_bytes(x, np.array([s.label for s in specs], dtype=np.int64),
                       group=np.array([s.group for s in specs]))


def natural_length_clip(spec: ClipSpec, min_seconds: float, max_seconds: float) -> np.ndarray:
    """One clip's MFCCs at its natural length, cut to ``max_seconds`` (centre) and completed to
    ``min_seconds`` (zeros at the end): float32 (1, 40, T), 100 frames per second."""
    y = render_clip(spec)
    need = int(round(min_seconds * features.SAMPLE_RATE))
    if y.size < need:
        y = np.concatenate([y, np.zeros(need - y.size, np.float32)])
    return features.mfcc_natural_length(y, features.SAMPLE_RATE,
                                         max_frames=int(round(max_seconds * features.SAMPLE_RATE)) // features.HOP_LENGTH)


def _natural_job(args: tuple[ClipSpec, float, float]) -> np.ndarray:
    return natural_length_clip(*args)


def render_natural_length(specs: list[ClipSpec], out: Path, jobs: int, min_seconds: float,
                          max_seconds: float) -> list[int]:
    """``specs`` at their natural lengths into one ragged .npz (with labels); returns the lengths."""
    from concurrent.futures import ProcessPoolExecutor

    from optkit.data.ragged import write_ragged

    work = [(s, min_seconds, max_seconds) for s in specs]
    if jobs == 1:
        clips = [_natural_job(w) for w in work]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            clips = list(pool.map(_natural_job, work))  # in spec order, whatever finishes first
    write_ragged(out, clips, time_axis=-1, y=np.array([s.label for s in specs], dtype=np.int64))
    return [int(c.shape[-1]) for c in clips]


def _shard_name(i: int) -> str:
    return f"val-{i:05d}.npz"


def _render_val_shards(specs: list[ClipSpec], out: Path, shard_size: int, jobs: int, ray_address: str | None,
                       t0: float) -> int:
    """Render ``specs`` into ``out``/val-NNNNN.npz, ``shard_size`` clips per shard, on ``jobs``
    local processes or on Ray; the driver writes every shard atomically as it comes back."""
    from optkit.common.fileio import write_bytes_atomically

    pieces = [specs[a : a + shard_size] for a in range(0, len(specs), shard_size)]
    out.mkdir(parents=True, exist_ok=True)
    names = [_shard_name(i) for i in range(len(pieces))]
    done = 0

    def write(i: int, data: bytes) -> None:
        nonlocal done
        write_bytes_atomically(out / names[i], data)
        done += 1
        print(f"{names[i]}: {len(pieces[i])} clips ({done}/{len(pieces)} shards, {time.time() - t0:.0f} s)", flush=True)

    if ray_address is not None:
        from optkit.pipeline.distributed import ray_session

        with ray_session(ray_address) as ray:
            # speech.py and this script are not an installed package: ship their code with the
            # task (cluster nodes need optkit[audio], espeak-ng and sox, not this checkout)
            ray.cloudpickle.register_pickle_by_value(speech)
            if __name__ != "__main__":  # imported (tests): __main__ is pickled by value anyway
                ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
            task = ray.remote(num_cpus=1, max_retries=3)(render_shard)
            pending = {task.remote(p): i for i, p in enumerate(pieces)}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                write(pending.pop(ready[0]), ray.get(ready[0]))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            futures = {pool.submit(render_shard, p): i for i, p in enumerate(pieces)}
            for fut in as_completed(futures):
                write(futures[fut], fut.result())
    for stale in out.glob("val-*.npz"):
        if stale.name not in names:
            stale.unlink()
    return len(pieces)


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
    ap.add_argument("--jobs", "--workers", dest="jobs", type=int, default=2, help="worker processes rendering audio")
    ap.add_argument("--out-dir", type=Path, default=HERE, help="where calib/ and val.npz go")
    ap.add_argument("--build-dir", type=Path, default=HERE.parent / "build" / "voice_data")
    ap.add_argument("--skip-train", action="store_true", help="only the committed val/calib data")
    ap.add_argument("--val-shards", type=Path, metavar="DIR",
                    help="render only the validation split (--n-val clips) as .npz shards into DIR")
    ap.add_argument("--shard-size", type=int, default=256, help="clips per shard with --val-shards")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="with --val-shards: render the shards as Ray tasks (no ADDRESS: a local Ray instance; "
                         "'auto' or ray://HOST:PORT: a cluster)")
    ap.add_argument("--natural-length", type=Path, metavar="FILE.npz",
                    help="render only the validation split (--n-val clips) at natural length (1-6 s) into one "
                         "ragged .npz")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="with --natural-length: shorter clips padded to this")
    ap.add_argument("--max-seconds", type=float, default=6.0, help="with --natural-length: longer clips cut to this")
    args = ap.parse_args(argv)
    if args.natural_length is not None and (args.val_shards is not None or args.ray is not None):
        ap.error("--natural-length goes without --val-shards and --ray")
    if args.natural_length is not None and args.natural_length.suffix != ".npz":
        ap.error("--natural-length writes a ragged .npz: give a FILE.npz")
    if not 0.1 <= args.min_seconds <= args.max_seconds:
        ap.error("need 0.1 <= --min-seconds <= --max-seconds")
    if args.ray is not None and args.val_shards is None:
        ap.error("--ray renders --val-shards only")
    if args.shard_size < 1 or args.jobs < 1 or args.n_val < 1:
        ap.error("--shard-size, --workers and --n-val must be at least 1")

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
    if args.natural_length is not None:
        lengths = render_natural_length(specs["val"], args.natural_length, args.jobs, args.min_seconds,
                                        args.max_seconds)
        print(f"natural length: {len(lengths)} clips of {min(lengths)}..{max(lengths)} frames "
              f"({len(set(lengths))} distinct) in {args.natural_length}, {time.time() - t0:.0f} s", flush=True)
        return 0
    if args.val_shards is not None:
        n = _render_val_shards(specs["val"], args.val_shards, args.shard_size, args.jobs, args.ray, t0)
        print(f"val shards: {len(specs['val'])} clips in {n} shards in {args.val_shards}, "
              f"{time.time() - t0:.0f} s", flush=True)
        return 0

    build = args.build_dir
    for sub in ["audio/val", "audio/calib"]:
        (build / sub).mkdir(parents=True, exist_ok=True)
    (args.out_dir / "calib").mkdir(parents=True, exist_ok=True)
    from optkit.common.fileio import write_json_atomically

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
