"""Running the broker app under uvicorn (uvloop + httptools), in the foreground or in a
background thread (the demo and the tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from custodes.errors import ConfigError
from custodes.kbs.config import KbsConfig


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


def uvicorn_server(
    app: Starlette, config: KbsConfig, *, log_level: str = "warning"
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
    return uvicorn.Server(ucfg)


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
