"""What every other part of optkit stands on: errors (OptkitError and its subclasses, the only
exceptions the library raises at users), lazy imports with install hints, atomic file writing,
crash-safe work directories and locks, installed versions, and the defaults used outside a pass.

May import: nothing of optkit (the standard library and click-free light packages only).
"""
