"""``optkit serve --model-repository DIR``: the FastAPI app over a :class:`ModelRepository`.

Endpoints: the V2 and TF Serving routes (``serve.protocol_routes``) for every model in the
repository; ``POST /verify?model=NAME[&version=N]`` (the single-artifact service's /verify: the same
bodies and answers; by default the only model's newest AVAILABLE version); ``GET /health`` (the process answers), ``GET /ready`` (200 when every model has a
version answering), ``GET /metadata`` (every version with its state, verification and reason),
``GET /metrics`` (Prometheus, with ``optkit_model_version_state{model,version,state,verified}``),
and Triton's ``POST /v2/repository/index``: scan the directory now, answer the index.
The directory is scanned at start-up and every ``poll_s`` seconds (0: only on the index call).
"""
# No "from __future__ import annotations": FastAPI reads the endpoints' annotations.
import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from optkit.common.lazy import lazy_import
from optkit.serve.app import read_body, service_app, service_lifespan, verify_answer
from optkit.serve.inference import InferenceLoop, NotReady
from optkit.serve.payload import RequestRejected
from optkit.serve.prometheus import ServeMetrics
from optkit.serve.protocol_routes import add_protocol_routes
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

    async def start() -> Callable[[], Awaitable[None]]:
        repo = ModelRepository(root, settings, allow_unverified=allow_unverified, keep_versions=keep_versions,
                               runner_factory=runner_factory, on_batch=metrics.on_batch)
        holder["repo"] = repo
        await asyncio.to_thread(repo.scan)

        async def poll() -> None:
            while True:
                await asyncio.sleep(poll_s)
                try:
                    await asyncio.to_thread(repo.scan)
                except Exception as exc:  # noqa: BLE001 - a bad scan is logged; the service goes on
                    log.error("model repository scan failed: %s: %s", type(exc).__name__, exc)

        task = asyncio.create_task(poll()) if poll_s > 0 else None

        async def stop() -> None:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            holder["repo"] = None
            await asyncio.to_thread(repo.close)
        return stop

    app = service_app("optkit model repository",
                      "Serves the verified versions of every model in a directory (V2, TF Serving, /verify).",
                      service_lifespan(start), settings, metrics, holder)

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

    add_protocol_routes(app, lambda: holder["repo"], metrics, settings.threshold, settings.max_body_bytes, read_body)
    return app
