"""The model repository (optkit serve --model-repository), the V2 / TF Serving routes, and
verify --export-to-repository: real servers on 127.0.0.1, driven by tritonclient and httpx."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="optkit[serve] is not installed")

from optkit.serve.protocols import ProtocolError, parse_tf_request, parse_v2_request  # noqa: E402
from optkit.serve.repository import check_verified, export_version  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402

SAMPLE = (1, 40, 241)


def export(cli_runner, artifact: Path, model_dir: Path, extra: list[str] = ()) -> Path:
    reference = artifact.with_name(artifact.stem + ".reference.npz")
    result = invoke(cli_runner, ["verify", str(artifact), "--reference", str(reference),
                                 "--export-to-repository", str(model_dir), *extra])
    assert result.exit_code == 0, result.output
    line = [ln for ln in result.output.splitlines() if ln.startswith("exported ")][-1]
    return Path(line.split(" as ", 1)[1])


def expected(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_mfcc": x})[0].reshape(-1)


# -- verification and export (no server) --------------------------------------------------------

def test_export_writes_numbered_versions_and_only_a_matching_passing_report_is_servable(tiny_onnx, cli_runner,
                                                                                       tmp_path):
    model_dir = tmp_path / "repo" / "voice"
    v1 = export(cli_runner, tiny_onnx, model_dir)
    v2 = export(cli_runner, tiny_onnx, model_dir)
    assert (v1.name, v2.name) == ("1", "2")
    assert {p.name for p in v1.iterdir()} == {"tiny.onnx", "report.json", "report.html"}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]  # no temp dir left
    assert check_verified(v1 / "tiny.onnx", "cpu") == ""
    assert "not on openvino" in check_verified(v1 / "tiny.onnx", "openvino")
    # a changed artifact no longer matches its report
    data = bytearray((v2 / "tiny.onnx").read_bytes())
    (v2 / "tiny.onnx").write_bytes(bytes(data) + b"\0")
    assert "verified a different file" in check_verified(v2 / "tiny.onnx", "cpu")
    # a failing result is refused with its failure
    report = json.loads((v1 / "report.json").read_text())
    report["artifacts"][0]["passed"] = False
    report["artifacts"][0]["failures"] = ["max_abs 0.5 > 1e-4"]
    (v1 / "report.json").write_text(json.dumps(report))
    assert check_verified(v1 / "tiny.onnx", "cpu") == "failed verification on cpu: max_abs 0.5 > 1e-4"
    (v1 / "report.json").unlink()
    assert "no report.json" in check_verified(v1 / "tiny.onnx", "cpu")


def test_export_refuses_bad_names_and_leaves_nothing_when_the_report_cannot_be_written(tiny_onnx, tmp_path):
    from optkit.common.errors import InputError

    with pytest.raises(InputError, match="not a model name"):
        export_version(tmp_path / "..bad name", tiny_onnx, lambda d: None)

    def broken(d: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        export_version(tmp_path / "voice", tiny_onnx, broken)
    assert list((tmp_path / "voice").iterdir()) == []


def test_verify_export_needs_one_artifact(tiny_onnx, cli_runner, tmp_path):
    ref = tiny_onnx.with_name("tiny.reference.npz")
    result = invoke(cli_runner, ["verify", str(tiny_onnx), str(tiny_onnx), "--reference", str(ref),
                                 "--export-to-repository", str(tmp_path / "r" / "m")])
    assert result.exit_code == 2 and "takes one ARTIFACT" in result.output


# -- the protocols' parsers: hostile bodies are 400s ---------------------------------------------

def _v2(tensor: dict, header: str | None = None, extra: bytes = b"") -> None:
    body = json.dumps({"inputs": [tensor]}).encode()
    parse_v2_request(body + extra, header if header is None else str(len(body)) if header == "auto" else header,
                     "input_mfcc", SAMPLE, "float32", ["output_wvp", "accepted"])


@pytest.mark.parametrize("tensor, header, extra, match", [
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FLOAT32", "data": [0.0]}, None, b"",
     "unknown datatype"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP64", "data": [0.0]}, None, b"",
     "datatype FP64, but the model's input is FP32"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP32", "data": [0.0] * 5}, None, b"",
     "holds 9640 values, 'data' has 5"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 240], "datatype": "FP32", "data": [0.0] * 9600}, None, b"",
     "the model takes \\[-1, 1, 40, 241\\]"),
    ({"name": "input_mfcc", "shape": [1, -1, 40, 241], "datatype": "FP32", "data": []}, None, b"", "negative"),
    ({"name": "input_mfcc", "shape": [10 ** 12, 1, 40, 241], "datatype": "FP32",
      "parameters": {"binary_data_size": 10 ** 15}}, "auto", b"\0" * 16, "binary_data_size is 1000000000000000"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
     "auto", b"\0" * 8, "is 38560 bytes, binary_data_size says 8"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP32", "data": [0.0]}, "999999", b"",
     "Inference-Header-Content-Length is 999999"),
    ({"name": "../etc/passwd", "shape": [1], "datatype": "FP32", "data": [0.0]}, None, b"", "unknown input"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP32", "data": [[0.0], [1.0, 2.0]]}, None, b"",
     "ragged"),
    ({"name": "input_mfcc", "shape": [1, 1, 40, 241], "datatype": "FP32", "data": ["a"] * 9640}, None, b"",
     "numbers only"),
])
def test_hostile_v2_bodies_are_400_with_a_reason(tensor, header, extra, match):
    with pytest.raises(ProtocolError, match=match) as info:
        _v2(tensor, header, extra)
    assert info.value.status == 400


@pytest.mark.parametrize("body, match", [
    (b"{", "not valid JSON"),
    (b'{"instances": [], "inputs": []}', "either 'instances' or 'inputs'"),
    (b'{"instances": []}', "non-empty"),
    (b'{"instances": [{"other": 1}]}', "the model's input is 'input_mfcc'"),
    (b'{"inputs": [[1, 2]]}', "has shape \\[1, 2\\]"),
    (b'{"inputs": [1], "signature_name": "x"}', "unknown signature_name"),
    (b'{"instances": [[[[NaN]]]]}', "not valid JSON|NaN|shape"),
])
def test_hostile_tf_bodies_are_400_with_a_reason(body, match):
    with pytest.raises(ProtocolError, match=match) as info:
        parse_tf_request(body, "input_mfcc", SAMPLE, "float32")
    assert info.value.status == 400


@pytest.mark.parametrize("body, status, match", [
    (b'{"inputs": [' + b"[" * 40 + b"]" * 40 + b"]}", 400, "JSON nested 42 levels deep; at most 32"),
    (b'{"instances": [' + b"0," * 1_000_001 + b"0]}", 413, "about 1000002 values; at most 1000000"),
    (b'{"inputs": [{"name": "input_mfcc", "shape": [1], "datatype": "FP32", "data": [NaN]}]}', 400, "not valid JSON"),
    (b'{"inputs": [1e999999]}', 400, "not valid JSON|has shape"),
    (b'\xff\xfe{"inputs": []}', 400, "not valid JSON"),
])
def test_protocol_bodies_are_bounded_before_they_are_parsed(body, status, match):
    """payload.check_json_size runs before either protocol's JSON parser: a deep or huge body is a
    4xx with a reason (no RecursionError, no tree of a million values), as are what orjson refuses."""
    for parse in (lambda: parse_v2_request(body, None, "input_mfcc", SAMPLE, "float32", ["output_wvp"]),
                  lambda: parse_tf_request(body, "input_mfcc", SAMPLE, "float32")):
        with pytest.raises(ProtocolError, match=match) as info:
            parse()
        assert info.value.status == status


@pytest.mark.parametrize("codec", ["json", "orjson"])
def test_both_json_codecs_parse_and_answer_the_same(codec, monkeypatch):
    from optkit.serve import protocols

    monkeypatch.setattr(protocols, "loads", protocols.json_codec(codec)[0])
    monkeypatch.setattr(protocols, "dumps", protocols.json_codec(codec)[1])
    x = np.random.default_rng(3).standard_normal((2, *SAMPLE)).astype(np.float32)
    body = json.dumps({"id": "r1", "inputs": [{"name": "input_mfcc", "shape": list(x.shape), "datatype": "FP32",
                                              "data": x.ravel().tolist()}]}).encode()
    req = parse_v2_request(body, None, "input_mfcc", SAMPLE, "float32", ["output_wvp", "accepted"])
    assert req.x.dtype == np.float32 and np.array_equal(req.x, x) and req.id == "r1"
    tf, form = parse_tf_request(json.dumps({"instances": x.tolist()}).encode(), "input_mfcc", SAMPLE, "float32")
    assert form == "row" and np.array_equal(tf, x)
    p = np.array([[0.25], [0.75]], np.float32)
    out, size = protocols.v2_response("voice", "1", req, {"output_wvp": p, "accepted": p >= 0.5})
    answer = json.loads(out)
    assert size is None and answer["id"] == "r1" and answer["outputs"][0]["data"] == [0.25, 0.75]
    assert answer["outputs"][1] == {"name": "accepted", "datatype": "BOOL", "shape": [2, 1], "data": [False, True]}


# -- a real repository server --------------------------------------------------------------------

@pytest.fixture
def repo(tiny_onnx, cli_runner, tmp_path):
    root = tmp_path / "models"
    export(cli_runner, tiny_onnx, root / "voice")  # version 1: verified
    unverified = root / "voice" / "2"
    unverified.mkdir()
    shutil.copy(tiny_onnx, unverified / "tiny.onnx")  # version 2: no report
    return root, tiny_onnx


def _wait(pred, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def test_repository_serves_only_verified_versions_to_the_real_clients_and_follows_the_directory(repo, cli_runner):
    tritonclient = pytest.importorskip("tritonclient.http", reason="pip install 'optkit[serve]' (tritonclient)")
    root, model = repo
    args = ["--model-repository", str(root), "--no-audio", "--poll-interval", "0.2", "--keep-versions", "1"]
    with ServerProcess(None, extra_args=args, startup_timeout=90) as srv, \
            httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as c:
        md = c.get("/v2/models/voice").json()
        assert md["versions"] == ["1"]  # version 2 is newer but unverified
        states = {v["version"]: v for v in md["optkit"]["versions"]}
        assert states["2"]["state"] == "REFUSED" and "no report.json" in states["2"]["reason"]
        assert "voice version 2: REFUSED (no report.json" in srv.log_text()
        r = c.post("/v2/models/voice/versions/2/infer", json={"inputs": []})
        assert r.status_code == 404 and "REFUSED" in r.json()["error"]

        client = tritonclient.InferenceServerClient(srv.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("voice")
        x = np.random.default_rng(1).standard_normal((3, *TINY_SHAPE)).astype(np.float32)
        want = expected(model, x)
        for binary in (True, False):
            inp = tritonclient.InferInput("input_mfcc", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            outs = [tritonclient.InferRequestedOutput("output_wvp", binary_data=binary),
                    tritonclient.InferRequestedOutput("accepted", binary_data=binary)]
            res = client.infer("voice", [inp], outputs=outs, request_id=f"req-{binary}")
            assert res.get_response()["id"] == f"req-{binary}" and res.get_response()["model_version"] == "1"
            np.testing.assert_allclose(res.as_numpy("output_wvp").ravel(), want, atol=1e-6)
            assert (res.as_numpy("accepted").ravel() == (want >= 0.5)).all()
        tf = c.post("/v1/models/voice:predict", json={"instances": x.tolist()})
        np.testing.assert_allclose(np.array(tf.json()["predictions"]).ravel(), want, atol=1e-6)
        tf = c.post("/v1/models/voice/versions/1:predict", json={"inputs": {"input_mfcc": x[:1].tolist()}})
        np.testing.assert_allclose(np.array(tf.json()["outputs"]).ravel(), want[:1], atol=1e-6)
        status = c.get("/v1/models/voice").json()["model_version_status"]
        assert {s["version"]: s["state"] for s in status} == {"2": "END", "1": "AVAILABLE"}

        # hostile requests: 4xx in each protocol's error shape, never a 500
        for path, body in [("/v2/models/nope/infer", b"{}"), ("/v2/models/voice/versions/99/infer", b"{}"),
                           ("/v2/models/voice/versions/..%2F1/infer", b"{}"), ("/v2/models/voice/infer", b"[1"),
                           ("/v1/models/..:predict", b"{}"), ("/v1/models/voice:predict", b'{"instances": 3}'),
                           ("/v1/models/voice/versions/abc:predict", b"{}")]:
            r = c.post(path, content=body)
            assert 400 <= r.status_code < 500 and set(r.json()) == {"error"}, (path, r.status_code, r.text)
        r = c.post("/v2/models/voice/infer", content=b'{"inputs": []}' + b"\0" * 10,
                   headers={"Inference-Header-Content-Length": "14"})
        assert r.status_code == 400 and "one input" in r.json()["error"]

        # a new verified version is picked up while serving; a removed one falls back, the service goes on
        v3 = root / "voice" / ".incoming"
        shutil.copytree(root / "voice" / "1", v3)
        v3.rename(root / "voice" / "3")
        took = _wait(lambda: c.get("/v2/models/voice").json()["versions"] == ["3"], 5.0)
        assert took < 5.0
        assert client.infer("voice", [inp]).get_response()["model_version"] == "3"
        metrics = c.get("/metrics").text
        assert 'optkit_model_version_state{model="voice",state="AVAILABLE",verified="true",version="3"} 1.0' in metrics
        assert 'state="UNLOADED",verified="true",version="1"' in metrics  # --keep-versions 1
        shutil.rmtree(root / "voice" / "3")
        _wait(lambda: c.get("/v2/models/voice").json()["versions"] == ["1"], 5.0)
        assert c.post("/v2/models/voice/versions/3/infer", json={}).status_code == 404
        assert client.infer("voice", [inp]).get_response()["model_version"] == "1"
        # a broken version (not an ONNX file) with --allow-unverified off: refused, others go on
        bad = root / "voice" / "4"
        bad.mkdir()
        (bad / "x.onnx").write_bytes(b"not onnx")
        assert c.post("/v2/repository/index").status_code == 200
        states = {v["version"]: v["state"] for v in c.get("/v2/models/voice").json()["optkit"]["versions"]}
        assert states["4"] == "REFUSED"
        assert client.infer("voice", [inp]).get_response()["model_version"] == "1"


def test_triton_repository_extension_unloads_and_loads_a_model(repo):
    tritonclient = pytest.importorskip("tritonclient.http", reason="pip install 'optkit[serve]' (tritonclient)")
    from tritonclient.utils import InferenceServerException

    root, model = repo
    args = ["--model-repository", str(root), "--no-audio", "--poll-interval", "0.2"]
    x = np.zeros((1, *TINY_SHAPE), np.float32)
    with ServerProcess(None, extra_args=args, startup_timeout=90) as srv, \
            httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as c:
        client = tritonclient.InferenceServerClient(srv.url.removeprefix("http://"))
        assert "model_repository" in client.get_server_metadata()["extensions"]
        inp = tritonclient.InferInput("input_mfcc", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.unload_model("voice")
        assert not client.is_model_ready("voice") and not client.is_server_ready()
        assert c.get("/ready").status_code == 503
        time.sleep(0.6)  # scans (every 0.2 s) leave it unloaded
        with pytest.raises(InferenceServerException, match="unloaded on request"):
            client.infer("voice", [inp])
        r = c.post("/verify", json={"mfcc": x[0].tolist()})
        assert r.status_code == 404 and "unloaded on request" in r.json()["detail"]
        states = {v["version"]: v["state"] for v in c.post("/v2/repository/index").json()}
        assert states == {"1": "UNLOADED", "2": "REFUSED"}
        client.load_model("voice")
        assert client.is_model_ready("voice") and client.is_server_ready()
        assert client.infer("voice", [inp]).get_response()["model_version"] == "1"
        # refusals in the V2 error shape
        with pytest.raises(InferenceServerException, match="'nope' is not in the repository"):
            client.unload_model("nope")
        with pytest.raises(InferenceServerException, match="parameter 'config' is not supported"):
            client.load_model("voice", config='{"backend": "onnxruntime"}')
        for path, body in [("/v2/repository/models/voice/load", b"[1"),
                           ("/v2/repository/models/voice/unload", b'{"parameters": {"unload_dependents": "yes"}}'),
                           ("/v2/repository/models/voice/unload", b'{"parameters": 3}')]:
            r = c.post(path, content=body)
            assert r.status_code == 400 and set(r.json()) == {"error"}, (path, r.text)
        assert client.is_model_ready("voice")  # the refused unloads changed nothing


def test_allow_unverified_serves_and_marks_them(repo):
    root, _ = repo
    (root / "voice" / "3").mkdir()
    (root / "voice" / "3" / "y.onnx").write_bytes(b"not onnx")  # broken: UNAVAILABLE, never served
    args = ["--model-repository", str(root), "--no-audio", "--allow-unverified", "--keep-versions", "3"]
    with ServerProcess(None, extra_args=args, startup_timeout=90) as srv, \
            httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as c:
        versions = {v["version"]: v for v in c.get("/v2/models/voice").json()["optkit"]["versions"]}
        assert versions["3"]["state"] == "UNAVAILABLE" and "failed to load" in versions["3"]["reason"]
        assert versions["2"]["state"] == "AVAILABLE" and versions["2"]["verified"] is False
        assert "--allow-unverified" in versions["2"]["reason"]
        assert versions["1"]["state"] == "AVAILABLE" and versions["1"]["verified"] is True
        x = np.zeros((1, *TINY_SHAPE), np.float32)
        r = c.post("/v1/models/voice:predict", json={"instances": x.tolist()})
        assert r.status_code == 200
        r = c.post("/v2/models/voice/versions/3/infer", json={})
        assert r.status_code == 404 and "UNAVAILABLE" in r.json()["error"]
        assert 'state="AVAILABLE",verified="false",version="2"' in c.get("/metrics").text


def test_serve_needs_an_artifact_or_a_repository(cli_runner, tmp_path):
    assert invoke(cli_runner, ["serve"]).exit_code == 2
    r = invoke(cli_runner, ["serve", "--model-repository", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "is not a directory" in r.output
    r = invoke(cli_runner, ["serve", "--model-repository", str(tmp_path), "--workers", "2"])
    assert r.exit_code == 2


# -- /verify on the repository server (in-process, no socket) -------------------------------------

def test_verify_on_the_repository_server_chooses_model_and_version_by_query(repo, cli_runner):
    import io
    import warnings

    from optkit.serve.repository_app import create_repository_app
    from optkit.serve.settings import resolve_settings

    with warnings.catch_warnings():  # starlette's TestClient warns about its httpx use on import
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    root, model = repo
    settings = resolve_settings(str(root), threshold=0.5, accept_audio=False, environ={})
    x = np.random.default_rng(2).standard_normal((1, *TINY_SHAPE)).astype(np.float32)
    want = float(expected(model, x)[0])
    npy = io.BytesIO()
    np.save(npy, x[0])
    with TestClient(create_repository_app(settings, root, poll_s=0)) as c:
        # one model: /verify needs no query; the same answer as the single-artifact server's
        r = c.post("/verify", json={"mfcc": x[0].tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == "voice/1" and abs(body["probability"] - want) < 1e-5
        assert body["accepted"] == (body["probability"] >= 0.5) and body["threshold"] == 0.5
        assert {"latency_ms", "inference_ms", "queue_ms", "batch_size", "decision"} <= set(body)
        r = c.post("/verify?model=voice&version=1", content=npy.getvalue(),
                   headers={"Content-Type": "application/x-npy"})
        assert r.status_code == 200 and abs(r.json()["probability"] - want) < 1e-5
        # refusals: /verify's error shape ({"detail": one line}), never a 500
        for query, status, match in [("?version=2", 404, "version 2 is REFUSED: no report.json"),
                                     ("?version=7", 404, "has no version 7"), ("?version=abc", 400, "not a version"),
                                     ("?model=nope", 404, "'nope' is not in the repository")]:
            r = c.post("/verify" + query, json={"mfcc": x[0].tolist()})
            assert r.status_code == status and match in r.json()["detail"], (query, r.status_code, r.text)
        r = c.post("/verify", json={"mfcc": [[1.0, 2.0]]})
        assert r.status_code == 422 and "expects one sample" in r.json()["detail"]
        r = c.post("/verify", content=b"RIFF....WAVE", headers={"Content-Type": "audio/wav"})
        assert r.status_code == 415 and "audio is not accepted" in r.json()["detail"]
        # several models: a 4xx naming them, until one is chosen
        export(cli_runner, model, root / "other")
        assert c.post("/v2/repository/index").status_code == 200
        r = c.post("/verify", json={"mfcc": x[0].tolist()})
        assert r.status_code == 400 and "several models (other, voice)" in r.json()["detail"]
        r = c.post("/verify?model=other", json={"mfcc": x[0].tolist()})
        assert r.status_code == 200 and r.json()["model_version"] == "other/1"
        assert 'optkit_requests_total{endpoint="/verify",status="200"} 3.0' in c.get("/metrics").text
