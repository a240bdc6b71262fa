"""Scale-out on Ray: the same verification, split into shards across a cluster.

Ray is the engine; optkit writes no scheduler, queue or RPC of its own. The pieces:

- :func:`ray_session` connects to a cluster (``auto``, ``ray://host:port``, ``host:port``) or
  starts a local Ray instance, and turns every way that can fail into one clear error.
- :class:`RayExecutor` runs one artifact over the reference inputs: a pool of Ray actors, each
  holding one runner (the artifact is loaded once per actor, from bytes shipped through Ray's
  object store, so worker machines need no shared disk); each shard's inputs are one object
  in the store, fetched only by the node that runs it; shards are ``ray.util.ActorPool.map``-ed over the actors, which returns them in input
  order. Actors are restarted and their in-flight shard retried when a worker process dies.
- Inputs read lazily from a data directory (a linked reference, optkit.data.source) are not
  shipped at all: each shard is a row range, and the worker reads those rows from the directory
  itself (described by a small spec: names, counts, sha256s), so the driver never holds the
  inputs. The directory must then be at the same path on every node (shared storage or a copy);
  a worker that cannot find it, or finds other bytes, fails with one clear error.
- :meth:`RayExecutor.collect_stats` shards int8 calibration statistics (merged exactly) and
  :meth:`RayExecutor.trial_map` runs the int8 search's trials as Ray tasks (the search keeps
  what a sequential search keeps, so the chosen model is the same).

Why the results are identical to one process, by construction: a shard boundary is always a
multiple of the batch size, so every batch a worker runs is exactly a batch the single-process
path runs (same samples, same order, same runtime settings); outputs are gathered in input order
and every metric and gate is computed on the driver by the same code. ``tests/test_distributed.py``
checks it by comparing the JSON reports.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from optkit.common.errors import InputError, OptkitError, first_line
from optkit.common.lazy import lazy_import

LOCAL = "local"


@contextlib.contextmanager
def ray_session(address: str | None = LOCAL, num_cpus: int | None = None) -> Iterator[Any]:
    """Yield the ``ray`` module connected to ``address`` (``local``/None = a new local instance).

    Reuses an already initialised Ray; shuts down only what it started.
    """
    ray = lazy_import("ray", extra="ray")
    local = address in (None, "", LOCAL)
    if not local:
        _require_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if local:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
        kwargs["_node_ip_address"] = "127.0.0.1"  # a local instance listens on loopback only
    else:
        kwargs["address"] = address
    try:
        with _ray_logs_kept_out():
            ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if local else f"the Ray cluster at {address!r}"
        hint = ("" if local else
                "; is the cluster running (ray status), and for a token-authenticated cluster are "
                "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) set here?")
        raise InputError(f"could not connect to {where}: {_line(exc)}{hint}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _require_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nothing listens on: ray.init itself retries
    an unreachable GCS for minutes before it gives up."""
    import socket

    if address == "auto":
        return  # Ray finds the local cluster itself and fails at once when there is none
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise InputError(f"Ray cluster address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            reply = _http2_probe(conn, timeout)
    except OSError as exc:
        raise InputError(f"could not connect to the Ray cluster at {address!r}: nothing answers at "
                         f"{host}:{port} ({exc.strerror or exc}); is the cluster running (ray status)?") from exc
    if reply and not (len(reply) >= 9 and reply[3] == 0x04):  # anything but an HTTP/2 SETTINGS frame
        status = reply.split(b"\n", 1)[0].decode("latin-1").strip()[:40]
        raise InputError(f"could not connect to the Ray cluster at {address!r}: {host}:{port} answers, but not "
                         f"as Ray's gRPC port does (it said {status!r}); is that the "
                         "dashboard's port? (the cluster address is the head's GCS port, 6379 by default)")


def _http2_probe(conn: Any, timeout: float) -> bytes:
    """What the server at ``conn`` says to an HTTP/2 connection preface and an empty SETTINGS frame
    (RFC 9113 3.4): Ray's GCS and client server speak gRPC, so they answer with a SETTINGS frame; a web
    server answers "HTTP/1.1 400" or a page. ray.init would instead retry for ~20 s, printing its C++ warnings.
    No library does this one exchange without a gRPC stub of Ray's own service, hence the 10 lines."""
    import socket

    conn.settimeout(min(timeout, 2.0))
    try:
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        return conn.recv(64)
    except (socket.timeout, OSError):
        return b""


@contextlib.contextmanager
def _ray_logs_kept_out() -> Iterator[None]:
    """Ray's C++ core writes its warnings (connection retries, ...) straight to file descriptor 2;
    they go to a temporary file instead, shown only with OPTKIT_DEBUG=1. An error is still one line."""
    import sys
    import tempfile

    if os.environ.get("OPTKIT_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _line(exc: BaseException) -> str:
    return first_line(exc) or type(exc).__name__


def shard_bounds(n: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """Split ``range(n)`` into at most ``shards`` contiguous pieces whose starts are multiples of
    ``batch_size`` (so each worker runs exactly the batches one process would run)."""
    if n <= 0:
        return []
    batches = -(-n // batch_size)
    shards = max(1, min(shards, batches))
    per, extra = divmod(batches, shards)
    bounds, b = [], 0
    for i in range(shards):
        take = per + (1 if i < extra else 0)
        start, stop = b * batch_size, min(n, (b + take) * batch_size)
        bounds.append((start, stop))
        b += take
    return bounds


def _make_actor_class(ray: Any) -> Any:
    @ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)
    class RunnerActor:
        """Holds one runner for one artifact; runs shards of the reference inputs.

        The artifact's bytes come with every call as an ObjectRef inside a list (fetched once,
        on the first call): an actor restarted after its process died reloads it by itself, and
        the constructor holds no object-store argument that a restart could lose.
        """

        def __init__(self, main: str, provider: str, threads: int | None) -> None:
            self.main, self.provider, self.threads = main, provider, threads
            self.runner: Any = None

        def _load(self, files_box: list[Any]) -> Any:
            if self.runner is None:
                from optkit.runtime.registry import make_runner

                folder = tempfile.mkdtemp(prefix="optkit-ray-")
                for name, data in ray.get(files_box[0]).items():  # the artifact and e.g. X.engine.json
                    Path(folder, name).write_bytes(data)
                runner = make_runner(Path(folder, self.main), provider=self.provider, threads=self.threads)
                runner.__enter__()
                self.runner = runner
            return self.runner

        def pid(self) -> int:
            return os.getpid()

        def describe(self, files_box: list[Any]) -> dict[str, Any]:
            return self._load(files_box).describe()

        def run(self, files_box: list[Any], inputs: Any, batch_size: int) -> dict[str, np.ndarray]:
            """``inputs``: a dict of arrays, or ``(data_box, input name, (start, stop))`` rows to
            read from a data directory on this node."""
            from optkit.verification.reference import Reference
            from optkit.verification.verify import run_artifact

            if isinstance(inputs, tuple):
                data_box, name, (a, b) = inputs
                inputs = {name: _node_source(ray, data_box).array().view(a, b)}
            shard = Reference(inputs, outputs={})
            return run_artifact(self._load(files_box), shard, batch_size)

    return RunnerActor


_SOURCES: dict[str, Any] = {}  # per worker process: the data directory it reads, opened once


def _node_source(ray: Any, data_box: list[Any]) -> Any:
    """The DataSource a shard's rows come from, opened on this worker from its spec; a directory
    this node does not have is one error that says what a cluster needs."""
    import socket

    from optkit.data.source import DataSource

    key = data_box[0].hex()  # one spec object per run: opened once per worker process
    if key not in _SOURCES:
        try:
            _SOURCES.clear()
            _SOURCES[key] = DataSource.from_spec(ray.get(data_box[0]))
        except InputError as exc:
            raise InputError(f"Ray worker on {socket.gethostname()}: {exc}; every node must see the data directory "
                             "at the same path (shared storage, or a copy on each node)") from None
    return _SOURCES[key]


def _lazy_input(inputs: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, LazyArray) when the inputs are read from a data directory (single-input models)."""
    from optkit.data.source import is_lazy

    lazy = [(k, v) for k, v in inputs.items() if is_lazy(v)]
    if lazy and len(inputs) != 1:
        raise InputError("inputs read from a data directory are supported for single-input models only")
    return lazy[0] if lazy else None


def _shard_rows(ray: Any, name: str, arr: Any, bounds: list[tuple[int, int]]) -> list[Any]:
    """One argument per shard of a LazyArray: ``(data box, name, (start, stop))``, the rows the
    worker reads from the data directory itself; the directory's spec travels once."""
    box = [ray.put({**arr.source.spec(), "labels": None})]  # labels stay on the driver
    return [(box, name, (arr.start + a, arr.start + b)) for a, b in bounds]


def _shard_args(ray: Any, inputs: dict[str, Any], bounds: list[tuple[int, int]]) -> list[Any]:
    """One argument per shard: rows to read on the worker (:func:`_shard_rows`), or one
    object-store dict of arrays per shard (fetched only by the node that runs it, so the inputs
    cross the network once, not once per node)."""
    lazy = _lazy_input(inputs)
    if lazy is not None:
        return _shard_rows(ray, *lazy, bounds)
    return [ray.put({k: np.ascontiguousarray(v[a:b]) for k, v in inputs.items()}) for a, b in bounds]


class RayExecutor:
    """Runs artifacts on Ray actors; plugs into :func:`optkit.verification.verify.verify_artifacts`.

    ``workers``: actors per artifact (default: the cluster's CPUs); ``shards``: pieces the
    reference is split into (default: 4 per worker, for load balance and cheap retries);
    ``threads``: runtime threads per actor (default 1, one actor per CPU).
    """

    def __init__(self, ray: Any, workers: int | None = None, shards: int | None = None,
                 threads: int | None = 1, on_shard: Callable[[int, int], None] | None = None,
                 echo: Callable[[str], None] | None = None) -> None:
        self.ray = ray
        self.echo = echo  # progress lines (e.g. each int8 trial as it completes)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, workers or cpus)
        self.shards = shards
        self.threads = threads
        self.on_shard = on_shard
        self.actor_pids: list[int] = []
        self._actor_cls = _make_actor_class(ray)

    def describe(self) -> dict[str, Any]:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return {"engine": "ray", "ray": self.ray.__version__, "workers": self.workers,
                "nodes": len(nodes), "threads_per_worker": self.threads}

    def outputs(self, path: Path, provider: str, threads: int | None, reference: Any,
                batch_size: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        ray = self.ray
        path = Path(path)
        files = {path.name: path.read_bytes()}
        sidecar = path.with_name(path.name + ".json")
        if sidecar.is_file():
            files[sidecar.name] = sidecar.read_bytes()
        box = [ray.put(files)]
        bounds = shard_bounds(len(reference), batch_size, self.shards or 4 * self.workers)
        runtime_threads = self.threads if threads is None else threads
        with self._actors(lambda: self._actor_cls.remote(path.name, provider, runtime_threads), len(bounds),
                          path) as actors:
            runner_info = self._get(actors[0].describe.remote(box), path)
            shard_refs = _shard_args(ray, reference.inputs, bounds)
            chunks = self._map(actors, shard_refs, lambda a, ref: a.run.remote(box, ref, batch_size), path)
        outs = {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]} if chunks else {}
        return outs, runner_info

    def collect_stats(self, model_path: Path, samples: Any, input_name: str, *,
                      chunk_size: int = 8, progress: Any = None, threads: int | None = None,
                      check_finite: bool = True, **options: Any) -> Any:
        """Statistics of ``samples`` over shards run by StatsActors, merged on the driver.

        ``progress`` and ``threads`` are accepted as :func:`optkit.quantization.calib_stats.collect_stats`
        takes them; here each actor runs one thread and progress comes per shard (``on_shard``).
        """
        from functools import reduce

        from optkit.quantization.calib_stats import CalibStats, require_finite

        if len(samples) == 0:
            raise InputError("no calibration samples")
        ray = self.ray
        model_path = Path(model_path)
        box = [ray.put(model_path.read_bytes())]
        bounds = shard_bounds(len(samples), 1, self.shards or 4 * self.workers)
        from optkit.data.source import is_lazy

        # a list is a mixed-length set (quantization.mixed_calibration): samples of their own
        # lengths, shipped as lists (an array of them cannot exist; StatsCollector takes either)
        shard_refs = (_shard_rows(ray, input_name, samples, bounds) if is_lazy(samples) else
                      [ray.put([np.ascontiguousarray(s) for s in samples[a:b]]) for a, b in bounds]
                      if isinstance(samples, list) else
                      [ray.put(np.ascontiguousarray(samples[a:b])) for a, b in bounds])
        cls = _make_stats_actor_class(ray)
        with self._actors(lambda: cls.remote(input_name, options), len(bounds), model_path) as actors:
            parts = self._map(actors, shard_refs, lambda a, ref: a.run.remote(box, ref, chunk_size), model_path)
        stats = reduce(CalibStats.merge, [CalibStats.from_dict(p) for p in parts])
        return require_finite(stats) if check_finite else stats

    def trial_map(self, ctx: Any, work_dir: Path) -> Callable[..., Iterator[Any]]:
        """An :data:`optkit.quantization.int8_search.TrialMap` that runs int8 trials as Ray tasks.

        The context (models as bytes, statistics, validation data) goes into the object store
        once, for every wave of the search; up to ``workers`` trials run at a time, started in
        queue order. Results come back in queue order; the model of each result the search
        takes is fetched from the object store into ``work_dir`` (``trial{index}.onnx``), so the
        driver keeps exactly the bytes that were evaluated. Results past the one where the
        search stops are discarded (their models never leave the worker's node) and unfinished
        ones are cancelled.
        """
        import dataclasses

        from optkit.quantization.int8_search import format_row

        ray = self.ray
        task = _make_trial_task(ray)
        ctx_box: list[Any] = []

        def map_trials(jobs: list[tuple[int, Any]], note: Callable[[str], None]) -> Iterator[Any]:
            if not ctx_box:
                ctx_box.append(ray.put(dataclasses.replace(ctx, threads=self.threads)))
            refs: dict[int, tuple[Any, Any]] = {}        # job position -> (result ref, model ref)
            position: dict[Any, int] = {}                 # result ref -> job position
            finished: dict[Any, tuple[int, Any]] = {}     # result ref -> (position, result or error)
            submitted = taken = 0

            def submit() -> None:  # keep ``workers`` trials running, the next ones in queue order
                nonlocal submitted
                while submitted < len(jobs) and submitted - taken - len(finished) < self.workers:
                    index, spec = jobs[submitted]
                    refs[submitted] = task.remote(ctx_box[0], spec, index)
                    position[refs[submitted][0]] = submitted
                    submitted += 1

            def label(k: int) -> str:
                index, spec = jobs[k]
                return f"int8 trial {index} ({spec.name})"

            try:
                while taken < len(jobs):
                    submit()
                    want = refs[taken][0]
                    while want not in finished:
                        submit()  # refill the workers that finished trials later in the queue
                        pending = [r for k, (r, _) in refs.items() if k >= taken and r not in finished]
                        ready, _ = ray.wait(pending, num_returns=1)
                        for r in ready:
                            k = position[r]
                            try:
                                value = ray.get(r)
                            except Exception as exc:  # raised when (and only if) the search reaches it
                                finished[r] = (k, exc)
                                _drop_error(ray, refs[k][1])
                            else:
                                finished[r] = (k, value)
                                self._say(f"ray: {format_row(jobs[k][0], value)}")
                    _, value = finished.pop(want)
                    if isinstance(value, BaseException):
                        with self._errors(label(taken)):
                            raise value
                    path = Path(work_dir) / f"trial{jobs[taken][0]}.onnx"
                    path.write_bytes(self._get(refs[taken][1], label(taken)))
                    value.path = path
                    taken += 1
                    yield value
            except GeneratorExit:  # the search stopped at a passing trial
                done = [k for k, _ in finished.values() if k >= taken]
                unfinished = submitted - taken - len(done)
                if done or unfinished:
                    text = (f"{len(done)} trial(s) ran in parallel past the chosen one and were discarded"
                            + (f"; {unfinished} unfinished one(s) cancelled" if unfinished else ""))
                    note(text)
                    self._say(f"ray: {text}")
                raise
            finally:
                for k, (r, _) in refs.items():
                    if k >= taken and r not in finished:
                        ray.cancel(r)  # queued: never starts; running: interrupted (Ray logs nothing)

        return map_trials

    def _say(self, text: str) -> None:
        if self.echo:
            self.echo(text)

    @contextlib.contextmanager
    def _actors(self, make: Callable[[], Any], shards: int, path: Path) -> Iterator[list[Any]]:
        """Up to ``workers`` actors (no more than there are shards), their pids recorded, killed
        when the block ends however it ends."""
        actors = [make() for _ in range(max(1, min(self.workers, shards)))]
        try:
            self.actor_pids = self._get([a.pid.remote() for a in actors], path)
            yield actors
        finally:
            for a in actors:
                self.ray.kill(a)

    def _map(self, actors: list[Any], shard_refs: list[Any], submit: Callable[[Any, Any], Any],
             path: Path) -> list[Any]:
        """``submit(actor, shard)`` over every shard with Ray's ActorPool; results in shard order."""
        from ray.util import ActorPool

        results: list[Any] = []
        with self._errors(path):
            for i, part in enumerate(ActorPool(actors).map(submit, shard_refs)):
                results.append(part)
                if self.on_shard:
                    self.on_shard(i + 1, len(shard_refs))
        return results

    def _get(self, refs: Any, path: Path | str) -> Any:
        with self._errors(path):
            return self.ray.get(refs)

    @contextlib.contextmanager
    def _errors(self, path: Path | str) -> Iterator[None]:
        """A worker's OptkitError (e.g. a provider that fell back to CPU) is re-raised as it is;
        anything else from Ray becomes one line naming the artifact (or the work, e.g. a trial)."""
        name = path.name if isinstance(path, Path) else path
        exceptions = self.ray.exceptions
        try:
            yield
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, OptkitError):
                raise cause from None
            raise OptkitError(f"{name}: a Ray worker failed: {_line(cause or exc)}") from exc
        except exceptions.RayActorError as exc:
            raise OptkitError(f"{name}: a Ray worker died and could not be restarted: {_actor_error(exc)}") from exc
        except exceptions.WorkerCrashedError as exc:
            raise OptkitError(f"{name}: a Ray worker died and its retries ran out: {_line(exc)}") from exc


def _drop_error(ray: Any, ref: Any) -> None:
    """Fetch the error of a failed task's other return value: Ray logs an "unhandled error" for
    a failed object nobody fetched, and the search may legitimately never need it."""
    try:
        ray.get(ref, timeout=10)
    except Exception:
        pass


def _actor_error(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or getattr(exc, "error_msg", None)
    return _line(cause if isinstance(cause, BaseException) else Exception(str(cause or exc)))


@contextlib.contextmanager
def executor_for(address: str | None, workers: int | None = None, shards: int | None = None,
                 echo: Callable[[str], None] | None = None) -> Iterator[Any]:
    """None without an address (verify runs in this process); a RayExecutor inside a session."""
    if address is None:
        yield None
        return
    with ray_session(address) as ray:
        ex = RayExecutor(ray, workers=workers, shards=shards, echo=echo)
        if echo:
            info = ex.describe()
            echo(f"ray: {info['workers']} workers on {info['nodes']} node(s)")
        yield ex


# -- int8 calibration statistics and search trials on Ray ------------------------------------
#
# Where statistics are computed cannot change them (CalibStats.merge is exact: the merged
# statistics of shards equal the statistics of the union), and neither can running the int8
# search's trials in parallel (the search keeps what a sequential one keeps), so the executor is
# not a pass parameter and not part of any cache key: the CLI / recipe layer sets it for the
# duration of a command with ``optkit.quantization.executor.calibration_on(executor)``, and the
# int8 pass asks that module's ``collect_stats`` for the statistics and ``trial_map`` for the way
# to run its trials.


def _make_stats_actor_class(ray: Any) -> Any:
    @ray.remote(num_cpus=1, max_restarts=3, max_task_retries=3)
    class StatsActor:
        """Holds one calibration session (a StatsCollector); returns one shard's statistics per
        call (``take`` empties it, so a retried shard is never counted twice)."""

        def __init__(self, input_name: str, options: dict[str, Any]) -> None:
            self.input_name, self.options = input_name, options
            self.collector: Any = None

        def pid(self) -> int:
            return os.getpid()

        def run(self, files_box: list[Any], samples: Any, chunk_size: int) -> dict[str, np.ndarray]:
            """``samples``: an array, a list of samples of mixed lengths, or ``(data_box, name, (start,
            stop))`` rows to read here."""
            if isinstance(samples, tuple):
                data_box, _, (a, b) = samples
                samples = _node_source(ray, data_box).array().view(a, b)
            if self.collector is None:
                from optkit.quantization.calib_stats import StatsCollector

                folder = tempfile.mkdtemp(prefix="optkit-ray-")
                path = Path(folder, "model.onnx")
                path.write_bytes(ray.get(files_box[0]))
                self.collector = StatsCollector(path, self.input_name, threads=1, **self.options)
            return self.collector.update(samples, chunk_size).take().to_dict()

    return StatsActor


def _make_trial_task(ray: Any) -> Any:
    @ray.remote(num_cpus=1, num_returns=2, max_retries=3)
    def int8_trial(ctx: Any, spec: Any, index: int) -> tuple[Any, bytes]:
        """One int8 trial (:func:`optkit.quantization.int8_search.run_trial`) in a private temporary folder
        on the worker; returns the result and the trial model's bytes (two objects, so the
        driver fetches the model only for the trials the search keeps)."""
        import shutil

        from optkit.quantization.int8_search import run_trial

        folder = Path(tempfile.mkdtemp(prefix="optkit-ray-trial-"))
        try:
            result = run_trial(ctx, spec, index, folder)
            data = result.path.read_bytes()
            result.path = Path(result.path.name)
            return result, data
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return int8_trial
