"""``optkit serve --model-repository DIR``: the FastAPI app over a :class:`ModelRepository`.

Endpoints: the V2 and TF Serving routes (``serve.protocol_routes``) for every model in the
repository; ``POST /verify?model=NAME[&version=N]`` (the single-artifact service's /verify: the same
bodies and answers; by default the only model's newest AVAILABLE version); ``GET /health`` (the
process answers), ``GET /ready`` (200 when every model, but those unloaded on request, has a version
answering), ``GET /metadata`` (every version with its state, verification and reason),
``GET /metrics`` (Prometheus, with ``optkit_model_version_state{model,version,state,verified}``),
and Triton's repository extension: ``POST /v2/repository/index`` (scan the directory now, answer
the index), ``POST /v2/repository/models/{name}/unload`` and ``.../load`` (stop serving a model
until it is loaded again; scans leave it unloaded).
The directory is scanned at start-up and every ``poll_s`` seconds (0: only on the index call).
"""
# No "from __future__ import annotations": FastAPI reads the endpoints' annotations.
import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from optkit.common.lazy import lazy_import
from optkit.serve.app import Started, read_body, service_app, verify_answer
from optkit.serve.inference import InferenceLoop, NotReady
from optkit.serve.payload import RequestRejected
from optkit.serve.prometheus import ServeMetrics
from optkit.serve.protocol_routes import add_protocol_routes
from optkit.serve import protocols
from optkit.serve.protocols import ProtocolError
from optkit.serve.repository import ModelRepository, Version
from optkit.serve.settings import ServeSettings

log = logging.getLogger("uvicorn.error")


class _VersionStates:
    """A Prometheus collector: one sample per model version, labelled with its state and whether it
    was verified (``--allow-unverified`` versions show ``verified="false"``)."""

    def __init__(self, repo: Callable[[], ModelRepository | None]):
        self.repo = repo

    def collect(self):  # noqa: ANN201 - prometheus_client's collector protocol
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily("optkit_model_version_state", "Model versions in the repository (1 per version)",
                              labels=["model", "version", "state", "verified"])
        repo = self.repo()
        for row in repo.index() if repo is not None else []:
            g.add_metric([row["name"], row["version"], row["state"], str(row["verified"]).lower()], 1.0)
        yield g


def choose_version(repo: ModelRepository, model: str | None, version: str | None) -> tuple[Version, InferenceLoop]:
    """The version a ``/verify`` request goes to: ``model`` (by default the repository's only one)
    and ``version`` (by default its newest AVAILABLE one); RequestRejected (4xx) or NotReady (503)."""
    if model is None:
        names = repo.names()
        if not names:
            raise RequestRejected("the repository serves no model (yet)", 404)
        if len(names) > 1:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            raise RequestRejected(f"this repository serves several models ({shown}); name one: "
                                  "/verify?model=NAME[&version=N]", 400)
        model = names[0]
    try:
        return repo.lookup(model, version)
    except ProtocolError as exc:
        if exc.status == 503:  # loading: answered with Retry-After, like the single-artifact service
            raise NotReady(str(exc)) from None
        raise


