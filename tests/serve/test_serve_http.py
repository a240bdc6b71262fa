"""A real uvicorn on 127.0.0.1 (a free port) driven over HTTP, and the load generator against it.

Every server here is ``optkit serve`` in a child process (optkit.serve.server.ServerProcess); every
loop is bounded by a count and a time; nothing but loopback is contacted."""
from __future__ import annotations

import asyncio
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="optkit[serve] is not installed")

from optkit.serve import loadtest as lt  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402
from serve_models import build_slow_model  # noqa: E402


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_server(tiny_onnx_session, tmp_path_factory):
    model = tmp_path_factory.mktemp("http") / "tiny.onnx"
    shutil.copy(tiny_onnx_session, model)
    env = {"EXECUTION_PROVIDER": "CPUExecutionProvider", "DECISION_THRESHOLD": "0.9", "MODEL_VERSION": "env-v3"}
    with ServerProcess(model, extra_args=["--no-audio", "--model-version", "flag-v4"], env=env,
                       startup_timeout=90) as srv:
        yield srv, model


def test_real_server_answers_over_http_with_env_settings_and_flags_winning(tiny_server):
    import onnxruntime as ort

    srv, model = tiny_server
    assert srv.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/ready").status_code == 200
        md = client.get("/metadata").json()
        assert md["provider_in_use"] == "CPUExecutionProvider" and md["threshold"] == 0.9
        x = np.random.default_rng(3).standard_normal((1, *TINY_SHAPE)).astype(np.float32)
        r = client.post("/verify", content=npy_bytes(x), headers={"Content-Type": "application/x-npy"})
        assert r.status_code == 200, r.text
        body = r.json()
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        expected = float(sess.run(None, {"input_mfcc": x})[0].ravel()[0])
        assert body["probability"] == pytest.approx(expected, abs=1e-6)
        assert body["threshold"] == 0.9  # DECISION_THRESHOLD from the environment
        assert body["model_version"] == "flag-v4"  # --model-version wins over MODEL_VERSION
        assert body["accepted"] == (expected >= 0.9)
        bad = client.post("/verify", content=b"[[1, 2], [3]]", headers={"Content-Type": "application/json"})
        assert bad.status_code == 422 and "ragged" in bad.json()["detail"]


def test_loadtest_cli_against_a_running_server_writes_json_and_html(tiny_server, cli_runner, tmp_path):
    srv, _ = tiny_server
    out_json, out_html = tmp_path / "load.json", tmp_path / "load.html"
    result = invoke(cli_runner, ["loadtest", srv.url, "--max", "2", "--step-seconds", "0.5", "--timeout", "5",
                                 "--json", out_json, "--html", out_html])
    assert result.exit_code == 0, result.output
    assert "saturation" in result.output and "minimum latency" in result.output
    data = json.loads(out_json.read_text())
    steps = data["steps"]
    assert [s["concurrency"] for s in steps] == [1, 2]
    assert all(s["ok"] > 0 and s["status_counts"].get("200") == s["ok"] for s in steps)
    assert data["summary"]["saturation_qps"] == pytest.approx(max(s["qps"] for s in steps), rel=1e-3)
    assert data["summary"]["min_latency_ms"] == pytest.approx(min(s["min_ms"] for s in steps), rel=1e-3)
    assert data["summary"]["sustained_qps"] == pytest.approx(float(np.median([s["qps"] for s in steps])), rel=1e-3)
    page = out_html.read_text()
    assert page.count("<svg") == 2 and "<polyline" in page


def test_loadtest_refuses_anything_but_loopback(cli_runner):
    result = invoke(cli_runner, ["loadtest", "http://10.1.2.3:8000", "--max", "1", "--step-seconds", "0.1"])
    assert result.exit_code == 1 and "only targets loopback" in result.output


