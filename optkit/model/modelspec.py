"""Resolve a MODEL argument to a PyTorch module.

MODEL is a built-in zoo name (``voice-resnet``), ``pkg.module:callable`` or
``path/file.py:callable``; the callable returns an ``nn.Module`` (or is one).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from optkit import zoo
from optkit.common.errors import InputError
from optkit.common.lazy import lazy_import


def _split(spec: str) -> tuple[str, str]:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(
            f"model {spec!r} is not a zoo name ({', '.join(zoo.names())}), "
            "'pkg.module:callable' or 'path/file.py:callable'"
        )
    return target, attr


def load_module_object(spec: str) -> Any:
    target, attr = _split(spec)
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist")
        name = "optkit_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise InputError(f"cannot import {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as exc:
            raise InputError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise InputError(f"cannot import module {target!r} ({exc})") from exc
        except Exception as exc:
            raise InputError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InputError(f"{target} has no attribute {attr!r}") from None


def load_model(spec: str, weights: str | None = None) -> Any:
    """Return the nn.Module named by ``spec``. Refuses a module left in training mode."""
    torch = lazy_import("torch", extra="torch")
    if spec in zoo.names():
        model = zoo.build(spec, weights=weights)
    else:
        obj = load_module_object(spec)
        if isinstance(obj, torch.nn.Module):
            model = obj
        elif callable(obj):
            try:
                model = obj()
            except Exception as exc:
                raise InputError(f"calling {spec} failed: {type(exc).__name__}: {exc}") from exc
        else:
            raise InputError(f"{spec} is neither an nn.Module nor a callable returning one")
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
        if weights:
            zoo.load_weights_into(model, weights)
    training = [name or "<root>" for name, m in model.named_modules() if m.training]
    if training:
        raise InputError(
            f"model {spec} is in training mode ({len(training)} submodule(s), e.g. {training[0]}); "
            "call .eval() before returning it — exporting in training mode bakes in dropout and "
            "batch statistics"
        )
    return model


def source_fingerprint(spec: str, weights: str | None = None) -> str:
    """Hash of the files that define the model, for recipe cache keys."""
    from optkit.common.fileio import sha256_file

    h = hashlib.sha256(spec.encode())
    files: list[Path] = []
    if spec in zoo.names():
        files = zoo.source_files(spec)
    else:
        target, _ = _split(spec)
        if target.endswith(".py") or "/" in target:
            files = [Path(target)]
        else:
            found = importlib.util.find_spec(target.split(".")[0])
            if found is not None and found.origin:
                files = [Path(found.origin)]
    if weights:
        files.append(Path(weights))
    for f in files:
        if f.exists():
            h.update(sha256_file(f).encode())
    return h.hexdigest()
