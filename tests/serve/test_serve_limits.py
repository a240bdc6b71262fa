"""Hostile requests (issue 22, cases 7-11): every one gets a 4xx with one line and leaves the
service healthy; what it parses is bounded before the work a body claims; every 5xx is counted in
/metrics; a worker that dies is replaced, and the service never exits 0 after losing them all."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke
from optkit.common.errors import InputError

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")

from optkit.serve.payload import ParseLimits, RequestRejected, from_json, from_npy  # noqa: E402
from optkit.serve.settings import resolve_settings  # noqa: E402
from serve_models import FakeVoiceRunner  # noqa: E402

SAMPLE = np.random.default_rng(5).standard_normal(TINY_SHAPE).astype(np.float32)
NPY = "application/x-npy"


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def npy_with_header(shape: str, descr: str = "'<f4'", data: bytes = SAMPLE.tobytes()) -> bytes:
    """A .npy body whose header text is written by hand (numpy.save would refuse these)."""
    h = ("{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape)).encode()
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def client_for(path: Path, runner_factory=None, **settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from optkit.serve.app import create_app

    app = create_app(resolve_settings(path, environ={}, **settings), runner_factory=runner_factory)
    return TestClient(app, raise_server_exceptions=False)


def metric(client, name: str) -> float:
    lines = [ln for ln in client.get("/metrics").text.splitlines() if ln.startswith(name + " ")
             or ln.startswith(name + "{")]
    return sum(float(ln.split()[-1]) for ln in lines)


def assert_one_line_4xx(r, status: int, reason: str) -> None:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and reason in detail, detail


@pytest.fixture(scope="module")
def tiny_client(tiny_onnx_session, tmp_path_factory):
    model = tmp_path_factory.mktemp("limits") / "tiny.onnx"
    shutil.copy(tiny_onnx_session, model)
    with client_for(model, max_body_bytes=8 * 1024 * 1024) as client:
        yield client, model


def still_healthy(client) -> None:
    r = client.post("/verify", content=npy_bytes(SAMPLE), headers={"Content-Type": NPY})
    assert r.status_code == 200 and 0.0 <= r.json()["probability"] <= 1.0


# -- case 7: JSON depth, .npy headers, non-finite outputs, 5xx in /metrics ------------------------------
@pytest.mark.parametrize("levels", [40, 1_000, 100_000])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(tiny_client, levels):
    client, _ = tiny_client
    for body in (b"[" * levels + b"]" * levels, b'{"mfcc":' * levels + b"1" + b"}" * levels):
        assert_one_line_4xx(client.post("/verify", content=body, headers={"Content-Type": "application/json"}),
                            400, f"JSON nested {levels} levels deep; at most 32")
    multipart = client.post("/verify", data={"mfcc": "[" * levels + "]" * levels},
                            files={"unused": ("x.txt", b"x", "text/plain")})
    assert_one_line_4xx(multipart, 400, f"nested {levels} levels")
    still_healthy(client)


def test_the_json_limits_are_settings(tiny_onnx):
    x = np.zeros(TINY_SHAPE, np.float32).tolist()
    body = json.dumps(x).encode()
    assert from_json(body, TINY_SHAPE, "float32").shape == (1, *TINY_SHAPE)
    with pytest.raises(RequestRejected, match="at most 1000 are accepted") as e:
        from_json(body, TINY_SHAPE, "float32", limits=ParseLimits(max_json_elements=1000))
    assert e.value.status == 413
    with pytest.raises(RequestRejected, match="nested 3 levels deep; at most 2") as e:
        from_json(body, TINY_SHAPE, "float32", limits=ParseLimits(max_json_depth=2))
    assert e.value.status == 400
    settings = resolve_settings(tiny_onnx, environ={}, max_json_depth=5, max_json_elements=20_000)
    assert settings.limits.max_json_depth == 5 and settings.limits.max_json_elements == 20_000
    with pytest.raises(InputError, match="max JSON depth"):
        resolve_settings(tiny_onnx, environ={}, max_json_depth=1)


NPY_HEADERS = [
    ("negative dim", npy_with_header("(-1, 40, 241)"), 400, "shape (-1, 40, 241)"),
    ("two negative dims", npy_with_header("(-1, -40, 241)"), 400, "shape (-1, -40, 241)"),
    ("huge dim", npy_with_header("(99999999999999999999999, 40, 241)"), 400, "the body holds 38560 bytes"),
    ("sub-array descr", npy_with_header("(1,)", descr="('<f4', (40, 241))"), 422, "sub-array dtype"),
    ("structured descr", npy_with_header("(1,)", descr="[('a', '<f4'), ('b', '<f4')]", data=b"\0" * 8), 422,
     "structured dtype (fields a, b)"),
    ("descr not the model's", npy_with_header("(1, 40, 241)", descr="'<f8'", data=b"\0" * 8 * 9640), 422,
     "dtype float64; the model expects float32"),
    ("shape not the model's", npy_with_header("(1, 241, 40)"), 422, "shape (1, 241, 40)"),
    ("too many dims", npy_with_header("(" + "1, " * 40 + ")"), 400, "unreadable .npy"),
]


@pytest.mark.parametrize("name, body, status, reason", NPY_HEADERS, ids=[c[0] for c in NPY_HEADERS])
def test_crafted_npy_headers_are_a_4xx(tiny_client, name, body, status, reason):
    client, _ = tiny_client
    assert_one_line_4xx(client.post("/verify", content=body, headers={"Content-Type": NPY}), status, reason)
    with pytest.raises(RequestRejected):  # the parser alone, as the multipart path calls it
        from_npy(body, TINY_SHAPE, "float32")
    still_healthy(client)


def test_npy_headers_with_random_bytes_replaced_are_read_or_refused_never_a_crash():
    """numpy's header reader tokenizes the header text: some mutants raised tokenize.TokenError, a 500
    (found by benchmarks/attack_classes.py's serve class)."""
    normal = npy_bytes(SAMPLE[None])
    head = 10 + int.from_bytes(normal[8:10], "little")
    rng = np.random.default_rng(22)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(3000):
        body = bytearray(normal)
        for pos in rng.integers(0, head, size=int(rng.integers(1, 4))):
            body[pos] = int(rng.integers(0, 256))
        try:
            x = from_npy(bytes(body), TINY_SHAPE, "float32")
        except RequestRejected as exc:
            assert exc.status in (400, 422) and "\n" not in str(exc)
            outcomes["refused"] += 1
        else:
            assert x.shape == (1, *TINY_SHAPE) and x.dtype == np.float32
            outcomes["read"] += 1
    assert outcomes["refused"] > 2500 and outcomes["read"] > 0


def test_inputs_that_make_the_model_output_nan_are_a_422_counted_in_metrics(tiny_client):
    """3e38 is a finite float32, but the model overflows on it: ONNX Runtime answers NaN, which the
    JSON encoder cannot write (a 500 before)."""
    import onnxruntime as ort

    client, model = tiny_client
    x = np.full((1, *TINY_SHAPE), 3e38, np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert not np.isfinite(sess.run(None, {"input_mfcc": x})[0]).all()  # the premise
    before = metric(client, "optkit_non_finite_outputs_total")
    r = client.post("/verify", json={"mfcc": x.tolist()})
    assert_one_line_4xx(r, 422, "output_wvp for this input is nan (not a finite number)")
    assert metric(client, "optkit_non_finite_outputs_total") == before + 1
    still_healthy(client)


class FlakyRunner(FakeVoiceRunner):
    """A runner answering 0.25, NaN for an input holding 7, raising RuntimeError for one holding 6."""

    name = "flaky"

    def infer(self, feed):
        x = feed["input_mfcc"]
        if (x == 6).any():
            raise RuntimeError("device lost\nsecond line")
        out = np.full((len(x), 1), 0.25, np.float32)
        out[(x == 7).reshape(len(x), -1).any(axis=1)] = np.nan
        return {"output_wvp": out}


def test_every_500_is_one_line_and_counted_and_a_nan_refuses_only_its_own_request(tiny_onnx):
    with client_for(tiny_onnx, runner_factory=lambda s: FlakyRunner(), accept_audio=False,
                    output_kind="probability", max_batch=4) as client:
        r = client.post("/verify", content=npy_bytes(np.full(TINY_SHAPE, 6, np.float32)),
                        headers={"Content-Type": NPY})
        assert r.status_code == 500 and "\n" not in r.json()["detail"] and "device lost" in r.json()["detail"]
        text = client.get("/metrics").text
        assert 'optkit_requests_total{endpoint="/verify",status="500"} 1.0' in text
        assert "optkit_internal_errors_total 1.0" in text
        nan = client.post("/verify", content=npy_bytes(np.full(TINY_SHAPE, 7, np.float32)),
                          headers={"Content-Type": NPY})
        assert_one_line_4xx(nan, 422, "is nan")
        ok = client.post("/verify", content=npy_bytes(SAMPLE), headers={"Content-Type": NPY})
        assert ok.status_code == 200 and ok.json()["probability"] == 0.25
        assert metric(client, "optkit_non_finite_outputs_total") == 1

    # in one micro-batch, the NaN sample's request is refused and the others answered
    from optkit.serve.inference import InferenceLoop, NonFiniteOutput
    import asyncio

    loop = InferenceLoop(resolve_settings(tiny_onnx, environ={}, accept_audio=False, output_kind="probability",
                                          max_batch=4), runner_factory=lambda s: FlakyRunner())
    loop.load()
    try:
        async def both():
            xs = [np.zeros((1, *TINY_SHAPE), np.float32), np.full((1, *TINY_SHAPE), 7, np.float32)]
            return await asyncio.gather(*(loop.predict(x) for x in xs), return_exceptions=True)

        good, bad = asyncio.run(both())
    finally:
        loop.close()
    assert good.probability == 0.25 and isinstance(bad, NonFiniteOutput)


# -- case 8: audio length, before decoding ---------------------------------------------------------------
def silent_flac(minutes: float, rate: int = 16000) -> bytes:
    sf = pytest.importorskip("soundfile", reason="optkit[audio] is not installed")
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(rate * 60, np.int16)
        for _ in range(int(minutes)):
            f.write(block)
        f.write(block[:int((minutes % 1) * rate * 60)])
    return buf.getvalue()


def test_two_hours_of_flac_are_refused_from_the_header_without_decoding(tiny_client, monkeypatch):
    """363 KB of FLAC holding 120 minutes of silence (1.7 GB of memory and 6.5 s before): a 413 that
    never asks libsndfile for more frames than the limit."""
    sf = pytest.importorskip("soundfile", reason="optkit[audio] is not installed")
    client, _ = tiny_client
    body = silent_flac(120)
    assert len(body) < 400_000
    reads: list[int] = []
    real_read = sf.SoundFile.read

    def counting_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    r = client.post("/verify", content=body, headers={"Content-Type": "audio/flac"})
    assert_one_line_4xx(r, 413, "the audio lasts 7200.0 s")
    assert "--max-audio-seconds 60" in r.json()["detail"] and reads == []
    upload = client.post("/verify", files={"audio": ("long.flac", body, "audio/flac")})
    assert_one_line_4xx(upload, 413, "7200.0 s")
    ok = client.post("/verify", content=silent_flac(0.05), headers={"Content-Type": "audio/flac"})  # 3 s
    assert ok.status_code == 200, ok.text
    assert reads == [48000]  # the header's length, decoded once


def test_the_audio_limit_comes_from_the_flag_or_its_environment_variable(tiny_onnx):
    from optkit.serve.payload import from_audio

    assert resolve_settings(tiny_onnx, environ={}).max_audio_seconds == 60.0
    assert resolve_settings(tiny_onnx, environ={"MAX_AUDIO_SECONDS": "5"}).max_audio_seconds == 5.0
    assert resolve_settings(tiny_onnx, environ={"MAX_AUDIO_SECONDS": "5"}, max_audio_seconds=9).max_audio_seconds == 9
    for bad in ("0", "nan", "-1", "x", "1e9"):
        with pytest.raises(InputError, match="MAX_AUDIO_SECONDS"):
            resolve_settings(tiny_onnx, environ={"MAX_AUDIO_SECONDS": bad})
    three_s = silent_flac(0.05)
    with pytest.raises(RequestRejected, match=r"lasts 3.0 s .* at most 2.0 s") as e:
        from_audio(three_s, TINY_SHAPE, "float32", ParseLimits(max_audio_seconds=2))
    assert e.value.status == 413
    # 8 channels at 48 kHz: bounded by samples (48 kHz stereo's), not only by seconds
    sf = pytest.importorskip("soundfile")
    buf = io.BytesIO()
    sf.write(buf, np.zeros((48000 * 20, 8), np.int16), 48000, format="FLAC")
    with pytest.raises(RequestRejected, match=r"lasts 20.0 s \(8 channels at 48000 Hz\).* at most 15.0 s"):
        from_audio(buf.getvalue(), TINY_SHAPE, "float32", ParseLimits(max_audio_seconds=60))


# -- case 9: --output-kind logit on a probability --------------------------------------------------------
def test_output_kind_logit_on_a_sigmoid_head_is_refused_unless_forced(tmp_path, cli_runner):
    from serve_models import build_user_model

    from optkit.serve.inference import InferenceLoop

    path = build_user_model(tmp_path / "prob.onnx", head="sigmoid")
    for settings in (resolve_settings(path, environ={}, accept_audio=False, output_kind="logit"),
                     resolve_settings(path, environ={"OUTPUT_KIND": "logit"}, accept_audio=False)):
        with pytest.raises(InputError, match=r"output score is computed by Sigmoid: it is a probability already.*"
                                             r"--force-output-kind") as e:
            InferenceLoop(settings).load()
        assert "\n" not in str(e.value)
    result = invoke(cli_runner, ["serve", path, "--output-kind", "logit", "--no-audio", "--port", "0"])
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].startswith("Error: ")
    assert "computed by Sigmoid" in result.output and "Traceback" not in result.output
    with client_for(path, accept_audio=False, output_kind="logit", force_output_kind=True) as client:
        md = client.get("/metadata").json()
        assert md["output_kind"] == "logit"
        assert any("--output-kind logit applies a second sigmoid" in n for n in md["notes"])


# -- case 10: integer inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, body, reason", [
    ("int64", "[1.5, 2.7, 3, 4]", "holds non-integers"),
    ("int64", "[1e20, 1, 1, 1]", "values must lie in [-9223372036854775808, 9223372036854775807]"),
    ("int64", "[100000000000000000000, 1, 1, 1]", "values must lie in"),
    ("int64", "[-100000000000000000000, 1, 1.5, 1]", "integers only"),
    ("int64", "[1, NaN, 1, 1]", "non-integers"),
    ("int64", "[true, 1, 1, 1]", "booleans"),
    ("int32", "[2147483648, 1, 1, 1]", "values must lie in [-2147483648, 2147483647]"),
])
def test_integer_inputs_refuse_non_integers_and_out_of_range_values(tmp_path, dtype, body, reason):
    from serve_models import build_int_model

    path = build_int_model(tmp_path / f"{dtype}.onnx", dtype)
    with client_for(path, accept_audio=False) as client:
        r = client.post("/verify", content=body.encode(), headers={"Content-Type": "application/json"})
        assert_one_line_4xx(r, 422, reason)
        ok = client.post("/verify", content=b"[2147483647, -3, 0, 1]", headers={"Content-Type": "application/json"})
        assert ok.status_code == 200, ok.text
        z = 0.1 * 2147483647 + 0.6 + 0.01
        assert ok.json()["probability"] == pytest.approx(1 / (1 + np.exp(-min(z, 50))), abs=1e-6)