def test_a_ramp_past_saturation_is_shed_with_503s_never_500s_drops_or_hangs(tmp_path):
    """A deliberately slow model behind a queue of 2: from a few concurrent users on, the excess
    must be refused at once with 503 + Retry-After while the rest is answered."""
    model = build_slow_model(tmp_path / "slow.onnx")
    with ServerProcess(model, extra_args=["--no-audio", "--max-queue", "2", "--threads", "1"],
                       startup_timeout=90) as srv:
        cfg = lt.RampConfig(start=1, step=4, max_concurrency=9, step_seconds=1.5, timeout=10, keep_going=True)
        report = lt.run_ramp(srv.url, cfg)
        totals = report.totals()
        statuses = {code for s in report.steps for code in s.status_counts}
        assert statuses <= {"200", "503"}, statuses
        assert totals["status_500"] == 0 and totals["errors"] == 0
        assert totals["dropped"] == 0 and totals["timeouts"] == 0
        assert report.steps[0].shed == 0 and report.steps[0].ok > 0  # one user: nothing to shed
        assert report.steps[-1].shed > 0 and report.steps[-1].ok > 0  # nine users, queue of 2: shed, not stalled

        async def burst() -> list:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10, trust_env=False) as client:
                body = npy_bytes(np.zeros((1, *TINY_SHAPE), np.float32))
                return await asyncio.gather(*(client.post("/verify", content=body,
                                                          headers={"Content-Type": "application/x-npy"})
                                              for _ in range(12)))

        answers = asyncio.run(burst())
        shed = [r for r in answers if r.status_code == 503]
        assert shed and all(r.status_code in (200, 503) for r in answers)
        assert all(int(r.headers["Retry-After"]) >= 1 and "busy" in r.json()["detail"] for r in shed)
        metrics = httpx.get(f"{srv.url}/metrics", timeout=10, trust_env=False).text
        rejected = [ln for ln in metrics.splitlines() if ln.startswith("optkit_rejected_total")]
        assert rejected and float(rejected[0].split()[-1]) >= len(shed)


@pytest.mark.parametrize("interleave", [False, True], ids=["in-turn", "interleaved"])
def test_loadtest_compare_serves_each_artifact(cli_runner, tiny_onnx, tmp_path, interleave):
    out = tmp_path / "compare.json"
    result = invoke(cli_runner, ["loadtest", "--compare", tiny_onnx, "--provider", "cpu,openvino", "--max", "2",
                                 "--step-seconds", "0.3", "--serve-arg=--no-audio", "--json", out]
                    + (["--interleave"] if interleave else []))
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["artifact"], r["provider"], r["error"]) for r in rows] == [("tiny.onnx", "cpu", None),
                                                                          ("tiny.onnx", "openvino", None)]
    assert rows[0]["provider_in_use"] == "CPUExecutionProvider" and rows[1]["provider_in_use"].startswith("OpenVINO")
    for row in rows:
        assert row["precision"] == "fp32" and [s["concurrency"] for s in row["run"]["steps"]] == [1, 2]
        assert row["summary"]["saturation_qps"] > 0 and row["summary"]["status_500"] == 0
    assert "sat. QPS" in result.output


def test_workers_serve_from_their_own_processes(tiny_onnx):
    import os

    with ServerProcess(tiny_onnx, extra_args=["--no-audio", "--workers", "2"], startup_timeout=90) as srv:
        with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
            md = client.get("/metadata").json()
            assert md["serving"]["pid"] != srv.proc.pid  # answered by a worker, not the supervisor
            assert md["serving"]["threads"] == max(1, (os.cpu_count() or 1) // 2)
            x = np.zeros((1, *TINY_SHAPE), np.float32)
            r = client.post("/verify", content=npy_bytes(x), headers={"Content-Type": "application/x-npy"})
            assert r.status_code == 200 and 0.0 <= r.json()["probability"] <= 1.0


def test_loadtest_compare_fails_when_no_server_could_start(cli_runner, tmp_path):
    """Every artifact refused by optkit serve (a logits model here): nothing was measured, so exit 1
    with one line, and no JSON, instead of a table of "not run" rows and exit 0."""
    from serve_models import build_user_model

    model = build_user_model(tmp_path / "logits.onnx", head="logit")
    out = tmp_path / "compare.json"
    result = invoke(cli_runner, ["loadtest", "--compare", model, "--max", "1", "--step-seconds", "0.2",
                                 "--serve-arg=--no-audio", "--json", out])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: no server started") and "logits.onnx" in last and "not a probability" in last
    assert "Traceback" not in result.output and not out.exists()


def test_streams_and_micro_batching_together_answer_every_request_right(tiny_onnx):
    """`optkit serve --streams 2 --max-batch 4`: a burst of concurrent requests with different inputs
    gets, each, ONNX Runtime's own probability for its input; /metadata reports the two streams."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    xs = [rng.standard_normal((1, *TINY_SHAPE)).astype(np.float32) for _ in range(16)]
    expected = [float(sess.run(None, {"input_mfcc": x})[0].ravel()[0]) for x in xs]
    with ServerProcess(tiny_onnx, extra_args=["--no-audio", "--streams", "2", "--threads", "2", "--max-batch", "4",
                                              "--max-queue", "32"], startup_timeout=90) as srv:
        md = httpx.get(f"{srv.url}/metadata", timeout=10, trust_env=False).json()
        assert md["serving"]["streams"] == 2 and md["runner"]["streams"] == 2 and md["runner"]["intra_op_threads"] == 1

        async def burst() -> list:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10, trust_env=False) as client:
                return await asyncio.gather(*(client.post("/verify", content=npy_bytes(x),
                                                          headers={"Content-Type": "application/x-npy"}) for x in xs))

        answers = asyncio.run(burst())
    assert [r.status_code for r in answers] == [200] * len(xs)
    assert [r.json()["probability"] for r in answers] == pytest.approx(expected, abs=1e-6)


def test_the_half_rate_step_reports_the_servers_own_tail_beside_the_clients(tiny_server):
    """After the ramp, an open-loop step at half the sustained rate: its client-side p99 and the
    server's own p99 (from each answer's latency_ms) are both reported, and the server's time is
    part of the client's, request by request, so its p99 cannot be the larger one."""
    cfg = lt.RampConfig(start=1, step=1, max_concurrency=2, step_seconds=0.6, timeout=10, half_rate_check=True)
    srv, _ = tiny_server
    report = lt.run_ramp(srv.url, cfg)
    h = report.half_rate
    assert h is not None and h.ok > 0 and h.concurrency is None and h.offered_rate > 0
    assert 0 < h.server_ms_p50 <= h.server_ms_p99 <= h.p99_ms
    half = report.summary()["half_rate"]
    assert half["server_p99_ms"] == round(h.server_ms_p99, 3) and half["p99_ms"] == round(h.p99_ms, 3)
    assert "inside the server: p99" in "\n".join(report.table_lines())


