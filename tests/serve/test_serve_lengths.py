"""optkit serve on a model exported with a dynamic time axis: any length inside the declared range,
answered as ONNX Runtime answers it at that length; a length outside it is a 4xx naming the range;
micro-batches hold one length only (oldest request first); /metadata and V2 metadata give the range."""
from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="optkit[serve] is not installed")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from conftest import invoke  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402
from optkit.serve.settings import resolve_settings  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"
LO, HI = 20, 300


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory) -> Path:
    """The GAP CNN of variable_length_models, (N, 1, 8, T), exported by optkit with a dynamic batch and
    time axis, lengths 20..300."""
    from click.testing import CliRunner

    out = tmp_path_factory.mktemp("dyn") / "gap.onnx"
    res = invoke(CliRunner(), ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,8,50",
                               "--input-name", "input_mfcc", "--output-name", "output_wvp", "--reference-samples", "2",
                               "--dynamic-axis", "input_mfcc:3", "--dynamic-axis", "input_mfcc:0",
                               "--length-range", f"{LO}:{HI}"])
    assert res.exit_code == 0, res.output
    return out


def sample(length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 8, length)).astype(np.float32)


def ort_answer(path: Path, x: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float(sess.run(None, {"input_mfcc": x[None]})[0].ravel()[0])


def npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, x)
    return buf.getvalue()


def test_real_server_answers_every_length_in_range_and_refuses_outside(dynamic_onnx):
    with ServerProcess(dynamic_onnx, extra_args=["--no-audio", "--max-batch", "4", "--max-wait-ms", "20", "--max-queue", "64"],
                       startup_timeout=90) as srv:
        with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as client:
            md = client.get("/metadata").json()
            assert md["input"]["shape"] == [None, 1, 8, None]
            assert md["input"]["length_ranges"] == [{"axis": 3, "min": LO, "max": HI}]
            for i, n in enumerate((LO, 40, 60, 123, HI)):
                x = sample(n, seed=i)
                want = ort_answer(dynamic_onnx, x)
                r = client.post("/verify", json={"mfcc": x.tolist()})
                assert r.status_code == 200, r.text
                assert r.json()["probability"] == pytest.approx(want, abs=1e-6)
                r = client.post("/verify", content=npy_bytes(x), headers={"content-type": "application/x-npy"})
                assert r.json()["probability"] == pytest.approx(want, abs=1e-6)
            for n in (LO - 1, HI + 1):
                r = client.post("/verify", content=npy_bytes(sample(n)), headers={"content-type": "application/x-npy"})
                assert r.status_code == 422
                assert r.json()["detail"] == (f"input length {n} (axis 3) is outside the model's length range "
                                              f"{LO}..{HI}")
            # V2: -1 for the dynamic dimension; a request at length 77 answered, one at 400 a 422 naming the range
            meta = client.get("/v2/models/gap").json()
            assert meta["inputs"][0]["shape"] == [-1, 1, 8, -1]
            x = sample(77, seed=9)
            r = client.post("/v2/models/gap/infer", json={"inputs": [{"name": "input_mfcc", "shape": [1, 1, 8, 77],
                                                                      "datatype": "FP32", "data": x.ravel().tolist()}]})
            assert r.status_code == 200, r.text
            got = next(o for o in r.json()["outputs"] if o["name"] == "output_wvp")["data"][0]
            assert got == pytest.approx(ort_answer(dynamic_onnx, x), abs=1e-6)
            r = client.post("/v1/models/gap:predict", json={"instances": [sample(400).tolist()]})
            assert r.status_code == 422 and f"{LO}..{HI}" in r.json()["error"]

            # a burst of mixed lengths: each request gets its own answer
            lengths = [40, 60, 40, 100, 60, 40, 100, 60, 40, 250, 40, 60]
            xs = [sample(n, seed=100 + i) for i, n in enumerate(lengths)]

            async def burst():
                async with httpx.AsyncClient(base_url=srv.url, timeout=20, trust_env=False) as ac:
                    return await asyncio.gather(*(ac.post("/verify", content=npy_bytes(x),
                                                          headers={"content-type": "application/x-npy"}) for x in xs))

            answers = asyncio.run(burst())
            assert [a.status_code for a in answers] == [200] * len(xs), [a.text for a in answers]
            for x, a in zip(xs, answers):
                assert a.json()["probability"] == pytest.approx(ort_answer(dynamic_onnx, x), abs=1e-6)


class Spy:
    """Wraps a runner; records the input shape of every inference call."""

    def __init__(self, inner):
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)

    def infer(self, feed):
        self.shapes.append(tuple(feed["input_mfcc"].shape))
        time.sleep(0.02)  # so requests queue behind a running batch
        return self.inner.infer(feed)


