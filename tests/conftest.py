"""Shared fixtures: tiny models built in code, so the suite runs in minutes on 2 cores."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

# tests/<package>/ mirror optkit's packages; the shared helpers (tiny models, fakes, the kill
# helper, the browser check) live in tests/helpers/ and are imported by module name.
HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

TINY_SHAPE = (1, 40, 241)  # the voice model's per-sample input


def build_tiny_voice_model(seed: int = 0):
    """A 4-block, width-4 version of the zoo architecture, with non-degenerate BN stats."""
    import torch

    from optkit.zoo.voice_resnet import VoiceResNet, init_nondegenerate_bn

    torch.manual_seed(seed)
    model = VoiceResNet(num_blocks=(1, 1, 1, 1), base_width=4, hidden=16)
    init_nondegenerate_bn(model, seed=seed)
    return model.eval()


def export_tiny(path: Path, seed: int = 0, n_ref: int = 16) -> Path:
    """Export the tiny model to ``path`` and write ``<stem>.reference.npz`` beside it."""
    import torch

    from optkit.verification.reference import Reference, reference_path_for, save_reference

    model = build_tiny_voice_model(seed)
    x = torch.randn(2, *TINY_SHAPE)
    torch.onnx.export(
        model, (x,), str(path), input_names=["input_mfcc"], output_names=["output_wvp"],
        dynamic_axes={"input_mfcc": {0: "batch"}, "output_wvp": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n_ref, *TINY_SHAPE)).astype(np.float32)
    with torch.no_grad():
        ys = model(torch.from_numpy(xs)).numpy()
    save_reference(reference_path_for(path), Reference({"input_mfcc": xs}, {"output_wvp": ys}))
    return path


@pytest.fixture(scope="session")
def tiny_onnx_session(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture
def tiny_onnx(tiny_onnx_session: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny fp32 model (and its reference) in the test's tmp dir."""
    import shutil

    from optkit.verification.reference import reference_path_for

    dst = tmp_path / "tiny.onnx"
    shutil.copy(tiny_onnx_session, dst)
    shutil.copy(reference_path_for(tiny_onnx_session), reference_path_for(dst))
    return dst


@pytest.fixture
def calib_dir(tmp_path: Path) -> Path:
    """32 random samples as .npy files (a calibration directory)."""
    d = tmp_path / "calib"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(32):
        np.save(d / f"s{i:03d}.npy", rng.standard_normal(TINY_SHAPE).astype(np.float32))
    return d


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance (2 CPUs, loopback) for one test module, shut down after it (the
    two-node cluster test runs `ray stop`, so no Ray instance may outlive its module)."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")
    from optkit.pipeline.distributed import ray_session

    with ray_session("local", num_cpus=2) as r:
        yield r


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


def invoke(cli_runner, args: list[str]):
    from optkit.cli import cli

    return cli_runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def listdir_names(path: Path) -> set[str]:
    return {p.name for p in Path(path).iterdir()}


def pytest_sessionfinish(session, exitstatus):
    # pytest exits 5 when nothing was collected; for CI that is a failure, not a pass.
    if exitstatus == 5:
        session.exitstatus = 1
