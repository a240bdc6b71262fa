"""The Open Inference Protocol (KServe V2) and TF Serving REST routes, added to an app by
:func:`add_protocol_routes` over a *model source*: a :class:`~optkit.serve.repository.ModelRepository`
(``optkit serve --model-repository``) or :class:`SingleModel` (``optkit serve ARTIFACT``: one model
named after the artifact's file stem, version 1). Requests go through the version's
``InferenceLoop`` (the queue, micro-batching and streams of ``/verify``); every refusal is
``{"error": "..."}`` with a 4xx (503 + Retry-After when busy or loading), never a 500.

V2: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}][/ready];
POST /v2/models/{name}[/versions/{v}]/infer (JSON or the binary tensor extension).
TF Serving: POST /v1/models/{name}[/versions/{v}]:predict; GET /v1/models/{name}[/versions/{v}].
"""
# No "from __future__ import annotations": FastAPI reads the endpoints' annotations (fastapi.Request).
import asyncio
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optkit.common.lazy import lazy_import
from optkit.serve.inference import InferenceLoop, NotReady, Overloaded
from optkit.serve.payload import RequestRejected
from optkit.serve import protocols
from optkit.serve.protocols import (DECISION_OUTPUT, HEADER_LENGTH, ProtocolError, parse_tf_request,
                                    parse_v2_request, tf_response, v2_datatype, v2_response)
from optkit.serve.repository import Version

TF_STATES = {"AVAILABLE": ("AVAILABLE", "OK"), "LOADING": ("LOADING", "OK"), "UNLOADED": ("END", "OK"),
             "UNAVAILABLE": ("END", "UNKNOWN"), "REFUSED": ("END", "FAILED_PRECONDITION")}


class SingleModel:
    """The one artifact of ``optkit serve ARTIFACT`` as a model source: name = the file stem, version 1."""

    def __init__(self, artifact: str, get_loop: Callable[[], InferenceLoop | None]):
        self.name = Path(artifact).stem
        self._get_loop = get_loop
        self._version = Version(self.name, 1, Path(artifact).parent, artifact=Path(artifact), verified=False,
                                reason="served as one artifact (optkit serve ARTIFACT): not checked against a report")

    def names(self) -> list[str]:
        return [self.name]

    def versions(self, name: str) -> list[Version]:
        if name != self.name:
            raise ProtocolError(f"model {name!r} is not served here; this server serves {self.name!r}", 404)
        loop = self._get_loop()
        self._version.loop = loop
        self._version.state = "AVAILABLE" if loop is not None and loop.ready else "LOADING"
        return [self._version]

    @property
    def ready(self) -> bool:
        return _ready(self, self.name)

    def lookup(self, name: str, version: str | None = None) -> tuple[Version, InferenceLoop]:
        v = self.versions(name)[0]
        if version is not None and version != "1":
            raise ProtocolError(f"model {name!r} has no version {version[:40]!r}; it has version 1", 404)
        loop = v.loop
        if loop is None or not loop.ready:
            raise ProtocolError(f"model {name!r} is loading", 503)
        return v, loop


