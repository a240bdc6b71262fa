"""Running the app on uvicorn, and starting a server process on loopback for tests and
``optkit loadtest --compare``."""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from optkit.common.errors import InputError, OptkitError, RuntimeUnavailable
from optkit.common.lazy import lazy_import
from optkit.serve.settings import ENV_SETTINGS_JSON, ServeSettings

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback_url(url: str) -> str:
    """``url`` if it is http(s) on a loopback address; InputError otherwise. The load generator
    only ever talks to this machine: run it beside the server it measures."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{url!r} is not an http:// URL")
    if not is_loopback(parts.hostname):
        raise InputError(f"{url}: the load generator only targets loopback addresses (127.0.0.1, ::1, "
                         "localhost); run it on the serving machine")
    return url.rstrip("/")


def get_json(url: str, timeout: float = 10.0) -> tuple[int | None, Any]:
    """GET ``url`` (no proxies): (status, parsed JSON or text), or (None, why) when nothing answered."""
    import json
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def run_server(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               log_level: str = "info", access_log: bool = False, app: Any = None) -> None:
    """Serve until interrupted. A model that cannot be loaded raises its OptkitError. ``app``: an app
    already built (a model repository's), served with one worker instead of ``create_app(settings)``."""
    uvicorn = lazy_import("uvicorn", extra="serve")
    check_port(host, port)  # before loading anything; uvicorn would exit 3 (optkit's "gate failed")
    common: dict[str, Any] = dict(host=host, port=port, log_level=log_level, access_log=access_log,
                                  lifespan="on", timeout_graceful_shutdown=5, server_header=False)
    if workers > 1:
        # a model that cannot be served fails in every worker process (a traceback each, and uvicorn's
        # parent then exits 0): load it here once first, so it is one line and exit 1
        check_loads(settings)
        # uvicorn starts worker processes from an import string; the settings travel in the environment
        os.environ[ENV_SETTINGS_JSON] = settings.to_json()
        try:
            run_workers(uvicorn.Config("optkit.serve.app:create_app_from_env", factory=True, workers=workers,
                                       **common))
        except SystemExit as exc:
            raise _startup_failure(exc) from None
        return
    from optkit.serve.app import DropStartupTraceback, create_app

    errors: list[BaseException] = []
    app = app if app is not None else create_app(settings, startup_errors=errors)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    log_filter = DropStartupTraceback(errors)
    logger = logging.getLogger("uvicorn.error")
    logger.addFilter(log_filter)
    try:
        server.run()
    except SystemExit as exc:
        if errors:
            raise errors[0] from None
        raise _startup_failure(exc) from None
    finally:
        logger.removeFilter(log_filter)
    if errors:
        raise errors[0]


def run_workers(config: Any) -> None:
    """uvicorn's worker processes under optkit's supervisor: a worker that dies is replaced; one
    that cannot start (its model file gone, say) is left out while the others go on serving, and
    when no worker is left the service stops with an OptkitError (exit 1), never exit 0.

    uvicorn's own supervisor (0.55) stops every worker, healthy ones included, and returns normally
    (exit 0) when a replacement fails to start; the rest of its behaviour (signals, health pings,
    the shared socket) is kept by subclassing it."""
    sock = config.bind_socket()
    supervisor = _supervisor_class()(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    if supervisor.failure:
        raise OptkitError(supervisor.failure)


def _supervisor_class() -> type:
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    log = logging.getLogger("uvicorn.error")

    class Supervisor(Multiprocess):
        failure: str | None = None

        def keep_subprocess_alive(self) -> None:
            if self.should_exit.is_set():
                return
            kept, lost = [], 0
            for process in self.processes:
                if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                    kept.append(process)
                    continue
                process.kill()  # hung, or gone: reap it
                process.join()
                if self.should_exit.is_set():
                    return
                code = process.exitcode
                if code == STARTUP_FAILURE:  # it never served: a replacement would fail the same way
                    log.error("worker [%s] could not start (the reason is logged above)", process.pid)
                    lost += 1
                    continue
                how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                log.warning("worker [%s] died (%s); starting a replacement", process.pid, how)
                replacement = Process(self.config, self.sockets)
                replacement.start()
                kept.append(replacement)
            self.processes[:] = kept
            if lost and self.processes:
                log.error("%d worker(s) left out; %d still serving", lost, len(self.processes))
            if not self.processes:
                self.failure = ("every worker has stopped and none could be restarted (the reason is logged above); "
                                "the service is down")
                self.should_exit.set()

    return Supervisor


def _startup_failure(exc: SystemExit) -> BaseException:
    """uvicorn's exit (3 when it cannot start) as optkit's one-line error, exit 1."""
    if exc.code in (0, None):
        return exc
    return InputError(f"the server could not start (uvicorn exit code {exc.code}); the reason is logged above")


def check_port(host: str, port: int) -> None:
    """InputError unless ``host:port`` can be listened on now (port 0: the OS picks one)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # the socket uvicorn makes (Config.bind_socket)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            s.bind((host.strip("[]"), port))
    except OSError as exc:  # gaierror included
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_loads(settings: ServeSettings) -> None:
    """Load, check and warm up the model as a worker would (audio aside), then release it."""
    from dataclasses import replace

    from optkit.serve.inference import InferenceLoop

    inference = InferenceLoop(replace(settings, accept_audio=False))
    inference.load()
    inference.close()


class ServerProcess:
    """``optkit serve ARTIFACT`` in a child process on 127.0.0.1 and a free port, ready when the
    context is entered (``/ready`` answered 200), stopped (SIGTERM, then SIGKILL) when it is left.
    ``artifact`` None: no ARTIFACT argument (``extra_args`` name a ``--model-repository``); with
    ``wait_ready=False`` the context is entered once ``/health`` answers (an empty repository).

    The load generator then runs in this process, the server in its own: they do not share an
    interpreter or a GIL, as in production."""

    def __init__(self, artifact: str | os.PathLike, provider: str | None = None, extra_args: Sequence[str] = (),
                 startup_timeout: float = 120.0, env: dict[str, str] | None = None, nice: int = 0,
                 wait_ready: bool = True):
        self.artifact = Path(artifact) if artifact is not None else Path("model-repository")
        self._args = [str(artifact)] if artifact is not None else []
        self.wait_ready = wait_ready
        self.provider = provider
        self.extra_args = [str(a) for a in extra_args]
        self.startup_timeout = startup_timeout
        self.env = env
        self.nice = nice
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "optkit", "serve", *self._args, "--host", "127.0.0.1",
               "--port", str(self.port), *self.extra_args]
        if self.provider:
            cmd += ["--provider", self.provider]
        return cmd

    def log_text(self) -> str:
        if self._log is None:
            return ""
        # pread: the server writes through the same file offset, so a seek here would make it
        # overwrite its own log while it is being read
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def __enter__(self) -> "ServerProcess":
        for attempt in range(3):  # a port taken between free_port() and bind: try another
            self.port = free_port()
            self._log = tempfile.TemporaryFile()
            env = {**os.environ, **(self.env or {})}
            self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if get_json(f"{self.url}/{'ready' if self.wait_ready else 'health'}", timeout=2.0)[0] == 200:
                    return self
                time.sleep(0.1)
            text = self.log_text()
            self.stop()
            if "address already in use" in text.lower() and attempt < 2:
                continue
            last = [ln for ln in text.splitlines() if ln.strip()]
            why = next((ln for ln in reversed(last) if ln.startswith("Error:")), last[-1] if last else "no output")
            if self.proc.returncode is None or self.proc.returncode < 0:
                raise RuntimeUnavailable(f"server for {self.artifact.name} was not ready within "
                                         f"{self.startup_timeout:.0f} s ({why})")
            raise OptkitError(f"server for {self.artifact.name} did not start: {why}")
        raise RuntimeUnavailable("no free port found for the server")  # pragma: no cover

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
