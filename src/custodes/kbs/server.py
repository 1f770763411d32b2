"""Running the broker app under uvicorn (uvloop + httptools), in the foreground, in several
worker processes sharing one listening socket (:func:`run_workers`), or in a background
thread (the demo and the tests)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

from custodes.errors import ConfigError
from custodes.kbs.config import KbsConfig

logger = logging.getLogger(__name__)

WORKER_NOT_STARTED = 3
"""Exit status of a worker whose server never started."""

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen first, so that port 0 gives a real port to print before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    # Listen now: connections made after the start banner queue up instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def base_url(config: KbsConfig, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.server.tls_cert else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


class _ReportingServer(uvicorn.Server):
    """A uvicorn server that tells ``on_started`` once it serves (a worker tells its
    supervisor, which must know whether any worker ever started)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def uvicorn_server(
    app: Starlette,
    config: KbsConfig,
    *,
    log_level: str = "warning",
    on_started: Callable[[], None] | None = None,
) -> uvicorn.Server:
    ucfg = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        lifespan="on",
        server_header=False,
        ssl_certfile=str(config.server.tls_cert) if config.server.tls_cert else None,
        ssl_keyfile=str(config.server.tls_key) if config.server.tls_key else None,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(ucfg) if on_started is None else _ReportingServer(ucfg, on_started)


@contextlib.contextmanager
def serve_in_thread(app: Starlette, config: KbsConfig) -> Iterator[str]:
    """Serve ``app`` on ``config.server.listen`` (port 0 allowed) in a thread; yields the URL."""
    sock = bind_socket(config.server.host, config.server.port)
    server = uvicorn_server(app, config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the broker did not start")
        time.sleep(0.01)
    url = base_url(config, sock)
    # Admin tokens name the broker's URL: tell it where it listens (port 0 is known now).
    broker = getattr(app.state, "broker", None)
    if broker is not None:
        broker.listening_at(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- several worker processes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkersOutcome:
    """How the workers ended: ``started`` if any worker reported that it served (the
    failed-start cleanup runs only otherwise: an exit status cannot tell a worker that never
    served from one that served and was then killed); ``failed`` names the first worker that
    ended on its own (not asked to stop) and how."""

    started: bool
    failed: str | None


def _die_with_parent() -> None:
    """A worker is killed when the supervisor dies (even by SIGKILL): no orphan keeps
    serving on the shared socket. Linux only; elsewhere the supervisor's exit still stops
    the workers it can reach."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def run_workers(count: int, worker: Callable[[Callable[[], None]], int]) -> WorkersOutcome:
    """Fork ``count`` processes that each run ``worker(report_started)`` (its return value is
    the exit status; it calls ``report_started()`` once it serves) and supervise them until
    they have all exited.

    Whatever the workers need to share (the listening socket, keys generated on first
    start) must exist before this is called; nothing else is inherited in use (open stores
    must be closed first: an SQLite connection must not cross a fork). SIGTERM, SIGINT and
    SIGHUP to the supervisor stop every worker (SIGTERM: a graceful shutdown); a worker
    that ends on its own stops the others too, so that the service fails visibly rather
    than serve with fewer workers than configured.
    """
    if count < 1:
        raise ValueError("at least one worker")
    stopping = False
    children: dict[int, int] = {}  # pid -> worker number
    # A byte per worker that served, read when all have exited.
    started_r, started_w = os.pipe()
    os.set_blocking(started_r, False)

    def report_started() -> None:
        os.write(started_w, b"1")

    # Signals stay blocked while forking: a child must not run the supervisor's handler,
    # and the supervisor must not miss a stop request between two forks.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for number in range(count):
            pid = os.fork()
            if pid == 0:  # the worker
                status = 1
                try:
                    # Its own process group: a Ctrl-C in the terminal reaches the supervisor
                    # only, which stops the workers (no worker ends "on its own" first).
                    os.setpgid(0, 0)
                    _die_with_parent()
                    for sig in _STOP_SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
                    os.close(started_r)
                    if os.getppid() == 1:  # the supervisor died before prctl took effect
                        os._exit(1)
                    status = worker(report_started)
                except BaseException:
                    logger.exception("worker %d failed", number)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(status)
            children[pid] = number
    except BaseException:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os.close(started_r)
        raise
    finally:
        previous: dict[signal.Signals, signal.Handlers | Callable[..., object] | int | None] = {}

        def request_stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for pid in list(children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

        if children:
            for sig in _STOP_SIGNALS:
                previous[sig] = signal.signal(sig, request_stop)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        os.close(started_w)
    failed: str | None = None
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in children:
                continue
            number = children.pop(pid)
            if not stopping:
                failed = failed or f"worker {number} (pid {pid}) {_describe_status(status)}"
                stopping = True
                for other in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(other, signal.SIGTERM)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            started = bool(os.read(started_r, count))
        except BlockingIOError:
            started = False
        os.close(started_r)
    return WorkersOutcome(started=started, failed=failed)
