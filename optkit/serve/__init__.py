"""Serving optkit artifacts over HTTP: the voice-verification service.

The server is a thin shell over optkit's runners, the way the CLI is a thin shell over the library:

- ``settings.py``  ServeSettings: artifact, provider, threshold, model version, queue and batching
                   limits; the EXECUTION_PROVIDER / DECISION_THRESHOLD / MODEL_VERSION / OUTPUT_KIND variables.
- ``engine.py``    InferenceEngine: one runner (loaded through ``optkit.runtime.registry.make_runner``, so a
                   silent CPU fallback is refused exactly as in ``verify``), a bounded queue, and
                   inference threads (one per ``--streams``) that form micro-batches over the
                   dynamic batch axis.
- ``payload.py``   request bodies -> one validated model input (MFCC JSON, raw .npy, WAV upload).
- ``metrics.py``   Prometheus metrics of one app (its own registry).
- ``app.py``       ``create_app(settings)``: the FastAPI app (lifespan hook loads the engine).
- ``server.py``    running it on uvicorn, starting a server process on loopback (tests,
                   ``optkit loadtest --compare``), and ``frozen_gc`` (service and load generator).

fastapi, uvicorn and prometheus_client are imported lazily (``pip install 'optkit[serve]'``).
"""
