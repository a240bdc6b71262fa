from __future__ import annotations

import click

from optkit.cli.declared import command, input_argument, output_option


def _feature_files(out_dir: str, params: dict) -> list:
    """-o DIR gets one <name>.npy per AUDIO file."""
    from pathlib import Path

    return [Path(out_dir) / f"{Path(a).stem}.npy" for a in params.get("audio") or ()]


@command(short_help="Compute the voice model's MFCC input from audio files.")
@input_argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False))
@output_option("-o", "--output-dir", files=_feature_files, required=True, type=click.Path(file_okay=False, readable=False),
              help="Folder for one <name>.npy per input (created if missing).")
def features(audio, output_dir):
    """Turn each AUDIO file (WAV, FLAC, OGG, ...) into the voice model's input: a float32 array
    (1, 40, 241) of 40 MFCCs x 241 frames (2.41 s, 25 ms windows, 10 ms hop), saved as
    OUTPUT_DIR/<name>.npy. The folder can be used as calibration data (--calibration).

    Stereo is mixed to mono and other sample rates are resampled to 16 kHz. A longer clip
    gives its centre 2.41 s; a shorter one is zero-padded at the end. Each coefficient is
    mean-normalised over the window. See optkit/data/features.py for every parameter.

    \b
    Example:
      optkit features speech1.wav speech2.flac -o mfcc/
    """
    from optkit.data.features import write_features

    for path in write_features(list(audio), output_dir):
        click.echo(f"wrote {path}")