def create_repository_app(settings: ServeSettings, root: str | Path, allow_unverified: bool = False,
                          keep_versions: int = 1, poll_s: float = 2.0,
                          runner_factory: Callable[[ServeSettings], Any] | None = None) -> Any:
    """The service for the repository at ``root``; ``settings`` gives the provider, threshold and
    the queue/batching limits every version's loop runs with (its ``artifact`` is not used)."""
    fastapi = lazy_import("fastapi", extra="serve")
    responses = lazy_import("fastapi.responses", extra="serve")
    JSONResponse = responses.JSONResponse
    holder: dict[str, Any] = {"repo": None}

    def loops() -> list:
        repo = holder["repo"]
        return repo.loops() if repo is not None else []

    metrics = ServeMetrics(queue_depth=lambda: sum(lp.queue_depth for lp in loops()),
                           in_flight=lambda: sum(lp.in_flight for lp in loops()))
    metrics.registry.register(_VersionStates(lambda: holder["repo"]))

    async def start() -> Started:
        repo = ModelRepository(root, settings, allow_unverified=allow_unverified, keep_versions=keep_versions,
                               runner_factory=runner_factory, on_batch=metrics.on_batch)
        await asyncio.to_thread(repo.scan)

        async def poll() -> None:
            while True:
                await asyncio.sleep(poll_s)
                try:
                    await asyncio.to_thread(repo.scan)
                except Exception as exc:  # noqa: BLE001 - a bad scan is logged; the service goes on
                    log.error("model repository scan failed: %s: %s", type(exc).__name__, exc)

        if poll_s <= 0:
            return repo, None
        task = asyncio.create_task(poll())

        async def stop_polling() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return repo, stop_polling

    app = service_app("optkit model repository", "Serves the verified versions of every model in a directory "
                      "(V2, TF Serving, /verify).", start, "repo", settings, metrics, holder)

    @app.get("/ready")
    async def ready() -> Any:
        repo = holder["repo"]
        ok = repo is not None and repo.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "1"})

    @app.get("/metadata")
    async def metadata() -> Any:
        repo = holder["repo"]
        return {"repository": Path(root).name, "provider": settings.provider, "threshold": settings.threshold,
                "allow_unverified": allow_unverified, "keep_versions": keep_versions, "poll_s": poll_s,
                "models": repo.index() if repo is not None else []}

    @app.post("/verify")
    async def verify(request: fastapi.Request, model: str | None = None, version: str | None = None) -> Any:
        t0 = time.perf_counter()
        repo = holder["repo"]
        if repo is None:
            raise NotReady("the server is starting")
        _, loop = choose_version(repo, model, version)
        return await verify_answer(request, loop, metrics, t0)

    @app.post("/v2/repository/index")
    async def repository_index() -> Any:
        repo = holder["repo"]
        if repo is None:
            return JSONResponse({"error": "the server is starting"}, status_code=503, headers={"Retry-After": "1"})
        await asyncio.to_thread(repo.scan)
        return repo.index()

    async def control(request: Any, name: str, action: str, allowed: dict[str, type]) -> Any:
        """Triton's repository extension: load or unload ``name``; errors in the V2 shape."""
        try:
            repo = holder["repo"]
            if repo is None:
                raise NotReady("the server is starting")
            body = await read_body(request, 64 * 1024)
            params = (protocols.loads(body) if body.strip() else {}) or {}
            params = params.get("parameters") or {} if isinstance(params, dict) else None
            if not isinstance(params, dict):
                raise ProtocolError(f"a {action} request is a JSON object with an optional object 'parameters'", 400)
            for key, value in params.items():
                if key not in allowed or not isinstance(value, allowed[key]):
                    raise ProtocolError(f"{action} parameter {key[:40]!r} is not supported here (optkit serves the "
                                        "verified versions in the directory; no config or file overrides)", 400)
            await asyncio.to_thread(repo.load if action == "load" else repo.unload, name)
            return JSONResponse({})
        except ValueError as exc:  # the body is not JSON (orjson's and json's decode errors are ValueErrors)
            return JSONResponse({"error": f"the request is not valid JSON ({' '.join(str(exc).split())[:200]})"},
                                status_code=400)
        except NotReady as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except RequestRejected as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(request: fastapi.Request, name: str) -> Any:
        return await control(request, name, "load", {})

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(request: fastapi.Request, name: str) -> Any:
        return await control(request, name, "unload", {"unload_dependents": bool})  # no model depends on another

    add_protocol_routes(app, lambda: holder["repo"], metrics, settings.threshold, settings.max_body_bytes, read_body,
                        extensions=("binary_tensor_data", "model_repository"))
    return app
