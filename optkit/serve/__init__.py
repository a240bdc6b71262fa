"""Serving optkit artifacts over HTTP: the voice-verification service.

The server is a thin shell over optkit's runners, the way the CLI is a thin shell over the library:

- ``settings.py``  ServeSettings: artifact, provider, threshold, model version, queue and batching
                   limits; the EXECUTION_PROVIDER / DECISION_THRESHOLD / MODEL_VERSION / OUTPUT_KIND variables.
- ``inference.py`` InferenceLoop, the service's inference loop ("engine" in optkit always means a
                   TensorRT engine file): one runner (loaded through ``make_runner``, so a
                   silent CPU fallback is refused exactly as in ``verify``), a bounded queue, and
                   inference threads (one per ``--streams``) that form micro-batches over the
                   dynamic batch axis.
- ``payload.py``   request bodies -> one validated model input (MFCC JSON, raw .npy, WAV upload).
- ``prometheus.py`` Prometheus metrics of one app (its own registry).
- ``app.py``       ``create_app(settings)``: the FastAPI app (lifespan hook loads the inference loop).
- ``protocols.py`` / ``protocol_routes.py``  the Open Inference Protocol (V2) and TF Serving REST
                   APIs: bodies (pure numpy) and routes, over one artifact or a repository.
- ``repository.py`` / ``repository_app.py``  ``optkit serve --model-repository DIR``: numbered
                   versions, only verified ones served, picked up while serving, bounded memory.
- ``server.py``    running it on uvicorn, starting a server process on loopback (tests,
                   ``optkit loadtest --compare``).
- ``gcfreeze.py``  ``frozen_gc``: no full garbage collection inside timed work (service, load steps).

fastapi, uvicorn and prometheus_client are imported lazily (``pip install 'optkit[serve]'``).

May import: everything below release (common ... passes); never pipeline, lesson or cli.
"""