def test_loadtest_compare_measures_serving_variants_side_by_side(cli_runner, tiny_onnx, tmp_path):
    """--variant: one row per artifact and serving variant, each served with its own flags (checked
    in the server's own /metadata), the common --serve-arg going to all."""
    out = tmp_path / "variants.json"
    result = invoke(cli_runner, ["loadtest", "--compare", tiny_onnx, "--variant", "", "--variant", "--streams 2",
                                 "--variant", "--max-batch 4  --streams 2", "--serve-arg=--no-audio", "--serve-arg=--threads=2", "--max", "1",
                                 "--step-seconds", "0.3", "--interleave", "--json", out])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [(r["variant"], r["error"]) for r in rows] == [("", None), ("--streams 2", None),
                                                          ("--max-batch 4 --streams 2", None)]
    serving = [r["run"]["server"]["serving"] for r in rows]
    assert [(s["streams"], s["max_batch"]) for s in serving] == [(1, 1), (2, 1), (2, 4)]
    assert all(r["run"]["server"]["audio_input"] != "on" for r in rows)  # --serve-arg reached every server
    table = result.output[result.output.rindex("artifact"):]
    assert "serving" in table and "--max-batch 4 --streams 2" in table


def test_loadtest_variant_with_a_bad_quote_is_one_line(cli_runner, tiny_onnx):
    result = invoke(cli_runner, ["loadtest", "--compare", tiny_onnx, "--variant", "--model-version 'v1"])
    assert result.exit_code == 1 and "serving variant" in result.output and "Traceback" not in result.output
    result = invoke(cli_runner, ["loadtest", "http://127.0.0.1:9", "--variant", "--streams 2"])
    assert result.exit_code == 2 and "--compare only" in result.output


def test_one_artifact_server_speaks_v2_and_tf_serving_as_model_file_stem(tiny_server):
    import onnxruntime as ort

    srv, model = tiny_server
    x = np.random.default_rng(5).standard_normal((2, *TINY_SHAPE)).astype(np.float32)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input_mfcc": x})[0].ravel()
    with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
        body = {"id": "q1", "inputs": [{"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.ravel().tolist()}]}
        r = client.post("/v2/models/tiny/infer", json=body)
        assert r.status_code == 200 and r.json()["id"] == "q1"
        out = {o["name"]: o for o in r.json()["outputs"]}
        np.testing.assert_allclose(out["output_wvp"]["data"], want, atol=1e-6)
        assert out["accepted"]["data"] == [bool(p >= 0.9) for p in want]  # the server's threshold
        r = client.post("/v1/models/tiny/versions/1:predict", json={"instances": x.tolist()})
        np.testing.assert_allclose(np.ravel(r.json()["predictions"]), want, atol=1e-6)
        assert client.post("/v1/models/tiny/versions/2:predict", json={}).status_code == 404
        assert client.get("/v2/models/other").status_code == 404
        assert client.get("/v2/nothing/here").json() == {"error": "Not Found"}
        assert client.get("/nothing").json() == {"detail": "Not Found"}  # outside the protocols: FastAPI's shape