def output_tensors(loop: InferenceLoop, probabilities: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    p = probabilities.astype(np.float32).reshape(-1, 1)
    return {loop.output_name: p, DECISION_OUTPUT: p >= threshold}


def model_metadata(name: str, versions: list[Version], threshold: float) -> dict[str, Any]:
    live = [v for v in versions if v.state == "AVAILABLE" and v.loop is not None]
    out: dict[str, Any] = {"name": name, "versions": [str(v.number) for v in live], "platform": "",
                           "inputs": [], "outputs": []}
    if live:
        loop = live[0].loop
        artifact = Path(loop.settings.artifact)
        out["platform"] = ("tensorrt_plan" if loop.settings.is_engine else
                           "openvino" if loop.settings.provider == "openvino" else "onnxruntime_onnx")
        out["inputs"] = [{"name": loop.input_name, "datatype": v2_datatype(loop.input_dtype),
                          "shape": [-1, *(-1 if d is None else int(d) for d in loop.sample_shape)]}]
        out["outputs"] = [{"name": loop.output_name, "datatype": "FP32", "shape": [-1, 1]},
                          {"name": DECISION_OUTPUT, "datatype": "BOOL", "shape": [-1, 1]}]
        out["artifact"] = artifact.name
    out["optkit"] = {"threshold": threshold, "versions": [v.status() for v in versions]}
    return out


async def run_rows(loop: InferenceLoop, x: np.ndarray) -> np.ndarray:
    """Probabilities of a (batch, ...) input: each sample is one request on the loop's queue (so
    the loop micro-batches it with everything else in flight)."""
    n = x.shape[0]
    if n > loop.settings.max_queue:
        raise ProtocolError(f"a batch of {n} samples is more than this server queues ({loop.settings.max_queue}, "
                            "--max-queue); send fewer per request", 400)
    if n == 1:
        return np.array([(await loop.predict(x)).probability])
    preds = await asyncio.gather(*(loop.predict(x[i:i + 1]) for i in range(n)))
    return np.array([p.probability for p in preds])


def add_protocol_routes(app: Any, source: Callable[[], Any], metrics: Any, threshold: float,
                        max_body_bytes: int, read_body: Callable[..., Any],
                        extensions: tuple[str, ...] = ("binary_tensor_data",)) -> None:
    """Add the V2 and TF Serving routes to ``app``; ``source()`` is the model source (None before
    the service has started; its ``ready``: every model it serves answers); ``read_body(request,
    limit)`` reads a body with the size limit; ``extensions``: the V2 extensions ``GET /v2`` names."""
    fastapi = lazy_import("fastapi", extra="serve")
    responses = lazy_import("fastapi.responses", extra="serve")
    JSONResponse, Response = responses.JSONResponse, responses.Response
    from optkit import __version__

    def error(exc: BaseException) -> Any:
        if isinstance(exc, Overloaded):
            metrics.rejected.inc()
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})
        if isinstance(exc, NotReady):
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        if isinstance(exc, RequestRejected):
            headers = {"Retry-After": "1"} if exc.status == 503 else None
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)
        detail = " ".join(str(exc).split())[:300]
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {detail}"}, status_code=500)

    def models() -> Any:
        s = source()
        if s is None:
            raise NotReady("the server is starting")
        return s

    def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
        import functools

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure in the protocol's error shape
                return error(exc)
        return wrapper

    from fastapi.exception_handlers import http_exception_handler
    from starlette.exceptions import HTTPException

    @app.exception_handler(HTTPException)
    async def protocol_http_error(request: Any, exc: Any) -> Any:  # unknown routes and methods, in each API's shape
        if request.url.path.startswith(("/v1/", "/v2/")):
            return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
        return await http_exception_handler(request, exc)

    # -- V2: server and model status ---------------------------------------------------------
    @app.get("/v2")
    async def v2_server() -> Any:
        return {"name": "optkit", "version": __version__, "extensions": list(extensions)}

    @app.get("/v2/health/live")
    async def v2_live() -> Any:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> Any:
        s = source()
        ok = s is not None and s.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}")
    @guarded
    async def v2_model(name: str) -> Any:
        return model_metadata(name, models().versions(name), threshold)

    @app.get("/v2/models/{name}/versions/{version}")
    @guarded
    async def v2_model_version(name: str, version: str) -> Any:
        v, _ = models().lookup(name, version)
        return model_metadata(name, [v], threshold)

    @app.get("/v2/models/{name}/ready")
    @guarded
    async def v2_model_ready(name: str) -> Any:
        v, _ = models().lookup(name)
        return {"name": name, "version": str(v.number), "ready": True}

    @app.get("/v2/models/{name}/versions/{version}/ready")
    @guarded
    async def v2_model_version_ready(name: str, version: str) -> Any:
        v, _ = models().lookup(name, version)
        return {"name": name, "version": str(v.number), "ready": True}

    # -- V2: inference -------------------------------------------------------------------------
    async def v2_infer(request: Any, name: str, version: str | None) -> Any:
        t0 = time.perf_counter()
        v, loop = models().lookup(name, version)
        body = await read_body(request, max_body_bytes)
        if not body:
            raise ProtocolError("empty request body", 400)
        names = [loop.output_name, DECISION_OUTPUT]
        parse = lambda: parse_v2_request(body, request.headers.get(HEADER_LENGTH), loop.input_name,  # noqa: E731
                                         loop.sample_shape, loop.input_dtype, names, loop.settings.limits)
        req = parse() if request.headers.get(HEADER_LENGTH) else await asyncio.to_thread(parse)
        probs = await run_rows(loop, req.x)
        content, json_size = v2_response(name, str(v.number), req, output_tensors(loop, probs, threshold))
        metrics.latency.observe(time.perf_counter() - t0)
        if json_size is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_size)})

    @app.post("/v2/models/{name}/infer")
    @guarded
    async def v2_infer_default(request: fastapi.Request, name: str) -> Any:
        return await v2_infer(request, name, None)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    @guarded
    async def v2_infer_version(request: fastapi.Request, name: str, version: str) -> Any:
        return await v2_infer(request, name, version)

    # -- TF Serving ----------------------------------------------------------------------------
    def tf_status(name: str, versions: list[Version]) -> dict[str, Any]:
        rows = []
        for v in versions:
            state, code = TF_STATES.get(v.state, ("END", "UNKNOWN"))
            rows.append({"version": str(v.number), "state": state,
                         "status": {"error_code": code, "error_message": v.reason}, "optkit_verified": v.verified})
        return {"model_version_status": rows}

    @app.get("/v1/models/{name}")
    @guarded
    async def tf_model(name: str) -> Any:
        return tf_status(name, models().versions(name))

    @app.get("/v1/models/{name}/versions/{version}")
    @guarded
    async def tf_model_version(name: str, version: str) -> Any:
        match = [v for v in models().versions(name) if str(v.number) == version]
        if not match:
            raise ProtocolError(f"model {name!r} has no version {version[:40]!r}", 404)
        return tf_status(name, match)

    async def tf_predict(request: Any, name: str, version: str | None) -> Any:
        t0 = time.perf_counter()
        v, loop = models().lookup(name, version)
        body = await read_body(request, max_body_bytes)
        if not body:
            raise ProtocolError("empty request body", 400)
        x, form = await asyncio.to_thread(parse_tf_request, body, loop.input_name, loop.sample_shape, loop.input_dtype,
                                          loop.settings.limits)
        probs = await run_rows(loop, x)
        metrics.latency.observe(time.perf_counter() - t0)
        return Response(protocols.dumps(tf_response(probs, form)), media_type="application/json")

    @app.post("/v1/models/{name}:predict")
    @guarded
    async def tf_predict_default(request: fastapi.Request, name: str) -> Any:
        return await tf_predict(request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:predict")
    @guarded
    async def tf_predict_version(request: fastapi.Request, name: str, version: str) -> Any:
        return await tf_predict(request, name, version)


def _ready(source: Any, name: str) -> bool:
    try:
        source.lookup(name)
    except (ProtocolError, NotReady):
        return False
    return True


def endpoint_label(path: str) -> str:
    """The Prometheus endpoint label of a protocol route (bounded: no model names)."""
    if path.startswith("/v2/"):
        return "/v2/infer" if path.endswith("/infer") else "/v2"
    if path.startswith("/v1/"):
        return "/v1/predict" if path.endswith(":predict") else "/v1"
    return "other"
