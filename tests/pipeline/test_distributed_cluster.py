"""A two-node Ray cluster on this machine (`ray start --head` + `ray start --address`, loopback
only, token-authenticated) running a sharded `optkit verify`; the report equals one process's."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import export_tiny
from test_distributed import comparable
from optkit.verification.reference import reference_path_for

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(tmp_path):
    if RAY is None:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       env=env, check=True, capture_output=True, timeout=240)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common],
                       env=env, check=True, capture_output=True, timeout=240)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_sharded_verify_on_a_two_node_cluster(two_node_cluster, tmp_path):
    address, env = two_node_cluster
    model = export_tiny(tmp_path / "tiny.onnx", n_ref=24)
    ref = reference_path_for(model)
    base = [sys.executable, "-m", "optkit", "verify", str(model), "--reference", str(ref), "--batch-size", "4"]
    local = subprocess.run([*base, "--report-dir", str(tmp_path / "local")], env=env, capture_output=True,
                           text=True, timeout=300)
    remote = subprocess.run([*base, "--report-dir", str(tmp_path / "cluster"), "--ray", address, "--shards", "4"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    a = json.loads((tmp_path / "local" / "report.json").read_text())
    b = json.loads((tmp_path / "cluster" / "report.json").read_text())
    assert b["execution"]["engine"] == "ray" and b["execution"]["nodes"] == 2
    assert comparable(a) == comparable(b)
