"""`custodes serve`: the key broker (KBS + Attestation Service + RVPS) in one process."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes import __version__
from custodes.errors import ConfigError, CustodesError

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from custodes._internal.rollback import Created
    from custodes.kbs.broker import Broker
    from custodes.kbs.config import KbsConfig

# The broker (verifiers, Rego, the web stack) is imported by the handler: `--help` stays light.

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run the key broker",
        description=(
            "Run the key broker: KBS protocol 0.4.0 endpoints under /kbs/v0, the Attestation "
            "Service and the Reference Value Provider in one process, state in SQLite. "
            "On first start it creates an admin key pair and an EAR signing key in the data "
            "directory and says where."
        ),
        epilog=(
            "Examples:\n"
            "  custodes serve            # defaults: 127.0.0.1:8080, state in ./custodes-data\n"
            "  custodes serve --config /etc/custodes/serve.toml\n"
            "  custodes serve --listen 127.0.0.1:0 --unsafe-allow-sample-tee  # tests, demos\n"
            "\nThe sample configuration, with every setting explained: docs/serve.sample.toml"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--listen", help="HOST:PORT to listen on (overrides server.listen)")
    p.add_argument("--data-dir", type=Path, help="state directory (overrides server.data_dir)")
    p.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help="worker processes sharing the listening socket (overrides server.workers; "
        "default: one per CPU core; 1: a single process)",
    )
    p.add_argument(
        "--unsafe-allow-sample-tee",
        action="store_true",
        help="accept the sample TEE, which proves nothing (tests and demos only)",
    )
    p.set_defaults(func=run)


def _workers(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"--workers must be a number from 1 to 256, got {text!r}")
    return int(text)


def worker_count(config: KbsConfig) -> int:
    """``server.workers``, where 0 means one per CPU core this process may use."""
    if config.server.workers:
        return config.server.workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def effective_config(args: argparse.Namespace) -> KbsConfig:
    from custodes.kbs.config import load_config

    config = load_config(args.config)
    server = config.server
    if args.listen:
        server = dataclasses.replace(server, listen=args.listen)
    if args.data_dir:
        server = dataclasses.replace(server, data_dir=args.data_dir)
    if getattr(args, "workers", None):
        server = dataclasses.replace(server, workers=args.workers)
    attestation = config.attestation
    if args.unsafe_allow_sample_tee:
        attestation = dataclasses.replace(attestation, unsafe_allow_sample_tee=True)
    return dataclasses.replace(config, server=server, attestation=attestation).validate()


def banner(config: KbsConfig, url: str, generated_admin: object) -> list[str]:
    lines = [
        f"custodes serve {__version__}: KBS protocol 0.4.0 at {url}/kbs/v0",
        "  store: "
        + (f"sqlite {config.sqlite_path}" if config.storage.backend == "sqlite" else "postgres"),
    ]
    admin_keys = config.admin.public_keys or (config.server.data_dir / "admin-key.pub.pem",)
    lines.append("  admin keys: " + ", ".join(str(k) for k in admin_keys))
    if generated_admin is not None:
        private = getattr(generated_admin, "private_path", None)
        lines.append(
            f"  created the admin key pair; the workload admin's private key is {private} "
            "(move it off this host: `custodes admin --key` uses it)"
        )
    for notice in config.insecure_notices():
        lines.append(f"  !!! INSECURE: {notice}. Every token this broker issues says so.")
    if not config.server.tls_cert and config.server.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(
            "  !!! plain HTTP on a non-loopback address: put TLS in front or set server.tls_cert"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    from custodes.kbs.app import create_app
    from custodes.kbs.broker import build_broker
    from custodes.kbs.server import base_url, bind_socket, uvicorn_server

    config = effective_config(args)
    if config.server.tls_cert is not None and config.server.tls_key is not None:
        from custodes._internal.tls import check_server_pair

        check_server_pair(config.server.tls_cert, config.server.tls_key)  # before creating
    created = _state_paths(config)
    try:
        broker = build_broker(config)
    except BaseException:
        _undo_failed_start(created)
        raise
    try:
        app = create_app(broker)
        sock = bind_socket(config.server.host, config.server.port)
    except BaseException:
        broker.close()
        _undo_failed_start(created)
        raise
    url = base_url(config, sock)
    broker.listening_at(url)  # admin tokens must name this URL unless server.public_urls
    for line in banner(config, url, broker.generated_admin_key):
        print(line, file=sys.stderr, flush=True)
    print(
        "  admin tokens must name (aud): " + ", ".join(broker.origins.current()),
        file=sys.stderr,
        flush=True,
    )
    workers = worker_count(config)
    if workers > 1:
        return _run_workers(config, workers, broker, sock, url, created)
    server = uvicorn_server(app, config)
    try:
        server.run(sockets=[sock])
    finally:
        broker.close()
        if not server.started:
            _undo_failed_start(created)
    if not server.started:
        raise ConfigError("the broker did not start (the reason is logged above)")
    return 0


def _run_workers(
    config: KbsConfig,
    workers: int,
    broker: Broker,
    sock: socket.socket,
    url: str,
    created: Created,
) -> int:
    """Serve from ``workers`` forked processes on the socket bound here.

    The first start's keys, master key and store schema were made above, once, by
    ``build_broker``: each worker opens them afresh after the fork (a store connection must
    not cross a fork), so workers never race to create them.
    """
    import shutil
    import tempfile

    from custodes.kbs.app import create_app
    from custodes.kbs.broker import build_broker
    from custodes.kbs.metrics import share_between_processes
    from custodes.kbs.server import WORKER_NOT_STARTED, run_workers, uvicorn_server

    broker.close()
    print(f"  workers: {workers} processes", file=sys.stderr, flush=True)
    # /metrics of any worker counts for all of them (a fresh private directory each start:
    # counts of an earlier run must not be added in).
    metrics_dir = Path(tempfile.mkdtemp(prefix="custodes-metrics-"))
    share_between_processes(metrics_dir)

    def worker(report_started: Callable[[], None]) -> int:
        started = False
        try:
            own = build_broker(config)
            try:
                own.listening_at(url)
                server = uvicorn_server(create_app(own), config, on_started=report_started)
                server.run(sockets=[sock])
                started = server.started
            finally:
                own.close()
        except CustodesError as e:
            print(f"custodes: error: worker {os.getpid()}: {e}", file=sys.stderr, flush=True)
        return 0 if started else WORKER_NOT_STARTED

    try:
        outcome = run_workers(workers, worker)
    finally:
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if not outcome.started:
        _undo_failed_start(created)
        raise ConfigError("the broker did not start (the reason is logged above)")
    if outcome.failed is not None:
        raise ConfigError(f"{outcome.failed}; stopped the other workers")
    return 0


def _state_paths(config: KbsConfig) -> Created:
    """What a start may create: the data directory, and the SQLite store and its journals
    wherever ``storage.path`` puts them."""
    from custodes._internal.rollback import Created

    files: list[Path] = []
    if config.storage.backend == "sqlite":
        db = config.sqlite_path
        files = [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
    return Created([config.server.data_dir, *{f.parent for f in files}], files)


def _undo_failed_start(created: Created) -> None:
    """A start that failed leaves nothing it created (keys, master key, store)."""
    removed = set(created.undo())
    tops = sorted(p for p in removed if p.parent not in removed)  # a directory stands for all
    if tops:
        logger.warning(
            "the start failed: removed what it had created: %s", ", ".join(map(str, tops))
        )
