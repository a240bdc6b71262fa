"""Synthetic speech for the voice-verification data: sentences, espeak-ng voices, sox channel.

Used by ``make_data.py``. Needs the ``espeak-ng`` and ``sox`` programs (Debian packages of the
same names). Everything here is deterministic given its arguments.
"""
from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------
# Sentences: built combinatorially from word lists with a seeded generator.

SUBJECTS = [
    "the old farmer", "my younger sister", "a tired engineer", "the quiet librarian", "our neighbour",
    "the tall stranger", "a nervous student", "the friendly baker", "his grandmother", "the ship captain",
    "a young doctor", "the careful pilot", "her best friend", "the local mayor", "a curious child",
    "the night guard", "my uncle", "the new teacher", "a busy waiter", "the retired sailor",
    "the small team", "our landlord", "a famous singer", "the museum guide", "the bus driver",
    "a lonely painter", "the head chef", "my cousin", "the gardener", "a patient nurse",
]
VERBS = [
    "carried", "painted", "repaired", "found", "described", "ordered", "cleaned", "borrowed",
    "delivered", "photographed", "measured", "hid", "opened", "sold", "collected", "returned",
    "wrapped", "counted", "inspected", "moved", "dropped", "noticed", "polished", "weighed",
]
ADJECTIVES = [
    "heavy", "bright red", "wooden", "broken", "silver", "ancient", "narrow", "muddy", "golden",
    "enormous", "dusty", "fragile", "striped", "rusty", "shiny", "folded", "green", "crooked",
    "plastic", "velvet", "frozen", "empty", "wet", "leather",
]
OBJECTS = [
    "box", "bicycle", "lantern", "umbrella", "piano", "basket", "window", "ladder", "carpet",
    "kettle", "suitcase", "telescope", "wagon", "map", "blanket", "bottle", "helmet", "violin",
    "chair", "clock", "mirror", "envelope", "bucket", "statue",
]
PLACES = [
    "near the harbour", "behind the station", "in the back garden", "at the village market",
    "beside the river", "under the bridge", "on the top floor", "inside the workshop",
    "across the square", "next to the bakery", "at the edge of the forest", "in the narrow alley",
    "outside the post office", "along the coast road", "in the school hall", "by the fountain",
]
TIMES = [
    "early this morning", "late last night", "on a rainy Tuesday", "just before lunch",
    "after the storm", "during the long winter", "at half past seven", "on the first of May",
    "three days ago", "before sunrise", "in the middle of August", "every second weekend",
]
TAILS = [
    "and nobody said a word", "while the dog was barking", "because the roads were closed",
    "although it was getting dark", "and then went home for supper", "without asking anyone",
    "as the bells began to ring", "before the guests arrived", "and wrote a short letter about it",
    "while the radio played old songs", "so the children laughed", "and it took nearly an hour",
]


def make_sentences(n: int, seed: int) -> list[str]:
    """``n`` distinct sentences (about 10 to 22 words), in a seeded random order."""
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        subj, verb = rng.choice(SUBJECTS), rng.choice(VERBS)
        adj, obj = rng.choice(ADJECTIVES), rng.choice(OBJECTS)
        place, time, tail = rng.choice(PLACES), rng.choice(TIMES), rng.choice(TAILS)
        form = int(rng.integers(4))
        if form == 0:
            s = f"{subj} {verb} the {adj} {obj} {place} {time}"
        elif form == 1:
            s = f"{time}, {subj} {verb} a {adj} {obj} {place}, {tail}"
        elif form == 2:
            s = f"{place}, {subj} {verb} the {adj} {obj} {tail}"
        else:
            s = f"did {subj} really say the {adj} {obj} was {place} {time}?"
        s = s[0].upper() + s[1:]
        if not s.endswith("?"):
            s += "."
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# espeak-ng voices.

