"""Runners: run an artifact on inputs. :mod:`optkit.runners.registry` knows every provider and
picks the runner (``make_runner``); each runtime lives in its own module (imported lazily).
"""
from __future__ import annotations

from optkit.runners.registry import PROVIDERS, RUNNERS, make_runner, providers_for  # noqa: F401
