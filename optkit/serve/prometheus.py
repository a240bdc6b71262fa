"""Prometheus metrics of one app, in its own registry (two apps in one process do not collide).

With ``--workers N`` every worker process has its own registry, so ``/metrics`` shows the worker
that answered; scrape per worker (or run one worker per container, as the Docker images do).
"""
from __future__ import annotations

from typing import Any, Callable

from optkit.common.lazy import lazy_import

# seconds; the bundled model answers in a few ms, the production-size one in 30-300 ms on 2 cores
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServeMetrics:
    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]):
        prom = lazy_import("prometheus_client", extra="serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self._info: Any = None
        r = self.registry
        self.requests = prom.Counter("optkit_requests", "HTTP requests by endpoint and status code",
                                     ["endpoint", "status"], registry=r)
        self.latency = prom.Histogram("optkit_request_latency_seconds",
                                      "Server-side latency of POST /verify (body read to response), answered requests",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.inference = prom.Histogram("optkit_inference_seconds", "Duration of one runner call (one batch)",
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = prom.Histogram("optkit_batch_size", "Requests per runner call",
                                         buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r)
        self.rejected = prom.Counter("optkit_rejected", "Requests refused with 503 because the queue was full",
                                     registry=r)
        self.non_finite = prom.Counter("optkit_non_finite_outputs",
                                       "Requests refused with 422 because the model's output was NaN or infinite",
                                       registry=r)
        self.internal_errors = prom.Counter("optkit_internal_errors",
                                            "Requests answered 500 by the catch-all handler (also in "
                                            "optkit_requests_total with status 500)", registry=r)
        depth = prom.Gauge("optkit_queue_depth", "Requests waiting for inference", registry=r)
        depth.set_function(queue_depth)
        running = prom.Gauge("optkit_in_flight", "Requests in the batch being run", registry=r)
        running.set_function(in_flight)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def count(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()

    def render(self) -> bytes:
        return self._prom.generate_latest(self.registry)

    def info(self, values: dict[str, Any]) -> None:
        if self._info is None:  # registered once, even if the app's lifespan runs again
            self._info = self._prom.Info("optkit_model", "The artifact being served", registry=self.registry)
        self._info.info({k: str(v) for k, v in values.items()})