# -- case 11: a worker that dies -------------------------------------------------------------------------
def _worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes (multiprocessing spawn children, not its resource tracker)."""
    pids = []
    for task in os.listdir(f"/proc/{parent}/task"):
        for pid in Path(f"/proc/{parent}/task/{task}/children").read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                pids.append(int(pid))
    return pids


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker pids from /proc (Linux)")
def test_a_dead_worker_is_replaced_and_losing_every_worker_exits_1(tiny_onnx, tmp_path):
    """--workers 2; a worker killed while the model file is there is replaced; then the file is
    removed and a worker killed: its replacement cannot start, the other keeps serving; the last one
    killed: exit 1 with one line (uvicorn alone stopped the healthy worker and exited 0)."""
    import httpx

    from optkit.serve.server import ServerProcess

    model = Path(shutil.copy(tiny_onnx, tmp_path / "M.onnx"))

    def wait_for(pred, seconds=60.0):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.2)
        return False

    def ready_workers(srv) -> int:
        return len(_worker_pids(srv.proc.pid))

    with ServerProcess(model, extra_args=["--no-audio", "--workers", "2"], startup_timeout=120) as srv:
        assert wait_for(lambda: srv.log_text().count("Application startup complete") == 2)  # both loaded
        first = _worker_pids(srv.proc.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        assert wait_for(lambda: "worker [%d] died (killed by signal 9)" % first[0] in srv.log_text())
        assert wait_for(lambda: srv.log_text().count("Application startup complete") == 3), srv.log_text()
        assert ready_workers(srv) == 2 and srv.proc.poll() is None

        model.unlink()
        second = _worker_pids(srv.proc.pid)
        os.kill(second[0], signal.SIGKILL)
        assert wait_for(lambda: "1 worker(s) left out; 1 still serving" in srv.log_text())
        with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
            for _ in range(4):
                assert client.get("/ready").status_code == 200
                r = client.post("/verify", content=npy_bytes(SAMPLE), headers={"Content-Type": NPY})
                assert r.status_code == 200
        assert srv.proc.poll() is None

        os.kill(_worker_pids(srv.proc.pid)[0], signal.SIGKILL)
        assert srv.proc.wait(60) == 1
        log = srv.log_text()
    assert "cannot serve: artifact" in log and "does not exist" in log and "Traceback" not in log
    assert log.strip().splitlines()[-1].startswith("Error: every worker has stopped")
