"""The FastAPI app: ``create_app(settings)`` builds it (testable without a socket).

The artifact is loaded once, in the lifespan hook (FastAPI's replacement for the deprecated
startup event), on a worker thread so a long model load never blocks the event loop. Endpoints:

- ``POST /verify``  MFCC features (JSON or .npy) or audio -> probability, decision, threshold,
                    model version, server-side latency (4xx with a one-line reason for bad input,
                    503 + Retry-After when the queue is full);
- ``GET /health``   liveness: the process answers;
- ``GET /ready``    readiness: 200 once the model is loaded, 503 before and while shutting down;
- ``GET /metadata`` artifact sha256, precision, the provider actually in use, manifest entry, the
                    input's length range on a dynamic time axis (``input.length_ranges``);
- ``GET /metrics``  Prometheus text format;
- the Open Inference Protocol (V2) and TF Serving REST routes (``serve.protocol_routes``), the
  artifact being model ``<file stem>``, version 1.
"""
# No "from __future__ import annotations": FastAPI reads the endpoints' annotations (fastapi.Request),
# which are evaluated here, inside create_app, where fastapi is imported lazily.

import asyncio
import contextlib
import logging
import os
import time
from typing import Any, Awaitable, Callable

from optkit.common.errors import OptkitError, first_line
from optkit.common.lazy import lazy_import
from optkit.serve.inference import InferenceLoop, NonFiniteOutput, NotReady, Overloaded
from optkit.serve.prometheus import CONTENT_TYPE, ServeMetrics
from optkit.serve.protocol_routes import SingleModel, add_protocol_routes, endpoint_label
from optkit.serve.payload import RequestRejected, body_kind, from_audio, from_json, from_npy, parse_body
from optkit.serve.gcfreeze import frozen_gc
from optkit.serve.settings import ENV_SETTINGS_JSON, ServeSettings

ENDPOINTS = ("/verify", "/health", "/ready", "/metadata", "/metrics")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


