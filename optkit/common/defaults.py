"""Defaults shared by several layers (library, CLI, recipes), written once. Pass options keep
their defaults in their config dataclass (optkit.passes.config); these are the ones outside a pass."""

# The voice model's decision: accepted when the probability is at or above this.
DECISION_THRESHOLD = 0.5
# Samples per runtime call when running a reference set through a model (export, verify).
BATCH_SIZE = 32
