"""Is an artifact still the model it came from: output comparison (``comparator``), task metrics
(``task_metrics``: accuracy, EER, FAR, FRR), reference files (``reference``), gates and the
verification cache (``verify``), transformation equivalence on random data (``equivalence``),
per-layer error localisation (``localize``) and the task view of a labelled reference
(``taskview``: DET curve, score histograms, flipped samples).

May import: optkit.common, optkit.data, optkit.zoo, optkit.model, optkit.runtime.
"""
