"""kserve's own REST client (``kserve.InferenceRESTClient``) against ``optkit serve --model-repository``:
V2 infer with JSON tensors and with the binary extension, readiness, model metadata read into
kserve's V2 data model, errors, and TF-Serving-shaped predict through the client's V1 protocol.

kserve pins protobuf<7 (kserve 0.21: ``protobuf>=6.33.5,<7``, no release resolves with protobuf 7),
so it is not installed beside the main environment's protobuf 7: this file runs in its own tox
environment (``tox -e kserve``, part of plain ``tox``: the README's test command and CI) and is
skipped, naming the package, where kserve is not installed. No torch here (that environment has
none): the model is built with onnx's helpers and its reference computed with ONNX Runtime.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
kserve = pytest.importorskip("kserve", reason="kserve is not installed: its REST client is tested in `tox -e kserve` "
                                              "(kserve pins protobuf<7; the main environment has protobuf 7)")
httpx = pytest.importorskip("httpx", reason="optkit[serve] is not installed")

from serve_models import build_slow_model  # noqa: E402

from optkit.serve.server import ServerProcess  # noqa: E402

SAMPLE = (1, 40, 241)


def ort_probabilities(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_mfcc": x})[0].reshape(-1)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> tuple[Path, Path]:
    """A repository with model ``voice`` version 1, exported by ``verify --export-to-repository``."""
    from click.testing import CliRunner

    from optkit.verification.reference import Reference, reference_path_for, save_reference

    d = tmp_path_factory.mktemp("kserve")
    model = build_slow_model(d / "small.onnx", channels=2, convs=1)
    xs = np.random.default_rng(0).standard_normal((8, *SAMPLE)).astype(np.float32)
    save_reference(reference_path_for(model), Reference({"input_mfcc": xs},
                                                        {"output_wvp": ort_probabilities(model, xs).reshape(-1, 1)}))
    result = invoke(CliRunner(), ["verify", str(model), "--reference", str(reference_path_for(model)),
                                  "--export-to-repository", str(d / "models" / "voice")])
    assert result.exit_code == 0, result.output
    return d / "models", model


def test_kserve_rest_client_drives_the_repository_server(repository):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from kserve.protocol.infer_type import RequestedOutput
    from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse

    root, model = repository
    x = np.random.default_rng(1).standard_normal((3, *SAMPLE)).astype(np.float32)
    want = ort_probabilities(model, x)

    def request(binary: bool, rid: str, data: np.ndarray = x) -> InferRequest:
        inp = InferInput("input_mfcc", list(data.shape), "FP32")
        inp.set_data_from_numpy(data, binary_data=binary)
        outputs = [RequestedOutput("output_wvp", {"binary_data": binary}), RequestedOutput("accepted")]
        return InferRequest("voice", [inp], request_id=rid, request_outputs=outputs)

    def output(res: object, name: str) -> np.ndarray:
        return next(o for o in res.outputs if o.name == name).as_numpy()

    async def drive(url: str) -> dict:
        seen: dict = {}
        # an explicit transport: no proxy from the environment between the client and 127.0.0.1
        v2 = RESTConfig(protocol="v2", timeout=30, transport=httpx.AsyncHTTPTransport())
        async with InferenceRESTClient(v2) as client:
            seen["live"] = await client.is_server_live(url)
            seen["ready"] = await client.is_server_ready(url)
            seen["model_ready"] = await client.is_model_ready(url, "voice")
            seen["unknown_ready"] = await client.is_model_ready(url, "nope")
            for binary in (False, True):
                seen[binary] = await client.infer(url, request(binary, f"k-{binary}"), model_name="voice")
            bad = np.zeros((1, 1, 40, 240), np.float32)
            for key, req, name in [("bad_shape", request(False, "k-bad", bad), "voice"),
                                   ("bad_model", request(False, "k-nope"), "nope")]:
                with pytest.raises(httpx.HTTPStatusError) as info:
                    await client.infer(url, req, model_name=name)
                seen[key] = info.value
        v1 = RESTConfig(protocol="v1", timeout=30, transport=httpx.AsyncHTTPTransport())
        async with InferenceRESTClient(v1) as client:  # kserve's V1 protocol: TF Serving's :predict
            seen["v1"] = await client.infer(url, {"instances": x.tolist()}, model_name="voice")
        return seen

    args = ["--model-repository", str(root), "--no-audio", "--poll-interval", "0"]
    with ServerProcess(None, extra_args=args, startup_timeout=90) as srv:
        seen = asyncio.run(drive(srv.url))
        with httpx.Client(base_url=srv.url, timeout=10, trust_env=False) as c:
            # kserve's REST client has no metadata call: the answer is read into kserve's own V2 model
            meta = ModelMetadataResponse.model_validate(c.get("/v2/models/voice").json())

    assert seen["live"] is True and seen["ready"] is True
    assert seen["model_ready"] is True and seen["unknown_ready"] is False
    for binary in (False, True):
        res = seen[binary]
        # (kserve 0.21's InferResponse.from_bytes drops the answer's model_version; tritonclient reads it)
        assert res.id == f"k-{binary}" and res.model_name == "voice"
        np.testing.assert_allclose(output(res, "output_wvp").ravel(), want, atol=1e-6)
        assert (output(res, "accepted").ravel() == (want >= 0.5)).all()
    err = seen["bad_shape"]
    assert err.response.status_code == 400 and "the model takes [-1, 1, 40, 241]" in str(err)
    assert seen["bad_model"].response.status_code == 404 and "'nope' is not in the repository" in str(seen["bad_model"])
    np.testing.assert_allclose(np.array(seen["v1"]["predictions"]).ravel(), want, atol=1e-6)
    assert meta.name == "voice" and meta.versions == ["1"] and meta.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, t.shape) for t in meta.inputs] == [("input_mfcc", "FP32", [-1, *SAMPLE])]
    assert [t.name for t in meta.outputs] == ["output_wvp", "accepted"]