def test_micro_batches_hold_one_length_and_the_oldest_goes_first(dynamic_onnx):
    from optkit.serve.inference import InferenceLoop, _make_runner

    spies: list[Spy] = []

    def factory(s):
        spies.append(Spy(_make_runner(s)))
        return spies[-1]

    engine = InferenceLoop(resolve_settings(dynamic_onnx, max_batch=4, max_wait_ms=50, max_queue=64, accept_audio=False,
                                            environ={}), runner_factory=factory)
    engine.load()
    assert engine.length_ranges == {2: (LO, HI)}
    spy = spies[0]
    spy.shapes.clear()
    lengths = [40, 60, 40, 60, 100, 40, 40, 40, 40, 60]
    xs = [sample(n, seed=i)[None] for i, n in enumerate(lengths)]

    async def burst():
        return await asyncio.gather(*(engine.predict(x) for x in xs))

    try:
        preds = asyncio.run(burst())
    finally:
        engine.close()
    for x, p in zip(xs, preds):
        assert p.probability == pytest.approx(ort_answer(dynamic_onnx, x[0]), abs=1e-6)
    # each batch is one length, never padded: the lengths run, in batches of their own
    assert sum(s[0] for s in spy.shapes) == len(xs)
    assert sorted(s[3] for s in spy.shapes for _ in range(s[0])) == sorted(lengths)
    assert max(s[0] for s in spy.shapes) == 4  # four of the 40-frame requests went together
    assert spy.shapes[0][3] == 40  # the oldest request's length first


def test_take_batch_keeps_other_lengths_waiting_in_order(dynamic_onnx):
    from optkit.serve.inference import InferenceLoop, _Pending

    engine = InferenceLoop(resolve_settings(dynamic_onnx, max_batch=3, accept_audio=False, environ={}))
    engine._closed = False
    now = time.perf_counter()
    order = [40, 60, 40, 100, 40, 40, 60]
    for i, n in enumerate(order):
        engine._waiting.append(_Pending(np.full((1, 1, 8, n), i, np.float32), None, None, now))
    first = engine._take_batch()
    assert [(p.x.shape[3], int(p.x[0, 0, 0, 0])) for p in first] == [(40, 0), (40, 2), (40, 4)]
    # the rest in their arrival order: the 60 that arrived second goes next
    assert [(p.x.shape[3], int(p.x[0, 0, 0, 0])) for p in engine._waiting] == [(60, 1), (100, 3), (40, 5), (60, 6)]
    second = engine._take_batch()
    assert [int(p.x[0, 0, 0, 0]) for p in second] == [1, 6]


def test_a_dynamic_axis_without_a_declared_range_is_refused(dynamic_onnx, tmp_path):
    from optkit.model.dynamic import META_KEY
    from optkit.serve.inference import InferenceLoop

    model = onnx.load(dynamic_onnx)
    props = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    bare = tmp_path / "bare.onnx"
    onnx.save(model, bare)
    engine = InferenceLoop(resolve_settings(bare, accept_audio=False, environ={}))
    with pytest.raises(InputError, match=r"bare.onnx: input input_mfcc has dynamic dimensions besides the batch .* "
                                         r"without a declared length range \(axis 3\); re-export it with "
                                         r"--dynamic-axis input_mfcc:AXIS --length-range MIN:MAX"):
        engine.load()


def test_audio_becomes_mfccs_of_its_natural_length_capped_at_the_range(tmp_path):
    """The GAP CNN on the MFCC front end's 40 coefficients, lengths 100..300 frames: a 2 s clip is
    200 frames, answered as ONNX Runtime answers those features; a 5 s clip keeps its centre 300
    frames; a 0.5 s clip (50 frames) is a 422 naming the range."""
    import soundfile as sf

    from click.testing import CliRunner

    from optkit.data import features
    from optkit.serve.app import create_app
    from fastapi.testclient import TestClient

    out = tmp_path / "mfcc.onnx"
    res = invoke(CliRunner(), ["export", f"{MODELS}:gap_cnn", "-o", out, "--input-shape", "1,1,40,241",
                               "--input-name", "input_mfcc", "--output-name", "output_wvp", "--reference-samples", "2",
                               "--dynamic-axis", "input_mfcc:3", "--dynamic-axis", "input_mfcc:0",
                               "--length-range", "100:300"])
    assert res.exit_code == 0, res.output
    rng = np.random.default_rng(3)

    def wav(seconds: float) -> tuple[bytes, np.ndarray]:
        y = (0.1 * rng.standard_normal(int(seconds * features.SAMPLE_RATE))).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, y, features.SAMPLE_RATE, format="WAV", subtype="FLOAT")
        return buf.getvalue(), y

    with TestClient(create_app(resolve_settings(out, environ={}))) as client:
        assert client.get("/metadata").json()["audio_input"] == "on"
        for seconds, frames in ((2.0, 200), (5.0, 300)):
            body, y = wav(seconds)
            x = features.mfcc_natural_length(y, features.SAMPLE_RATE, 300)
            assert x.shape == (1, 40, frames)
            r = client.post("/verify", content=body, headers={"content-type": "audio/wav"})
            assert r.status_code == 200, r.text
            assert r.json()["probability"] == pytest.approx(ort_answer(out, x), abs=1e-5)
        r = client.post("/verify", content=wav(0.5)[0], headers={"content-type": "audio/wav"})
        assert r.status_code == 422
        assert r.json()["detail"] == "input length 50 (axis 3) is outside the model's length range 100..300"
