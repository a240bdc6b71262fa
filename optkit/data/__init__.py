"""Data in: sample sets in memory (``samples``: shape, dtype and NaN checks, outlier screening),
data directories read lazily (``source``: .npy files, .npz shards, audio + labels.csv) and the
voice model's MFCC front end (``features``).

May import: optkit.common.
"""