TARGET_LANGUAGE = "en-us"
TARGET_VARIANT = "m3"
# English language voices (espeak-ng --voices=en, non-MBROLA) and voice variants (!v folder)
# that sound like people rather than robots/whispers. Every one is checked to exist.
LANGUAGES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy",
    "Annie", "adam", "anika", "david", "ed", "edward", "john", "linda", "max", "michel", "paul",
    "robert", "steph", "travis", "zac", "quincy", "Mike", "Hugo", "Denis",
]


@functools.lru_cache(maxsize=1)
def espeak_data_dir() -> Path:
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Data at:\s*(\S+)", out)
    if not m:
        raise RuntimeError(f"cannot find espeak-ng's data folder in {out!r}")
    return Path(m.group(1))


def check_voices(languages: list[str], variants: list[str]) -> None:
    """Fail loudly if a language or variant is missing: espeak-ng would silently use the default."""
    if shutil.which("sox") is None:
        raise RuntimeError("sox is not installed (Debian: apt-get install sox)")
    vdir = espeak_data_dir() / "voices" / "!v"
    missing = [v for v in variants if not (vdir / v).is_file()]
    listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    known = {line.split()[1].lower() for line in listing.splitlines()[1:] if len(line.split()) > 1}
    missing += [lang for lang in languages if lang.lower() not in known]
    if missing:
        raise RuntimeError(f"espeak-ng voices/variants not installed: {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------
# One clip: espeak-ng -> sox (resample, band limit, tempo, gain) -> numpy noise at an SNR.

@dataclass(frozen=True)
class ClipSpec:
    split: str
    index: int
    label: int  # 1 = enrolled speaker, 0 = someone else
    group: str  # target | low-pitch | us-variant | other-accent
    sentence: str
    language: str
    variant: str
    pitch: int  # espeak-ng -p (0-99)
    speed: int  # espeak-ng -s (words per minute)
    tempo: float  # sox tempo factor
    band: tuple[int, int] | None  # sox sinc band-pass (Hz), None = full band
    gain_db: float
    snr_db: float | None  # None = no added noise
    noise: str  # white | pink | brown
    noise_seed: int

    @property
    def voice(self) -> str:
        return f"{self.language}+{self.variant}"


def _coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= np.sqrt(f) if colour == "pink" else f  # 1/f power (pink) or 1/f^2 power (brown)
    return np.fft.irfft(spec, n)


def render(spec: ClipSpec, sample_rate: int = 16_000) -> np.ndarray:
    """The clip as float32 mono at ``sample_rate``."""
    import soundfile as sf

    wav = subprocess.run(
        ["espeak-ng", "-v", spec.voice, "-p", str(spec.pitch), "-s", str(spec.speed), "--stdout", spec.sentence],
        capture_output=True, check=True,
    ).stdout
    effects = ["rate", "-h", str(sample_rate)]
    if spec.band is not None:
        effects += ["sinc", f"{spec.band[0]}-{spec.band[1]}"]
    if spec.tempo != 1.0:
        effects += ["tempo", "-s", f"{spec.tempo:g}"]
    effects += ["gain", f"{spec.gain_db:g}"]
    # -R: repeatable (no random seeding), -D: no dither, float output: nothing random in sox.
    out = subprocess.run(
        ["sox", "-R", "-D", "-V1", "-t", "wav", "-", "-t", "wav", "-e", "floating-point", "-b", "32", "-", *effects],
        input=wav, capture_output=True, check=True,
    ).stdout
    y, sr = sf.read(io.BytesIO(out), dtype="float32")
    assert sr == sample_rate, sr
    y = y.astype(np.float64)
    if spec.snr_db is not None:
        rng = np.random.default_rng(spec.noise_seed)
        noise = _coloured_noise(y.size, spec.noise, rng)
        active = np.abs(y) > 1e-4  # signal power over speech, not over espeak's silences
        p_sig = np.mean(y[active] ** 2) if active.any() else np.mean(y**2)
        noise *= np.sqrt(p_sig / (np.mean(noise**2) * 10 ** (spec.snr_db / 10)))
        y = y + noise
    return y.astype(np.float32)
