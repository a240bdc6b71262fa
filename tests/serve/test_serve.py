"""optkit serve: settings, request parsing, the app in-process (no socket), and a real uvicorn
on 127.0.0.1 driven over HTTP (bounded loops, loopback only)."""
from __future__ import annotations

import asyncio
import io
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke
from optkit.common.errors import InputError

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")

from optkit.serve.payload import RequestRejected, body_kind, fit_shape, from_json, from_npy  # noqa: E402
from optkit.serve.settings import resolve_settings  # noqa: E402
from serve_models import FakeVoiceRunner  # noqa: E402


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def ort_probability(path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(sess.run(None, {"input_mfcc": x.reshape(1, *TINY_SHAPE)})[0].ravel()[0])


SAMPLE = np.random.default_rng(7).standard_normal(TINY_SHAPE).astype(np.float32)


# -- settings ------------------------------------------------------------------------------------
def test_environment_variables_are_honoured_and_flags_win():
    env = {"EXECUTION_PROVIDER": "OpenVINOExecutionProvider", "DECISION_THRESHOLD": "0.7", "MODEL_VERSION": "v7"}
    s = resolve_settings("m.onnx", environ=env)
    assert (s.provider, s.threshold, s.model_version) == ("openvino", 0.7, "v7")
    s = resolve_settings("m.onnx", provider="CUDAExecutionProvider", threshold=0.2, model_version="v8", environ=env)
    assert (s.provider, s.threshold, s.model_version) == ("cuda", 0.2, "v8")
    assert resolve_settings("m.onnx", environ={"EXECUTION_PROVIDER": "TensorrtExecutionProvider"}).provider == "tensorrt"
    assert resolve_settings("m.onnx", environ={}).provider == "cpu"
    assert resolve_settings("m.engine", environ={}).provider == "tensorrt"


@pytest.mark.parametrize("env, message", [
    ({"EXECUTION_PROVIDER": "ROCMExecutionProvider"}, "EXECUTION_PROVIDER 'ROCMExecutionProvider' is not a known provider"),
    ({"DECISION_THRESHOLD": "high"}, "DECISION_THRESHOLD 'high' is not a number"),
    ({"DECISION_THRESHOLD": "1.5"}, "between 0 and 1"),
    ({"DECISION_THRESHOLD": "nan"}, "between 0 and 1"),
])
def test_bad_environment_values_are_named(env, message):
    with pytest.raises(InputError, match=message):
        resolve_settings("m.onnx", environ=env)


def test_output_kind_comes_from_its_environment_variable_and_the_flag_wins():
    assert resolve_settings("m.onnx", environ={}).output_kind == "auto"
    assert resolve_settings("m.onnx", environ={"OUTPUT_KIND": "logit"}).output_kind == "logit"
    assert resolve_settings("m.onnx", environ={"OUTPUT_KIND": " Probability "}).output_kind == "probability"
    assert resolve_settings("m.onnx", environ={"OUTPUT_KIND": ""}).output_kind == "auto"  # the images' empty default
    assert resolve_settings("m.onnx", output_kind="probability", environ={"OUTPUT_KIND": "logit"}).output_kind == "probability"
    with pytest.raises(InputError, match=r"^OUTPUT_KIND 'logits' is not an output kind; use auto, probability, logit$"):
        resolve_settings("m.onnx", environ={"OUTPUT_KIND": "logits"})


def test_serve_cli_honours_output_kind_from_the_environment(cli_runner, tiny_onnx, monkeypatch):
    import optkit.serve.server as server

    seen = []
    monkeypatch.setattr(server, "run_server", lambda settings, **kw: seen.append(settings.output_kind))
    assert invoke_env(cli_runner, ["serve", tiny_onnx], {"OUTPUT_KIND": "logit"}).exit_code == 0
    assert invoke_env(cli_runner, ["serve", tiny_onnx, "--output-kind", "auto"], {"OUTPUT_KIND": "logit"}).exit_code == 0
    assert seen == ["logit", "auto"]
    bad = invoke_env(cli_runner, ["serve", tiny_onnx], {"OUTPUT_KIND": "raw"})
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert [ln for ln in bad.output.splitlines() if ln] == [
        "Error: OUTPUT_KIND 'raw' is not an output kind; use auto, probability, logit"]
    assert seen == ["logit", "auto"]
    assert "$OUTPUT_KIND" in invoke_env(cli_runner, ["serve", "--help"], {}).output


def invoke_env(cli_runner, args, env):
    from optkit.cli import cli

    return cli_runner.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def test_engine_file_on_a_cpu_provider_is_refused():
    with pytest.raises(InputError, match="TensorRT engine"):
        resolve_settings("m.engine", provider="cpu", environ={})


# -- request bodies ------------------------------------------------------------------------------
def test_body_kind_from_type_or_first_bytes():
    assert body_kind("application/json; charset=utf-8", b"[1]") == "json"
    assert body_kind("application/x-npy", b"") == "npy"
    assert body_kind(None, npy_bytes(SAMPLE)) == "npy"
    assert body_kind("", b"RIFF....WAVE") == "audio"
    assert body_kind("audio/x-wav", b"") == "audio"
    assert body_kind("multipart/form-data; boundary=x", b"") == "multipart"
    with pytest.raises(RequestRejected) as e:
        body_kind("image/png", b"")
    assert e.value.status == 415


def test_accepted_shapes_all_become_one_batch_of_one():
    for x in (SAMPLE, SAMPLE[None], SAMPLE[0]):
        assert fit_shape(x, TINY_SHAPE).shape == (1, *TINY_SHAPE)
    with pytest.raises(RequestRejected) as e:
        fit_shape(np.zeros((2, *TINY_SHAPE), np.float32), TINY_SHAPE)
    assert e.value.status == 422 and "shape (2, 1, 40, 241)" in str(e.value)


def test_pickled_npy_is_refused_without_unpickling():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(RequestRejected, match="pickled object arrays are not accepted"):
        from_npy(buf.getvalue(), TINY_SHAPE, "float32")


def test_json_numbers_become_the_model_dtype():
    x = from_json(json.dumps({"mfcc": SAMPLE.tolist()}).encode(), TINY_SHAPE, "float32")
    assert x.dtype == np.float32 and np.array_equal(x[0], SAMPLE)


# -- the app in-process (no socket) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def app_client(tiny_onnx_session, tmp_path_factory):
    """The app on a copy of the tiny model with a manifest beside it, driven without a socket."""
    with warnings.catch_warnings():  # starlette's TestClient warns about its httpx use on import
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from optkit.model.artifact import Artifact, Manifest
    from optkit.serve.app import create_app

    d = tmp_path_factory.mktemp("served")
    model = d / "tiny.onnx"
    shutil.copy(tiny_onnx_session, model)
    manifest = Manifest(d / "manifest.json")
    manifest.record("export", Artifact.from_file(model, made_by="export"), cache_key="k1")
    manifest.save()
    settings = resolve_settings(model, threshold=0.5, model_version="test-v1", max_body_bytes=256 * 1024,
                                environ={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(create_app(settings)) as client:
            yield client, model


def test_verify_answers_probability_decision_and_latency(app_client):
    client, model = app_client
    r = client.post("/verify", content=npy_bytes(SAMPLE), headers={"Content-Type": "application/x-npy"})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = ort_probability(model, SAMPLE)
    assert body["probability"] == pytest.approx(expected, abs=1e-6)
    assert body["accepted"] == (expected >= 0.5) and body["decision"] == ("accept" if expected >= 0.5 else "reject")
    assert body["threshold"] == 0.5 and body["model_version"] == "test-v1"
    assert body["latency_ms"] > 0 and body["inference_ms"] > 0 and body["batch_size"] == 1
    same = client.post("/verify", json={"mfcc": SAMPLE.tolist()}).json()
    assert same["probability"] == pytest.approx(expected, abs=1e-6)


def test_wav_upload_goes_through_the_mfcc_front_end(app_client):
    sf = pytest.importorskip("soundfile", reason="optkit[audio] is not installed")
    from optkit.data import features

    client, model = app_client
    y = (0.1 * np.sin(np.arange(int(1.5 * 22050)) * 2 * np.pi * 220 / 22050)).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, y, 22050, format="WAV", subtype="FLOAT")  # lossless: the expected value uses y itself
    r = client.post("/verify", files={"audio": ("clip.wav", wav.getvalue(), "audio/wav")})
    assert r.status_code == 200, r.text
    expected = ort_probability(model, features.mfcc_from_audio(y, 22050))
    assert r.json()["probability"] == pytest.approx(expected, abs=1e-5)
    raw = client.post("/verify", content=wav.getvalue(), headers={"Content-Type": "audio/wav"})
    assert raw.json()["probability"] == pytest.approx(expected, abs=1e-5)


def _nan_npy() -> bytes:
    x = SAMPLE.copy()
    x[0, 3, 5] = np.nan
    return npy_bytes(x)


BAD_REQUESTS = [
    ("wrong shape", npy_bytes(np.zeros((1, 40, 240), np.float32)), "application/x-npy", 422, "shape (1, 40, 240)"),
    ("wrong dtype", npy_bytes(SAMPLE.astype(np.float64)), "application/x-npy", 422, "dtype float64"),
    ("NaN", _nan_npy(), "application/x-npy", 422, "NaN"),
    ("NaN in JSON", b"[" + b",".join([b"NaN"] * 3) + b"]", "application/json", 422, "shape (3,)"),
    ("ragged JSON", b"[[1, 2], [3]]", "application/json", 422, "ragged"),
    ("strings in JSON", b'["a", "b"]', "application/json", 422, "numbers only"),
    ("broken JSON", b"{nope", "application/json", 400, "not valid JSON"),
    ("not npy", b"\x00\x01garbage", "application/x-npy", 400, "not a .npy array"),
    ("truncated npy", npy_bytes(SAMPLE)[:500], "application/x-npy", 400, "unreadable .npy"),
    ("undecodable audio", b"RIFF\x00\x00\x00\x00WAVEjunk", "audio/wav", 400, "undecodable audio"),
    ("empty body", b"", "application/json", 400, "empty request body"),
    ("oversize body", b"[" + b"0," * 200_000 + b"0]", "application/json", 413, "over the limit"),
    ("unknown type", b"abc", "image/png", 415, "unsupported Content-Type"),
]


@pytest.mark.parametrize("name, body, ctype, status, reason", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_with_a_one_line_reason(app_client, name, body, ctype, status, reason):
    client, _ = app_client
    r = client.post("/verify", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail


def test_metadata_reports_the_artifact_the_provider_in_use_and_the_manifest_entry(app_client):
    from optkit.common.fileio import sha256_file

    client, model = app_client
    md = client.get("/metadata").json()
    assert md["sha256"] == sha256_file(model) and md["precision"] == "fp32"
    assert md["provider_in_use"] == "CPUExecutionProvider"
    assert md["manifest"]["step"] == "export" and md["manifest"]["artifact"]["sha256"] == md["sha256"]
    assert md["input"] == {"name": "input_mfcc", "shape": [None, *TINY_SHAPE], "dtype": "float32",
                           "length_ranges": []}  # a fixed sample shape
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["ready"] is True


def test_metrics_count_requests_by_status_and_expose_queue_and_latency(app_client):
    client, _ = app_client
    client.post("/verify", content=npy_bytes(SAMPLE), headers={"Content-Type": "application/x-npy"})
    client.post("/verify", content=b"{nope", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    ok = [ln for ln in text.splitlines() if ln.startswith('optkit_requests_total{endpoint="/verify",status="200"}')]
    assert ok and float(ok[0].split()[-1]) >= 1
    assert 'optkit_requests_total{endpoint="/verify",status="400"}' in text
    assert "optkit_queue_depth 0.0" in text and "optkit_request_latency_seconds_bucket" in text


# -- the inference loop: micro-batching -------------------------------------------------------------------
def test_micro_batches_give_the_same_answers_as_single_calls(tiny_onnx):
    from optkit.serve.inference import InferenceLoop

    settings = resolve_settings(tiny_onnx, max_batch=4, max_wait_ms=500, accept_audio=False, environ={})
    engine = InferenceLoop(settings)
    engine.load()
    xs = [np.random.default_rng(i).standard_normal((1, *TINY_SHAPE)).astype(np.float32) for i in range(4)]

    async def all_at_once():
        return await asyncio.gather(*(engine.predict(x) for x in xs))

    try:
        preds = asyncio.run(all_at_once())
    finally:
        engine.close()
    assert [p.batch_size for p in preds] == [4, 4, 4, 4]
    for x, p in zip(xs, preds):
        assert p.probability == pytest.approx(ort_probability(tiny_onnx, x), abs=1e-5)


def test_micro_batching_needs_a_dynamic_batch_axis(tiny_onnx, tmp_path):
    import onnx

    from optkit.serve.inference import InferenceLoop

    path = tmp_path / "fixed.onnx"
    model = onnx.load(str(tiny_onnx))
    for t in list(model.graph.input) + list(model.graph.output):
        t.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    engine = InferenceLoop(resolve_settings(path, max_batch=4, accept_audio=False, environ={}))
    with pytest.raises(InputError, match="micro-batching needs a dynamic batch axis"):
        engine.load()


class SlowRunner(FakeVoiceRunner):
    """A runner whose every call takes ``seconds``: a stand-in for a model too slow for its load."""

    name = "slow"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def infer(self, feed):
        import time

        time.sleep(self.seconds)
        return {"output_wvp": np.full((len(feed["input_mfcc"]), 1), 0.5, np.float32)}


class ShapeRecorder(SlowRunner):
    """Records the batch size of every call (warm-up included)."""

    def __init__(self):
        super().__init__(0.0)
        self.sizes: list[int] = []

    def infer(self, feed):
        self.sizes.append(len(feed["input_mfcc"]))
        return super().infer(feed)


@pytest.mark.parametrize("provider, padded", [("cpu", False), ("openvino", True), ("cuda", True), ("tensorrt", True)])
def test_runtimes_that_tune_per_shape_get_only_warmed_up_batch_sizes(tiny_onnx, provider, padded):
    """A batch of 3 at --max-batch 8: ORT on the CPU runs it as 3; a runtime that compiles or tunes
    per shape (OpenVINO, ORT's CUDA/TensorRT providers) runs it padded to 4, a size it warmed up,
    so no kernel search or compile happens while requests wait; the answers are the same."""
    from optkit.serve.inference import InferenceLoop, batch_buckets

    rec = ShapeRecorder()
    settings = resolve_settings(tiny_onnx, provider=provider, max_batch=8, max_wait_ms=500, accept_audio=False,
                                environ={})
    engine = InferenceLoop(settings, runner_factory=lambda s: rec)
    engine.load()
    warmed = set(rec.sizes)
    assert warmed == set(batch_buckets(8)) == {1, 2, 4, 8}
    rec.sizes.clear()

    async def three_at_once():
        x = np.zeros((1, *TINY_SHAPE), np.float32)
        return await asyncio.gather(*(engine.predict(x) for _ in range(3)))

    try:
        preds = asyncio.run(three_at_once())
    finally:
        engine.close()
    assert [p.batch_size for p in preds] == [3, 3, 3] and all(p.probability == 0.5 for p in preds)
    assert rec.sizes == ([4] if padded else [3])
    if padded:
        assert set(rec.sizes) <= warmed


def test_queue_is_bounded_in_time_as_well_as_in_count(tiny_onnx):
    """Ten requests at once for a 0.2 s model with 0.3 s of allowed queueing: the ones that cannot
    start in time are refused at once (Overloaded -> 503), the rest answered; none waits longer."""
    import time

    from optkit.serve.inference import InferenceLoop, Overloaded, Prediction

    settings = resolve_settings(tiny_onnx, max_queue=100, max_queue_wait_ms=300, accept_audio=False, environ={})
    engine = InferenceLoop(settings, runner_factory=lambda s: SlowRunner(0.2))
    engine.load()

    async def ten_requests():
        x = np.zeros((1, *TINY_SHAPE), np.float32)

        async def one():
            t0 = time.perf_counter()
            try:
                return await engine.predict(x), time.perf_counter() - t0
            except Overloaded as exc:
                return exc, time.perf_counter() - t0

        return await asyncio.gather(*(one() for _ in range(10)))

    try:
        results = asyncio.run(ten_requests())
    finally:
        engine.close()
    answered = [r for r, _ in results if isinstance(r, Prediction)]
    refused = [r for r, _ in results if isinstance(r, Overloaded)]
    assert len(answered) + len(refused) == 10
    assert 1 <= len(answered) <= 3 and refused  # 0.3 s of queue holds about two 0.2 s calls after the first
    assert all(r.retry_after >= 1 for r in refused)
    assert max(t for _, t in results) < 0.3 + 0.2 + 0.5  # allowed wait + one call + scheduling slack


# -- the CLI ---------------------------------------------------------------------------------------
def test_serve_refuses_a_gpu_provider_that_would_fall_back_to_cpu(cli_runner, tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider: nothing to refuse")
    result = invoke(cli_runner, ["serve", tiny_onnx, "--provider", "cuda", "--port", "0", "--no-audio"])
    assert result.exit_code == 1
    assert "Error: ONNX Runtime provider CUDAExecutionProvider is not available here" in result.output
    assert "Traceback" not in result.output


def test_serve_missing_artifact_is_one_line(cli_runner, tmp_path):
    result = invoke(cli_runner, ["serve", tmp_path / "nope.onnx"])
    assert result.exit_code == 1 and "Error:" in result.output and "nope.onnx" in result.output


# -- models users bring (not the voice model) --------------------------------------------------------
def _user_client(path: Path, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from optkit.serve.app import create_app

    return TestClient(create_app(resolve_settings(path, environ={}, **settings)))


def _ort_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))


IMAGE = np.random.default_rng(3).standard_normal((3, 8, 8)).astype(np.float32)


def test_a_logits_model_is_not_served_as_a_probability(tmp_path):
    """A model whose output is a raw score (no sigmoid) would answer "probability": -3.1 and decide at
    0.5 on a logit: refused at load with the way out, unless told it is a logit."""
    from serve_models import build_user_model

    from optkit.serve.inference import InferenceLoop

    path = build_user_model(tmp_path / "logits.onnx", head="logit")
    engine = InferenceLoop(resolve_settings(path, accept_audio=False, environ={}))
    with pytest.raises(InputError, match=r"output score is not a probability.*--output-kind logit") as e:
        engine.load()
    assert "\n" not in str(e.value)
    with _user_client(path, accept_audio=False, output_kind="logit") as client:
        body = client.post("/verify", content=npy_bytes(IMAGE), headers={"Content-Type": "application/x-npy"}).json()
        logit = float(_ort_outputs(path, IMAGE[None])["score"].ravel()[0])
        assert logit < 0 and body["probability"] == pytest.approx(1 / (1 + np.exp(-logit)), abs=1e-6)
        assert body["accepted"] is (body["probability"] >= 0.5)
        md = client.get("/metadata").json()
        assert md["output"] == "score" and md["output_kind"] == "logit"


def test_sigmoid_and_softmax_heads_are_probabilities(tmp_path):
    """Also behind ORT's QOperator int8 form (QLinearSigmoid -> DequantizeLinear), with no note."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from serve_models import build_user_model

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"image": IMAGE[None] * k} for k in (0.5, 1.0, 2.0)])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(build_user_model(tmp_path / "f32.onnx")), str(tmp_path / "qop.onnx"), Reader(),
                    quant_format=QuantFormat.QOperator)
    for head in ("sigmoid", "softmax2", "qop"):
        path = tmp_path / "qop.onnx" if head == "qop" else build_user_model(tmp_path / f"{head}.onnx", head=head)
        with _user_client(path, accept_audio=False) as client:
            body = client.post("/verify", content=npy_bytes(IMAGE), headers={"Content-Type": "application/x-npy"}).json()
            expected = float(_ort_outputs(path, IMAGE[None])["score"].ravel()[0])
            assert body["probability"] == pytest.approx(expected, abs=1e-6)
            md = client.get("/metadata").json()
            assert md["output_kind"] == "probability" and md["notes"] == [], md["notes"]


def test_a_model_with_several_outputs_serves_the_probability_and_says_so(tmp_path):
    """Outputs (flat, score): the one that is a probability per sample is served and the choice is
    reported; --output picks one; a wrong name or a non-probability output is one line."""
    from serve_models import build_user_model

    from optkit.serve.inference import InferenceLoop

    path = build_user_model(tmp_path / "two.onnx", extra_output=True)
    with _user_client(path, accept_audio=False) as client:
        md = client.get("/metadata").json()
        assert md["output"] == "score"
        assert any("2 outputs (flat, score)" in note and "--output" in note for note in md["notes"])
        body = client.post("/verify", json={"image": IMAGE.tolist()}).json()
        assert body["probability"] == pytest.approx(float(_ort_outputs(path, IMAGE[None])["score"].ravel()[0]), abs=1e-6)
    for output, message in (("nope", "no output named 'nope'; its outputs are flat, score"),
                            ("flat", "output flat has shape")):
        engine = InferenceLoop(resolve_settings(path, output=output, accept_audio=False, environ={}))
        with pytest.raises(InputError, match=message):
            engine.load()
    # two outputs with one value per sample each (the logit and the probability): no guessing
    import onnx
    from onnx import TensorProto, helper

    both = onnx.load(str(build_user_model(tmp_path / "both.onnx")))
    both.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 1]))
    onnx.save(both, str(tmp_path / "both.onnx"))
    engine = InferenceLoop(resolve_settings(tmp_path / "both.onnx", accept_audio=False, environ={}))
    with pytest.raises(InputError, match=r"2 outputs \(score, z\); score, z each give one value per sample: "
                                         "name the probability with --output NAME"):
        engine.load()
    with _user_client(tmp_path / "both.onnx", accept_audio=False, output="z", output_kind="logit") as client:
        assert client.get("/metadata").json()["output"] == "z"


def test_audio_is_off_for_a_model_whose_input_is_not_the_mfcc_window(tmp_path):
    """An image model cannot take optkit's MFCCs: /metadata says why audio is off and an upload is 415;
    a model taking the MFCC window without its channel axis (40, 241) does take audio."""
    pytest.importorskip("soundfile", reason="optkit[audio] is not installed")
    import soundfile as sf

    from serve_models import build_user_model

    wav = io.BytesIO()
    sf.write(wav, np.zeros(16000, np.float32) + 1e-3, 16000, format="WAV")
    image = build_user_model(tmp_path / "image.onnx")
    with _user_client(image) as client:
        assert "(3, 8, 8)" in client.get("/metadata").json()["audio_input"]
        r = client.post("/verify", content=wav.getvalue(), headers={"Content-Type": "audio/wav"})
        assert r.status_code == 415 and "audio is not accepted" in r.json()["detail"]
    mfcc = build_user_model(tmp_path / "mfcc2d.onnx", sample_shape=(40, 241), input_name="mfcc")
    with _user_client(mfcc) as client:
        assert client.get("/metadata").json()["audio_input"] == "on"
        r = client.post("/verify", content=wav.getvalue(), headers={"Content-Type": "audio/wav"})
        assert r.status_code == 200, r.text


def test_serve_with_workers_refuses_a_bad_model_in_one_line(cli_runner, tmp_path):
    """With --workers N the model used to be loaded only in the worker processes: each printed a
    traceback and the command exited 0. It is checked once first, so it is one line and exit 1."""
    from serve_models import build_user_model

    path = build_user_model(tmp_path / "logits.onnx", head="logit")
    result = invoke(cli_runner, ["serve", path, "--workers", "2", "--port", "0", "--no-audio"])
    assert result.exit_code == 1, result.output
    assert "Error: logits.onnx: output score is not a probability" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("max_batch", [1, 4])
def test_a_fixed_batch_other_than_one_is_refused_with_advice_that_works(tmp_path, max_batch):
    """A model exported with a fixed batch of 4: the service sends batches of 1 (or of up to
    --max-batch over a dynamic axis), so neither setting can run it; the message must not suggest
    --max-batch 1, which fails too."""
    from serve_models import build_user_model

    from optkit.serve.inference import InferenceLoop

    path = build_user_model(tmp_path / "b4.onnx", batch=4)
    engine = InferenceLoop(resolve_settings(path, max_batch=max_batch, accept_audio=False, environ={}))
    with pytest.raises(InputError, match="fixed batch of 4") as e:
        engine.load()
    assert "--max-batch 1" not in str(e.value) and "batch of 1 or a dynamic batch" in str(e.value)


def test_a_scalar_output_of_a_batch_of_one_model_is_served(tmp_path):
    """Fixed batch 1, output squeezed to a scalar: one value per sample all the same (it used to be an
    IndexError traceback at start-up and exit 3)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0), helper.make_node("Sigmoid", ["m"], ["p"])], "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [])])
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 12
    with _user_client(path, accept_audio=False) as client:
        body = client.post("/verify", json=x.tolist()).json()
    assert body["probability"] == pytest.approx(float(1 / (1 + np.exp(-x.mean()))), abs=1e-6)


class BrokenRunner(SlowRunner):
    """A runtime that fails with something other than an OptkitError."""

    def infer(self, feed):
        raise IndexError("tuple index out of range")


def test_an_unexpected_failure_at_load_is_one_line(tmp_path, tiny_onnx):
    from optkit.serve.inference import InferenceLoop

    engine = InferenceLoop(resolve_settings(tiny_onnx, accept_audio=False, environ={}),
                             runner_factory=lambda s: BrokenRunner(0.0))
    with pytest.raises(InputError, match=r"tiny.onnx: cannot be served: IndexError: tuple index out of range"):
        engine.load()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_on_a_port_in_use_is_one_line_and_exit_1(cli_runner, tiny_onnx, workers):
    """uvicorn exits 3 when it cannot bind: optkit's code for a failed verification gate."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        result = invoke(cli_runner, ["serve", tiny_onnx, "--port", port, "--workers", workers, "--no-audio"])
    assert result.exit_code == 1, result.output
    assert f"Error: cannot listen on 127.0.0.1:{port}" in result.output and "Traceback" not in result.output


def test_the_loaded_service_keeps_its_start_up_objects_out_of_the_garbage_collector(tiny_onnx):
    """After start-up the app freezes what is alive (model, app, modules), so a full collection while
    serving scans only request garbage (gen-2 pauses of 36-41 ms were measured in a loaded server);
    leaving the app unfreezes, so an in-process app leaves the collector as it found it."""
    import gc
    import warnings

    from fastapi.testclient import TestClient

    from optkit.serve.app import create_app

    assert gc.get_freeze_count() == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(create_app(resolve_settings(tiny_onnx, accept_audio=False, environ={}))) as client:
            assert client.get("/ready").status_code == 200
            assert gc.get_freeze_count() > 1000  # at least the imported modules' objects
    assert gc.get_freeze_count() == 0


def test_a_load_step_runs_with_the_generator_s_objects_frozen(monkeypatch):
    """The load generator's own full collections would be recorded as server latency: a step runs
    with what was alive at its start frozen, and the collector is restored after it."""
    import asyncio
    import gc

    from optkit.serve import loadtest as lt

    seen = []

    async def fake_request(client, url, payload, timeout, rec):
        seen.append(gc.get_freeze_count())
        rec.add("ok", 200, 0.001)
        return "ok"

    monkeypatch.setattr(lt, "_one_request", fake_request)
    payload = lt.Payload(b"x", "application/x-npy", "test")
    assert gc.get_freeze_count() == 0
    asyncio.run(lt.open_loop_step("http://127.0.0.1:9/verify", payload, 200.0, 0.02, 1.0))
    assert seen and all(n > 1000 for n in seen)
    assert gc.get_freeze_count() == 0


# -- streams: several inference threads on one runner ---------------------------------------------
class BarrierRunner(SlowRunner):
    """Every call after warm-up waits at a barrier of ``parties``: it only passes when that many
    calls are running at the same moment (a lone call times out and fails)."""

    def __init__(self, parties: int):
        super().__init__(0.0)
        import threading

        self.barrier = threading.Barrier(parties, timeout=5)
        self.armed = False
        self.threads: set[int] = set()

    def infer(self, feed):
        import threading

        if self.armed:
            self.threads.add(threading.get_ident())
            self.barrier.wait()
        return super().infer(feed)


def test_streams_run_requests_at_the_same_time(tiny_onnx):
    """--streams 2: two requests run on two inference threads at once (each call waits until the
    other is running too); with one stream the same two would meet nobody and fail."""
    from optkit.serve.inference import InferenceLoop, Prediction

    rec = BarrierRunner(2)
    settings = resolve_settings(tiny_onnx, streams=2, threads=2, accept_audio=False, environ={})
    engine = InferenceLoop(settings, runner_factory=lambda s: rec)
    engine.load()
    rec.armed = True

    async def two_at_once():
        x = np.zeros((1, *TINY_SHAPE), np.float32)
        return await asyncio.gather(*(engine.predict(x) for _ in range(2)))

    try:
        preds = asyncio.run(two_at_once())
    finally:
        engine.close()  # joins the inference threads: each lowers in_flight after answering its request
    assert engine.in_flight == 0 and engine.batches_run == 2
    assert all(isinstance(p, Prediction) and p.batch_size == 1 for p in preds)
    assert len(rec.threads) == 2


def test_one_stream_runs_one_request_at_a_time(tiny_onnx):
    """The control for the test above: one stream never runs two calls at once, so the barrier
    breaks and each request gets the one-line inference error (no hang, no 500 in the engine)."""
    from optkit.serve.inference import InferenceLoop

    rec = BarrierRunner(2)
    rec.barrier = __import__("threading").Barrier(2, timeout=0.3)
    settings = resolve_settings(tiny_onnx, accept_audio=False, environ={})
    engine = InferenceLoop(settings, runner_factory=lambda s: rec)
    engine.load()
    rec.armed = True

    async def two_at_once():
        x = np.zeros((1, *TINY_SHAPE), np.float32)
        return await asyncio.gather(*(engine.predict(x) for _ in range(2)), return_exceptions=True)

    try:
        results = asyncio.run(two_at_once())
    finally:
        engine.close()
    assert all(isinstance(r, InputError) and "inference failed: BrokenBarrierError" in str(r) for r in results)
    assert len(rec.threads) == 1


def test_streams_share_the_admission_estimate(tiny_onnx):
    """With N streams the queue drains N batches at a time: the wait a new request is told to
    expect (admission, Retry-After) is divided accordingly."""
    from optkit.serve.inference import InferenceLoop

    one = InferenceLoop(resolve_settings(tiny_onnx, accept_audio=False, environ={}))
    two = InferenceLoop(resolve_settings(tiny_onnx, streams=2, threads=2, accept_audio=False, environ={}))
    for engine in (one, two):
        engine._batch_s_ema = 0.4
        engine._waiting.extend([object()] * 4)
    assert one.expected_wait_s() == pytest.approx(1.6) and two.expected_wait_s() == pytest.approx(0.8)
    assert one.retry_after() == 3 and two.retry_after() == 2


def test_streams_are_refused_for_a_tensorrt_engine_and_checked():
    with pytest.raises(InputError, match="one execution context.*--streams 1"):
        resolve_settings("m.engine", streams=2, environ={})
    with pytest.raises(InputError, match="streams must be a positive integer"):
        resolve_settings("m.onnx", streams=0, environ={})
    assert resolve_settings("m.onnx", provider="openvino", streams=2, threads=2, environ={}).streams == 2
    for provider in ("cpu", "openvino"):  # a stream without a thread of its own would only oversubscribe
        with pytest.raises(InputError, match="--streams 3 is more than the 2 threads"):
            resolve_settings("m.onnx", provider=provider, streams=3, threads=2, environ={})


@pytest.mark.parametrize("provider", ["cpu", "openvino"])
def test_a_real_runner_with_two_streams_answers_concurrent_calls_correctly(tiny_onnx, provider):
    """The real runtimes behind --streams 2, called from two threads at once with different inputs:
    every answer is the one a plain single-stream runner gives for that input, and the runtime
    reports the split (ORT: half the threads per call; OpenVINO: two plugin streams)."""
    import threading

    from optkit.runtime.registry import make_runner

    if provider == "openvino":
        pytest.importorskip("openvino", reason="optkit[openvino] is not installed")
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, *TINY_SHAPE)).astype(np.float32) for _ in range(8)]
    with make_runner(tiny_onnx, provider=provider, threads=2) as plain:
        expected = [plain.infer({"input_mfcc": x})["output_wvp"] for x in xs]
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    with make_runner(tiny_onnx, provider=provider, threads=2, streams=2) as runner:
        start = threading.Barrier(2, timeout=10)

        def work(idx: list[int]) -> None:
            try:
                start.wait()
                for _ in range(20):
                    for i in idx:
                        got[i] = runner.infer({"input_mfcc": xs[i]})["output_wvp"]
                        np.testing.assert_allclose(got[i], expected[i], rtol=1e-5, atol=1e-6)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(list(range(k, 8, 2)),)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        desc = runner.describe()
    assert not errors, errors[0]
    assert sorted(got) == list(range(8))
    if provider == "cpu":
        assert (desc["streams"], desc["intra_op_threads"], desc["threads"]) == (2, 1, 2)
    else:
        assert desc["in_effect"]["num_streams"] == 2 and desc["in_effect"]["inference_num_threads"] == 2


@pytest.mark.parametrize("make", [
    lambda x: x,                                    # float32, C order
    lambda x: np.asfortranarray(x),                 # Fortran order
    lambda x: x.astype(">f4"),                      # big-endian
    lambda x: x.astype(np.float64),                 # another dtype (refused below: the model wants float32)
    lambda x: x[None],                              # an extra leading axis of 1
], ids=["c", "fortran", "big-endian", "float64", "extra-axis"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_bodies_read_exactly_as_numpy_reads_them(make, version):
    """The service reads .npy headers once per header text (numpy re-parses each with ast): every
    body must still give what np.load gives, or the same refusal."""
    x = make(np.random.default_rng(5).standard_normal((1, *TINY_SHAPE)).astype(np.float32))
    buf = io.BytesIO()
    np.lib.format.write_array(buf, x, version=version)
    body = buf.getvalue()
    want_error = None
    try:
        expected = check_npy_like_the_service(np.load(io.BytesIO(body)))
    except RequestRejected as exc:
        want_error = str(exc)
    for _ in range(2):  # the second read comes from the header cache
        if want_error:
            with pytest.raises(RequestRejected) as e:
                from_npy(body, TINY_SHAPE, "float32")
            assert str(e.value) == want_error
        else:
            got = from_npy(body, TINY_SHAPE, "float32")
            assert got.dtype == np.float32 and got.flags.writeable and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)


def check_npy_like_the_service(arr: np.ndarray) -> np.ndarray:
    from optkit.serve.payload import check_values

    return check_values(fit_shape(arr, TINY_SHAPE), "float32")


@pytest.mark.parametrize("body, reason", [
    (lambda b: b[:-8], "unreadable .npy (the header says"),                 # data cut short
    (lambda b: b[:20], "unreadable .npy"),                                  # header cut short
    (lambda b: b[:6] + b"\x09\x00" + b[8:], "unsupported .npy version 9"),  # unknown version
])
def test_broken_npy_bodies_are_refused_in_one_line(body, reason):
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, *TINY_SHAPE), np.float32))
    with pytest.raises(RequestRejected, match=reason.replace("(", r"\(")) as e:
        from_npy(body(buf.getvalue()), TINY_SHAPE, "float32")
    assert e.value.status == 400 and "\n" not in str(e.value)


def test_serve_refuses_a_non_utf8_artifact_name_in_one_line(cli_runner, tiny_onnx, tmp_path):
    import os
    import shutil

    odd = tmp_path / os.fsdecode(b"m\xff.onnx")  # a name whose bytes are not UTF-8
    shutil.copy(tiny_onnx, odd)
    res = cli_runner.invoke(__import__("optkit.cli", fromlist=["cli"]).cli, ["serve", str(odd), "--port", "0"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "not valid UTF-8" in lines[0] and "\\xff" in lines[0]
    assert "Traceback" not in res.output
