"""``optkit serve``: the voice-verification service for one artifact, or for a model repository
(FastAPI on uvicorn)."""
from __future__ import annotations

import click


@click.command("serve")
@click.argument("artifact", type=click.Path(dir_okay=False), required=False)
@click.option("--model-repository", "repository", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Serve every model under DIR/<name>/<version>/ instead of one ARTIFACT: only versions whose "
                   "report.json passed verification for this runtime, the newest answering by default; new "
                   "versions are picked up while serving.")
@click.option("--allow-unverified", is_flag=True,
              help="With --model-repository: also serve versions without a passing report.json (marked "
                   "verified=false in metadata and metrics).")
@click.option("--keep-versions", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --model-repository: the newest N servable versions of each model stay loaded.")
@click.option("--poll-interval", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="With --model-repository: seconds between scans of DIR (0: only POST /v2/repository/index).")
@click.option("--provider", default=None,
              help="cpu (ONNX Runtime), openvino, cuda or tensorrt (ONNX Runtime EPs); ONNX Runtime names "
                   "such as CUDAExecutionProvider work too. Default: $EXECUTION_PROVIDER, else cpu "
                   "(.engine files: tensorrt).")
@click.option("--threshold", type=float, default=None,
              help="Accept when probability >= this. Default: $DECISION_THRESHOLD, else 0.5.")
@click.option("--output", "output", default=None, metavar="NAME",
              help="The model output to serve. Default: the only output, or of several the only one giving one "
                   "value per sample.")
@click.option("--output-kind", type=click.Choice(["auto", "probability", "logit"]), default=None,
              help="What that output is. auto: a probability when a Sigmoid/Softmax computes it, else the model is "
                   "refused if it gives values outside [0, 1]; logit: the service applies a sigmoid. "
                   "Default: $OUTPUT_KIND, else auto.")
@click.option("--force-output-kind", is_flag=True, default=False,
              help="Serve --output-kind as given even where the graph says otherwise (logit on an output a "
                   "Sigmoid/Softmax computes is refused without it; with it, /metadata notes it).")
@click.option("--model-version", default=None,
              help="Reported with every answer. Default: $MODEL_VERSION, else <artifact stem>@<sha256 prefix>.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 inside a container).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="uvicorn worker processes, each with its own copy of the model.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="The runtime's threads per worker, all streams together [default: CPU count / workers].")
@click.option("--streams", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inferences run at once per worker, sharing one session and its threads. 1: lowest latency "
                   "(each inference uses every thread); 2 on a CPU: more requests per second for small models, "
                   "slower single requests. Combines with --max-batch. Not for .engine files.")
@click.option("--max-queue", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests allowed to wait for inference; beyond that: 503 with Retry-After.")
@click.option("--max-queue-wait-ms", type=click.FloatRange(min=1), default=5000.0, show_default=True,
              help="Longest a request may wait for inference; a request the queue cannot start in time gets "
                   "503 with Retry-After (judged from the measured batch time, and again when it is reached).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Micro-batching: up to this many waiting requests run as one batch (dynamic batch axis).")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="With --max-batch > 1: how long the first request of a batch waits for more. 0: a batch is "
                   "what queued while the previous one ran (no wait when the server is idle); more where a batch "
                   "costs little more than one request (a GPU).")
@click.option("--max-body-kb", type=click.IntRange(min=1), default=8192, show_default=True,
              help="Larger request bodies get 413.")
@click.option("--max-audio-seconds", type=float, default=None,
              help="Longer audio gets 413, judged from the file's header before decoding. "
                   "Default: $MAX_AUDIO_SECONDS, else 60.")
@click.option("--audio/--no-audio", default=True, show_default=True,
              help="Accept audio (WAV/FLAC uploads -> optkit's MFCC front end); its libraries load at start-up.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@click.option("--access-log/--no-access-log", default=False, show_default=True,
              help="One log line per request (costs throughput on small models).")
def serve(artifact, repository, allow_unverified, keep_versions, poll_interval, provider, threshold, output,
          output_kind, force_output_kind, model_version, host, port, workers, threads, streams, max_queue,
          max_queue_wait_ms, max_batch, max_wait_ms, max_body_kb, max_audio_seconds, audio, log_level,
          access_log) -> None:
    """Serve ARTIFACT (.onnx or .engine) over HTTP: POST /verify, GET /health, /ready, /metadata, /metrics,
    and the Open Inference Protocol (V2) and TF Serving REST routes (model name: the file stem).
    With --model-repository DIR, serve the verified versions of every model in DIR (V2, TF Serving).

    The model is loaded once at start-up through optkit's runners: a GPU provider that would
    silently fall back to the CPU is refused, as in `optkit verify`. The environment variables
    EXECUTION_PROVIDER, DECISION_THRESHOLD, MODEL_VERSION, OUTPUT_KIND (auto, probability,
    logit) and MAX_AUDIO_SECONDS are honoured; flags win. With --workers N a worker that dies is
    replaced; one that cannot be replaced leaves the others serving, and the service exits 1 when
    none is left.

    \b
    Examples:
      optkit serve optkit-out/model.int8.onnx --port 8000
      EXECUTION_PROVIDER=CUDAExecutionProvider optkit serve model.onnx --threshold 0.6
      optkit serve model.onnx --provider cuda --max-batch 8 --max-wait-ms 2
      optkit serve model.int8.onnx --streams 2 --max-batch 4
      optkit serve my_logits_model.onnx --output score --output-kind logit
      OUTPUT_KIND=logit optkit serve my_logits_model.onnx
      curl -s -H 'Content-Type: application/x-npy' --data-binary @sample.npy http://127.0.0.1:8000/verify
      curl -s -F audio=@clip.wav http://127.0.0.1:8000/verify
      optkit serve --model-repository models/ --keep-versions 2
      curl -s http://127.0.0.1:8000/v2/models/voice
    """
    import os

    from optkit.common.fileio import require_file
    from optkit.serve.server import run_server
    from optkit.serve.settings import resolve_settings

    if (artifact is None) == (repository is None):
        raise click.UsageError("give one ARTIFACT or --model-repository DIR")
    if repository is None and (allow_unverified or keep_versions != 1 or poll_interval != 2.0):
        raise click.UsageError("--allow-unverified, --keep-versions and --poll-interval need --model-repository")
    if repository is not None:
        from optkit.common.errors import InputError

        if not os.path.isdir(repository):
            raise InputError(f"model repository {repository} is not a directory")
        if workers > 1:
            raise click.UsageError("--model-repository runs one worker (its versions load and unload in it)")
        artifact = repository
    else:
        require_file(artifact, "artifact")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    from optkit.common.fileio import check_utf8_name

    for name, what in ((artifact, "artifact"), (repository, "model repository")):
        if name is not None:
            check_utf8_name(name, what)  # one line, not ONNX Runtime's constructor error
    settings = resolve_settings(artifact, provider=provider, threshold=threshold, model_version=model_version,
                                threads=threads, streams=streams, max_queue=max_queue, max_queue_wait_ms=max_queue_wait_ms,
                                max_batch=max_batch, max_wait_ms=max_wait_ms, max_body_bytes=max_body_kb * 1024, accept_audio=audio,
                                output=output, output_kind=output_kind, max_audio_seconds=max_audio_seconds,
                                force_output_kind=force_output_kind)
    app = None
    if repository is not None:
        from optkit.serve.repository_app import create_repository_app

        app = create_repository_app(settings, repository, allow_unverified=allow_unverified,
                                    keep_versions=keep_versions, poll_s=poll_interval)
    click.echo(f"serving {artifact} on http://{host}:{port} (provider {settings.provider}, threshold "
               f"{settings.threshold:g}, queue {max_queue}, batch {max_batch}, streams {streams}, workers {workers})", err=True)
    run_server(settings, host=host, port=port, workers=workers, log_level=log_level, access_log=access_log, app=app)
