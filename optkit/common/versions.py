"""Versions of installed distributions, read from package metadata without importing them.

The one place optkit asks "which version is installed": the manifest's tool versions, cache keys,
``optkit doctor`` and the benchmarks' machine description all read it here.
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name`` or None; read once per process (cache keys
    ask for the same few versions for every step)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def tool_versions(*names: str) -> dict[str, str]:
    """optkit's version and those of ``names`` that are installed (absent ones left out)."""
    import optkit

    versions = {"optkit": optkit.__version__}
    for name in names:
        v = distribution_version(name)
        if v is not None:
            versions[name] = v
    return versions


def library_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of ``names``, None where absent."""
    return {name: distribution_version(name) for name in names}
