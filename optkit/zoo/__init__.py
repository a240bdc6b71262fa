"""Built-in models, addressed by name from the CLI and recipes (``optkit export voice-resnet``).

Importing this package does not import torch; :func:`build` does.

May import: optkit.common, optkit.data (the training script reads MFCC samples).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.common.errors import InputError, first_line
from optkit.common.lazy import lazy_import

ZOO_DIR = Path(__file__).resolve().parent
WEIGHTS = {"voice-resnet": ZOO_DIR / "weights" / "voice_resnet.pt", "xor": ZOO_DIR / "weights" / "xor.pt"}


def names() -> list[str]:
    return ["voice-resnet", "voice-resnet-seed", "xor"]


def describe(name: str) -> str:
    return {
        "voice-resnet": "Bottleneck ResNet [2,2,2,2], widths 16-128, sigmoid Predictor head (bundled trained weights)",
        "voice-resnet-seed": "Bottleneck ResNet [8,8,36,3], widths 64-512 (production size, untrained, for speed/memory work)",
        "xor": "2-2-1 dense sigmoid network trained on the four XOR rows with Adam (the dense-network lesson; input (N, 2))",
    }[name]


def build(name: str, weights: str | Path | None = None) -> Any:
    """Build a zoo model in eval mode."""
    lazy_import("torch", extra="torch")
    if name == "xor":
        from optkit.zoo import xor

        return xor.build(weights)
    from optkit.zoo import voice_resnet as vr

    torch = lazy_import("torch", extra="torch")
    if name == "voice-resnet":
        torch.manual_seed(0)  # deterministic init when no weights are loaded
        model = vr.VoiceResNet(num_blocks=(2, 2, 2, 2), base_width=16)
        path = Path(weights) if weights else WEIGHTS["voice-resnet"]
        if path.exists() or weights:
            load_weights_into(model, path)
        else:
            vr.init_nondegenerate_bn(model, seed=0)
    elif name == "voice-resnet-seed":
        torch.manual_seed(0)
        model = vr.VoiceResNet(num_blocks=(8, 8, 36, 3), base_width=64)
        vr.init_nondegenerate_bn(model, seed=0, mfcc_scale=True)
    else:
        raise InputError(f"unknown zoo model {name!r}; built-in models: {', '.join(names())}")
    return model.eval()


def load_weights_into(model: Any, weights: str | Path) -> None:
    """Load a state_dict file (optionally {"model": state_dict}) into ``model``; every way the
    file can be wrong (missing, empty, not a torch file, an ONNX model, keys or shapes that do
    not fit) is one InputError naming it."""
    torch = lazy_import("torch", extra="torch")
    path = Path(weights)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"weights file {path} is empty")
    if path.suffix.lower() == ".onnx":
        raise InputError(f"weights file {path} is an ONNX model; --weights takes a PyTorch state_dict (.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip), EOFError, ...
        raise InputError(f"weights file {path} is not a readable PyTorch state_dict "
                         f"({type(exc).__name__}: {first_line(exc)[:200]})") from exc
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise InputError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except Exception as exc:  # missing/unexpected keys, size mismatch
        raise InputError(f"weights file {path} does not fit the model: {' '.join(str(exc).split())[:300]}") from exc


def source_files(name: str) -> list[Path]:
    """Files whose content defines the zoo model (used in cache keys)."""
    if name == "xor":
        return [ZOO_DIR / "xor.py", ZOO_DIR / "__init__.py", WEIGHTS["xor"]]
    files = [ZOO_DIR / "voice_resnet.py", ZOO_DIR / "__init__.py"]
    if name == "voice-resnet" and WEIGHTS["voice-resnet"].exists():
        files.append(WEIGHTS["voice-resnet"])
    return files
