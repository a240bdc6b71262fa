"""Deterministic data split, brief training and ONNX export of the suite's models (cached).

The labelled bundled data (calibration_data/val.npz, 576 samples, y = enrolled speaker or not) is
split once with a seeded permutation: 288 samples to train on, 192 for int8 calibration (the
search holds its own validation part out of these) and 96 test samples the search never sees.
Each model trains for ``STEPS`` Adam steps on 2 threads with seeded initialisation and batches and
torch's deterministic algorithms (one to four minutes each here at full width), then is exported
to ONNX (opset 17, dynamic batch). Weights and models are cached under
benchmarks/cache/model_suite/ (git-ignored), keyed by the sha256 of this file, models.py and the
data; ``width``/``steps``/``cache`` make the tiny configuration the tests train in seconds.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DATA = ROOT / "calibration_data" / "val.npz"
CACHE = ROOT / "benchmarks" / "cache" / "model_suite"
STEPS, BATCH, LR = 60, 32, 3e-3


def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = np.load(DATA)
    x, y = d["x"].astype(np.float32), d["y"].astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    parts = {"train": order[:288], "calib": order[288:480], "test": order[480:]}
    return {k: (x[np.sort(v)], y[np.sort(v)]) for k, v in parts.items()}


def key() -> str:
    h = hashlib.sha256()
    for p in (HERE / "models.py", Path(__file__).resolve(), DATA):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def train(name: str, data: dict, width: float = 1.0, steps: int = STEPS, batch: int = BATCH):
    """(the trained module in eval mode, its last loss): seeded, torch's deterministic algorithms."""
    import torch

    from benchmarks.suite_models import models

    torch.manual_seed(0)
    torch.set_num_threads(2)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(name, data, width, steps, batch)
    finally:
        torch.use_deterministic_algorithms(was)


def _train(name: str, data: dict, width: float, steps: int, batch: int):
    import torch

    from benchmarks.suite_models import models

    x, y = (torch.from_numpy(a) for a in data["train"])
    mean, std = x[:, 0].mean((0, 2)), x[:, 0].std((0, 2))
    model = models.build(name, mean, std, width)
    kind = model.kind
    opt = torch.optim.Adam(model.parameters(), lr=getattr(model, "lr", LR))
    g = torch.Generator().manual_seed(1)
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb, yb = x[idx], y[idx].float()
        if kind == "embedding":
            p = torch.sigmoid(model.head(model.embed(xb) * 8.0))[:, 0]
        elif kind == "frames":
            p = model(xb)
            yb = yb[:, None].expand_as(p)
        else:
            p = model(xb)[:, 0]
        loss = torch.nn.functional.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, float(loss.detach())


def train_and_export(name: str, data: dict, log=print, width: float = 1.0, steps: int = STEPS,
                     cache: Path | None = None, batch: int = BATCH) -> tuple[Path, str]:
    """The model's ONNX file (trained and exported on first use) and its output kind."""
    import torch

    from benchmarks.suite_models import models

    tag = "" if (width, steps, batch) == (1.0, STEPS, BATCH) else f".w{width:g}s{steps}b{batch}"
    out = (cache or CACHE) / key() / f"{name}{tag}.onnx"
    kind = models.build(name, torch.zeros(models.N_MFCC), torch.ones(models.N_MFCC), width).kind
    if out.exists():
        return out, kind
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, loss = train(name, data, width, steps, batch)
    log(f"{name}: trained {steps} steps in {time.perf_counter() - t0:.1f} s (last loss {loss:.3f})")
    x = torch.from_numpy(data["train"][0][:2])
    torch.save(model.state_dict(), out.with_suffix(".pt"))
    tmp = out.with_suffix(".tmp.onnx")
    torch.onnx.export(model, (x,), str(tmp), input_names=["input_mfcc"], output_names=["output"],
                      dynamic_axes={"input_mfcc": {0: "batch"}, "output": {0: "batch"}}, opset_version=17,
                      dynamo=False)
    tmp.replace(out)
    return out, kind
