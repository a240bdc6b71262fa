"""Sharded verification on a real local Ray instance: the report is identical to one process."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import export_tiny, invoke
from optkit.pipeline.distributed import RayExecutor, shard_bounds
from optkit.verification.reference import load_reference, reference_path_for
from optkit.verification.verify import verify_artifacts

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")


def comparable(report_json: dict) -> dict:
    """A report without what legitimately differs between runs: wall time, creation time, how
    the outputs were computed, and the runtime's thread count (one per Ray worker)."""
    r = json.loads(json.dumps(report_json))
    r.pop("created"), r.pop("execution")
    for a in r["artifacts"]:
        a.pop("seconds")
        a["runner"].pop("threads", None)
        a.pop("runtime_text", None)  # the runner description in words, threads included
    return r


@pytest.fixture(scope="module")
def model_and_ref(tmp_path_factory):
    path = export_tiny(tmp_path_factory.mktemp("dist") / "tiny.onnx", n_ref=40)
    return path, load_reference(reference_path_for(path))


def test_shard_bounds_cover_the_input_in_order_on_batch_boundaries():
    for n, batch, shards in [(40, 4, 3), (41, 4, 8), (5, 32, 4), (100, 7, 100), (1, 1, 1)]:
        bounds = shard_bounds(n, batch, shards)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(start % batch == 0 for start, _ in bounds)
        assert len(bounds) <= shards
    assert shard_bounds(0, 4, 2) == []


@pytest.mark.parametrize("shards", [1, 2, 8])
def test_sharded_report_is_identical_to_single_process(ray_local, model_and_ref, shards):
    path, ref = model_and_ref
    local = verify_artifacts([path], ref, batch_size=4, threshold=0.5)
    ex = RayExecutor(ray_local, workers=2, shards=shards)
    sharded = verify_artifacts([path], ref, batch_size=4, threshold=0.5, executor=ex)
    assert sharded.execution["engine"] == "ray" and sharded.execution["workers"] == 2
    assert comparable(sharded.to_json()) == comparable(local.to_json())
    assert (sharded.results[0].values == local.results[0].values).all()  # bit-identical outputs


def test_a_killed_worker_is_retried_and_the_result_is_unchanged(ray_local, model_and_ref):
    path, ref = model_and_ref
    killed: list[int] = []

    def kill_one_worker(done: int, total: int) -> None:
        if not killed:  # after the first shard comes back, SIGKILL a worker process
            killed.append(ex.actor_pids[-1])
            os.kill(ex.actor_pids[-1], signal.SIGKILL)

    ex = RayExecutor(ray_local, workers=2, shards=10, on_shard=kill_one_worker)
    local = verify_artifacts([path], ref, batch_size=4)
    sharded = verify_artifacts([path], ref, batch_size=4, executor=ex)
    assert killed, "the test did not kill a worker"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # the process really is gone
    assert comparable(sharded.to_json()) == comparable(local.to_json())


def test_cli_verify_with_ray_writes_the_same_report(ray_local, model_and_ref, cli_runner, tmp_path):
    path, _ = model_and_ref
    ref = reference_path_for(path)
    a = invoke(cli_runner, ["verify", path, "--reference", ref, "--batch-size", "4", "--report-dir", tmp_path / "a"])
    b = invoke(cli_runner, ["verify", path, "--reference", ref, "--batch-size", "4", "--report-dir", tmp_path / "b",
                            "--ray", "--shards", "3"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja = json.loads((tmp_path / "a" / "report.json").read_text())
    jb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert jb["execution"]["engine"] == "ray"
    assert comparable(ja) == comparable(jb)


def test_a_failing_gate_still_exits_3_under_ray(ray_local, model_and_ref, cli_runner):
    path, _ = model_and_ref
    res = invoke(cli_runner, ["verify", path, "--reference", reference_path_for(path), "--ray",
                              "--gate", "fp32.max_abs=1e-12"])
    assert res.exit_code == 3, res.output


@pytest.mark.parametrize("address", ["127.0.0.1:1", "ray://127.0.0.1:1", "not-an-address"])
def test_unreachable_cluster_is_one_clear_line(cli_runner, model_and_ref, address):
    path, _ = model_and_ref
    res = cli_runner.invoke(__import__("optkit.cli", fromlist=["cli"]).cli,
                            ["verify", str(path), "--reference", str(reference_path_for(path)), "--ray", address])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error:") and res.output.count("\n") == 1, res.output
    assert "Ray cluster" in res.output and "Traceback" not in res.output


def test_missing_ray_gives_the_install_hint(cli_runner, model_and_ref, monkeypatch):
    path, _ = model_and_ref
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    res = cli_runner.invoke(__import__("optkit.cli", fromlist=["cli"]).cli,
                            ["verify", str(path), "--reference", str(reference_path_for(path)), "--ray"])
    assert res.exit_code == 1
    assert "optkit[ray]" in res.output


def test_a_worker_error_is_the_same_one_line_error(ray_local, cli_runner, tmp_path):
    """An artifact the runner cannot load fails inside the worker; the user sees optkit's line."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    ref = tmp_path / "ref.npz"
    _, good_ref = export_tiny(tmp_path / "t.onnx", n_ref=4), reference_path_for(tmp_path / "t.onnx")
    ref.write_bytes(good_ref.read_bytes())
    local = invoke(cli_runner, ["verify", bad, "--reference", ref])
    remote = invoke(cli_runner, ["verify", bad, "--reference", ref, "--ray"])
    assert local.exit_code == remote.exit_code == 1
    assert remote.output.strip().splitlines()[-1] == local.output.strip().splitlines()[-1]


def test_recipe_ray_key_gives_the_same_report(ray_local, cli_runner, tmp_path):
    from test_recipe import RECIPE, MODELS

    text = RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=1)
    (tmp_path / "plain.yaml").write_text(text)
    (tmp_path / "ray.yaml").write_text(text + "ray: {address: local, workers: 2, shards: 4}\n")
    a = invoke(cli_runner, ["run", tmp_path / "plain.yaml", "-o", tmp_path / "a"])
    b = invoke(cli_runner, ["run", tmp_path / "ray.yaml", "-o", tmp_path / "b"])
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    ja = json.loads((tmp_path / "a" / "report.json").read_text())
    jb = json.loads((tmp_path / "b" / "report.json").read_text())
    assert jb["execution"]["engine"] == "ray" and jb["execution"]["workers"] == 2
    for j in (ja, jb):  # artifact paths differ only by the output directory
        for art in j["artifacts"]:
            art["path"] = Path(art["path"]).name
        j["reference"]["path"] = Path(j["reference"]["path"]).name
    assert comparable(ja) == comparable(jb)


@pytest.mark.parametrize("value, message", [
    ("ray: {workers: 0}", "ray.workers must be a whole number"),
    ("ray: {adress: auto}", "unknown ray key 'adress'"),
    ("ray: [1, 2]", "'ray' must be true, an address, or a mapping"),
])
def test_bad_ray_setting_in_a_recipe_is_one_line_with_its_line(cli_runner, tmp_path, value, message):
    from test_recipe import RECIPE, MODELS

    (tmp_path / "r.yaml").write_text(RECIPE.format(model=f"{MODELS}:tiny_voice", check_runs=1) + value + "\n")
    res = invoke(cli_runner, ["run", tmp_path / "r.yaml", "-o", tmp_path / "out"])
    assert res.exit_code == 1
    assert message in res.output and "line 13" in res.output, res.output
    assert not (tmp_path / "out").exists()