class _StatusCounter:
    """Pure ASGI middleware counting responses per endpoint and status (cheaper than
    BaseHTTPMiddleware, which would add a task hop to every request)."""

    def __init__(self, app: Any, count: Callable[[str, int], None]):
        self.app = app
        self.count = count

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else endpoint_label(path)

        started = False

        async def counting_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.count(endpoint, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # starlette's outermost middleware answers 500 past this one: counted here
                self.count(endpoint, 500)
            raise


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes, declared or streamed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestRejected("Content-Length is not a number", 400) from None
        if size > limit:
            raise RequestRejected(f"request body of {size} bytes is over the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRejected(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_multipart(request: Any, body: bytes, inference: InferenceLoop) -> Any:
    """A multipart upload: a file in field ``audio`` or ``file`` (audio, or .npy by name), or
    JSON features in a text field ``mfcc``."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    sent = False

    async def replay() -> dict:  # the body was already read (with the size limit): hand it over once
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=2, max_fields=8)
    except Exception as exc:  # noqa: BLE001 - starlette's MultiPartException / python-multipart errors
        raise RequestRejected(f"malformed multipart body ({_one_line(str(exc), 150)})", 400) from None
    try:
        shape, dtype = inference.sample_shape, inference.input_dtype
        for field in ("audio", "file"):
            item = form.get(field)
            if isinstance(item, UploadFile):
                data = await item.read()
                if (item.filename or "").lower().endswith(".npy") or data.startswith(b"\x93NUMPY"):
                    return from_npy(data, shape, dtype)
                if inference.audio:
                    raise RequestRejected(f"audio is not accepted by this server: {inference.audio}; send the model input "
                                  "as JSON or .npy", 415)
                return await asyncio.to_thread(from_audio, data, shape, dtype, inference.settings.limits,
                                               inference.audio_max_frames)
        text = form.get("mfcc")
        if isinstance(text, str):
            return await asyncio.to_thread(from_json, text.encode(), shape, dtype, inference.input_name,
                                           inference.settings.limits)
        raise RequestRejected("multipart upload needs a file field 'audio' (or 'file'), or a field 'mfcc'", 422)
    finally:
        await form.close()


Started = tuple[Any, Callable[[], Awaitable[None]] | None]


def service_app(title: str, summary: str, start: Callable[[], Awaitable[Started]], key: str,
                settings: ServeSettings, metrics: ServeMetrics, holder: dict[str, Any]) -> Any:
    """The FastAPI app both services are built on (``optkit serve ARTIFACT`` and
    ``--model-repository``): the status-counting middleware, the error handlers of /verify
    (``{"detail": "..."}``, one line), ``GET /health`` and ``GET /metrics``, and the lifespan hook:
    ``await start()`` loads what the app serves and returns it (kept in ``holder[key]`` while the
    app serves; its ``close()`` runs on a worker thread at shutdown) and a coroutine function to run
    before that (or None).

    Everything alive once it has started (the models, the app, every imported module) lives as
    long as the service: out of the garbage collector's reach, a full collection while serving
    scans only request garbage (each pause delays every request in flight); an app run in-process
    (tests, an embedding program) leaves the collector as it was."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        served, before_close = await start()
        holder[key] = served
        try:
            with frozen_gc():
                yield
        finally:
            if before_close is not None:
                await before_close()
            holder[key] = None
            await asyncio.to_thread(served.close)

    fastapi = lazy_import("fastapi", extra="serve")
    responses = lazy_import("fastapi.responses", extra="serve")
    JSONResponse, Response = responses.JSONResponse, responses.Response

    app = fastapi.FastAPI(title=title, lifespan=lifespan, summary=summary)
    app.add_middleware(_StatusCounter, count=metrics.count)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = holder

    @app.exception_handler(RequestRejected)
    async def rejected(request: Any, exc: RequestRejected) -> Any:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Any, exc: Overloaded) -> Any:
        metrics.rejected.inc()
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(NonFiniteOutput)
    async def non_finite(request: Any, exc: NonFiniteOutput) -> Any:
        metrics.non_finite.inc()
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(NotReady)
    async def not_ready(request: Any, exc: NotReady) -> Any:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal(request: Any, exc: Exception) -> Any:  # a bug or a runtime failure: one line
        metrics.internal_errors.inc()  # (the 500 itself is counted by _StatusCounter)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {_one_line(first_line(exc))}"},
                            status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus_metrics() -> Any:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


async def verify_answer(request: Any, inference: InferenceLoop, metrics: ServeMetrics, t0: float) -> Any:
    """The answer of ``POST /verify`` (both services) from ``inference``, a loaded loop; ``t0`` is
    when the request arrived (perf_counter). Bad input raises RequestRejected (the app's handlers
    answer it)."""
    from fastapi.responses import JSONResponse

    settings = inference.settings
    body = await read_body(request, settings.max_body_bytes)
    ctype = request.headers.get("content-type")
    shape, dtype = inference.sample_shape, inference.input_dtype
    if not body:
        raise RequestRejected("empty request body; send MFCC features (JSON or .npy) or audio", 400)
    kind = body_kind(ctype, body)
    if inference.audio and kind == "audio":
        raise RequestRejected(f"audio is not accepted by this server: {inference.audio}; send the model input "
                              "as JSON or .npy", 415)
    if kind == "multipart":
        x = await parse_multipart(request, body, inference)
    elif kind == "npy":  # a header and a copy: cheaper than a thread hop
        x = parse_body(body, ctype, shape, dtype)
    else:  # JSON number parsing and MFCC computation take milliseconds: off the loop
        x = await asyncio.to_thread(parse_body, body, ctype, shape, dtype, inference.input_name, settings.limits,
                                    inference.audio_max_frames)
    pred = await inference.predict(x)
    latency_ms = (time.perf_counter() - t0) * 1e3
    metrics.latency.observe(latency_ms / 1e3)
    accepted = pred.probability >= settings.threshold
    return JSONResponse(
        {
            "probability": pred.probability,
            "decision": "accept" if accepted else "reject",
            "accepted": accepted,
            "threshold": settings.threshold,
            "model_version": inference.info["model_version"],
            "latency_ms": round(latency_ms, 3),
            "inference_ms": round(pred.inference_ms, 3),
            "queue_ms": round(pred.queue_ms, 3),
            "batch_size": pred.batch_size,
        },
        headers={"Server-Timing": f"total;dur={latency_ms:.3f}, inference;dur={pred.inference_ms:.3f}"},
    )


def create_app(settings: ServeSettings, runner_factory: Callable[[ServeSettings], Any] | None = None,
               startup_errors: list[BaseException] | None = None) -> Any:
    """The service for ``settings``. ``runner_factory`` replaces ``optkit.runtime.registry.make_runner``
    (tests); a load failure is appended to ``startup_errors`` (the CLI reports it in one line)."""
    fastapi = lazy_import("fastapi", extra="serve")
    responses = lazy_import("fastapi.responses", extra="serve")
    JSONResponse = responses.JSONResponse

    holder: dict[str, Any] = {"inference": None}
    metrics = ServeMetrics(queue_depth=lambda: holder["inference"].queue_depth if holder["inference"] else 0,
                           in_flight=lambda: holder["inference"].in_flight if holder["inference"] else 0)

    async def start() -> Started:
        inference = InferenceLoop(settings, runner_factory, on_batch=metrics.on_batch)
        try:
            await asyncio.to_thread(inference.load)
        except OptkitError as exc:
            if startup_errors is not None:
                startup_errors.append(exc)
            raise
        for note in inference.notes:  # what the service decided about the model on its own
            logging.getLogger("uvicorn.error").warning("%s", note)
        metrics.info({"artifact": inference.info["artifact"], "sha256": inference.info["sha256"],
                      "precision": inference.info["precision"], "provider": inference.info["provider_in_use"],
                      "model_version": inference.info["model_version"]})
        return inference, None

    app = service_app("optkit voice verification", "Serves one optkit artifact: MFCC features or audio in, a "
                      "decision out.", start, "inference", settings, metrics, holder)

    def ready_engine() -> InferenceLoop:
        inference = holder["inference"]
        if inference is None or not inference.ready:
            raise NotReady("the model is not loaded")
        return inference

    @app.get("/ready")
    async def ready() -> Any:
        inference = holder["inference"]
        if inference is None or not inference.ready:
            return JSONResponse({"ready": False}, status_code=503, headers={"Retry-After": "1"})
        return {"ready": True, "model_version": inference.info["model_version"]}

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        inference = ready_engine()
        return {
            **inference.info,
            "threshold": settings.threshold,
            "serving": {"max_queue": settings.max_queue, "max_queue_wait_ms": settings.max_queue_wait_ms,
                        "max_batch": settings.max_batch,
                        "max_wait_ms": settings.max_wait_ms, "max_body_bytes": settings.max_body_bytes,
                        "threads": settings.threads, "streams": settings.streams, "pid": os.getpid()},
        }

    @app.post("/verify")
    async def verify(request: fastapi.Request) -> Any:
        t0 = time.perf_counter()
        return await verify_answer(request, ready_engine(), metrics, t0)

    single = SingleModel(settings.artifact, lambda: holder["inference"])
    add_protocol_routes(app, lambda: single, metrics, settings.threshold, settings.max_body_bytes, read_body)
    return app


class DropStartupTraceback(logging.Filter):
    """uvicorn logs a failed lifespan's traceback; when the failure is an OptkitError the CLI
    prints its one line instead."""

    def __init__(self, errors: list[BaseException]):
        super().__init__()
        self.errors = errors

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.errors and str(record.getMessage()).startswith("Traceback"))


class _LoggedErrors(list):
    """A worker's startup errors: each logged as one line as it is recorded (its traceback dropped)."""

    def append(self, exc: BaseException) -> None:
        super().append(exc)
        logging.getLogger("uvicorn.error").error("worker [%d] cannot serve: %s", os.getpid(), exc)


def worker_startup_errors() -> list[BaseException]:
    """The startup_errors list of an app in a worker process (``--workers N``): a model that cannot
    be loaded there (removed since the service started) is one log line, not a traceback."""
    errors = _LoggedErrors()
    logging.getLogger("uvicorn.error").addFilter(DropStartupTraceback(errors))
    return errors


def create_app_from_env() -> Any:
    """Factory for uvicorn worker processes (``optkit serve --workers N``): the settings come in
    the environment variable the CLI sets."""
    text = os.environ.get(ENV_SETTINGS_JSON)
    if not text:
        raise OptkitError(f"{ENV_SETTINGS_JSON} is not set; start the service with optkit serve")
    return create_app(ServeSettings.from_json(text), startup_errors=worker_startup_errors())
