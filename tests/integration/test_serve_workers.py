"""`custodes serve --workers N`: N processes on one listening socket, on SQLite and on
PostgreSQL. Under concurrent handshakes no request fails with 503 (SQLite writes take the
lock up front) and the audit chain the workers write together verifies; keys are made once,
before the workers start; SIGTERM stops every worker, and so does the supervisor's death."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import SystemClock
from custodes.audit.log import AuditLog
from custodes.cli import main
from custodes.kbs.keys import AUDIT_KEY_FILE
from custodes.storage.base import Store
from custodes.storage.postgres import PostgresStore
from custodes.storage.sqlite import SqliteStore
from live_broker import ServedBroker
from pg_server import PgServer, running_postgres
from replica_support import (
    ClusterKeys,
    Guest,
    cookieless_client,
    kill9,
    make_keys,
    replica_env,
    seed,
    start_replica,
    stop,
    write_config,
)

RESOURCE = "default/key/app"
HANDSHAKES = 200
THREADS = 16


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def workers_config(tmp_path: Path, keys: ClusterKeys, backend: str, workers: int) -> Path:
    config = write_config(
        tmp_path / "serve.toml", keys, backend=backend, data_dir=tmp_path / "data"
    )
    text = config.read_text().replace("[server]\n", f"[server]\nworkers = {workers}\n", 1)
    config.write_text(text)
    return config


def handshake(guest: Guest, url: str) -> list[int]:
    challenge = guest.auth(url)
    attested = guest.attest(url, challenge)
    if attested.status_code != 200:
        return [attested.status_code]
    got = guest.resource(url, RESOURCE, challenge.session_id)
    if got.status_code == 200:
        assert guest.open(got) == b"secret"
    return [attested.status_code, got.status_code]


def load(url: str) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    remaining = iter(range(HANDSHAKES))
    errors: list[BaseException] = []

    def work() -> None:
        with cookieless_client() as http:
            try:
                while True:
                    with lock:
                        if next(remaining, None) is None:
                            return
                    codes = handshake(Guest(http), url)
                    with lock:
                        statuses.update(codes)
            except BaseException as e:
                errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return statuses


def _counter(exposition: str, name: str, labels: str) -> int:
    for line in exposition.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


def audit_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The key the workers signed with: the one the first start made in the data directory."""
    pem = (data_dir / AUDIT_KEY_FILE).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def check_chain(store: Store, data_dir: Path) -> None:
    log = AuditLog(store, audit_key(data_dir), SystemClock())
    report = log.verify_stream("default")
    assert report.ok, report.error
    kinds = Counter(str(e.kind) for e in log.entries("default"))
    # An attestation and a release entry per handshake, whichever worker served it.
    assert kinds["attestation"] >= HANDSHAKES and kinds["release"] >= HANDSHAKES


def served_with_workers(config: Path, keys: ClusterKeys, dsn: str | None) -> ServedBroker:
    served = start_replica(config, replica_env(keys, dsn))
    deadline = time.monotonic() + 30
    while len(children_of(served.process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return served


def run_load_and_stop(served: ServedBroker, keys: ClusterKeys) -> None:
    workers = children_of(served.process.pid)
    assert len(workers) == 2, workers
    seed(served.url, keys, {RESOURCE: b"secret"})
    statuses = load(served.url)
    assert statuses == Counter({200: 2 * HANDSHAKES}), statuses  # no 503, nothing refused
    # Any worker's /metrics counts every worker's requests (several connections, so that the
    # answers come from more than one worker).
    for _ in range(4):
        with cookieless_client() as http:
            text = http.get(f"{served.url}/metrics").text
        assert _counter(text, "custodes_resource_requests_total", 'result="released"') == HANDSHAKES
    # SIGTERM to the supervisor: every worker shuts down, the supervisor exits 0.
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=30) == 0, "".join(served.log)
    assert not any(alive(pid) for pid in workers)
    stop(served)


def test_two_workers_on_sqlite(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    served = served_with_workers(workers_config(tmp_path, keys, "sqlite", 2), keys, None)
    try:
        assert "workers: 2 processes" in "".join(served.log)
        run_load_and_stop(served, keys)
    finally:
        stop(served)
    store = SqliteStore(tmp_path / "data" / "custodes.db")
    try:
        check_chain(store, tmp_path / "data")
    finally:
        store.close()


def test_two_workers_on_postgres(tmp_path: Path, postgres: PgServer) -> None:
    keys = make_keys(tmp_path / "keys")
    dsn = postgres.create_database()
    try:
        config = workers_config(tmp_path, keys, "postgres", 2)
        served = served_with_workers(config, keys, dsn)
        try:
            run_load_and_stop(served, keys)
        finally:
            stop(served)
        store = PostgresStore(dsn)
        try:
            check_chain(store, tmp_path / "data")
        finally:
            store.close()
    finally:
        postgres.drop_database(dsn)


def test_workers_die_with_the_supervisor(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    served = served_with_workers(workers_config(tmp_path, keys, "sqlite", 2), keys, None)
    workers = children_of(served.process.pid)
    assert len(workers) == 2
    kill9(served)  # no shutdown code runs in the supervisor
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers)


def test_a_first_start_makes_its_keys_once(tmp_path: Path) -> None:
    """A fresh data directory and four workers: the admin key pair is made once, before the
    workers start, and every worker accepts the admin key it names."""
    keys = make_keys(tmp_path / "keys")
    data = tmp_path / "fresh"
    config = tmp_path / "serve.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\nworkers = 4\n'
        f'data_dir = "{data}"\n[attestation]\nunsafe_allow_sample_tee = true\n'
    )
    served = start_replica(config, replica_env(keys))
    try:
        log = "".join(served.log)
        assert log.count("created the admin key pair") == 1
        assert (data / "admin-key.pem").stat().st_mode & 0o777 == 0o600
        from custodes.admin_client import AdminClient, load_admin_key

        admin_key = load_admin_key(data / "admin-key.pem")
        # Eight calls: with four workers on one socket, several workers answer.
        for _ in range(8):
            with AdminClient(served.url, admin_key) as admin:
                admin.register_reference_values({"svn": ["1"]})
    finally:
        stop(served)


@pytest.mark.parametrize("value", ["0", "-1", "x", "257", "٣"])
def test_bad_workers_option(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--workers", value])
    assert info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_bad_workers_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serve.toml"
    config.write_text("[server]\nworkers = 1000\n")
    assert main(["serve", "--config", str(config), "--data-dir", str(tmp_path / "d")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "server.workers must be 0 (one per core) to 256" in err
    assert not (tmp_path / "d").exists()


def test_one_worker_is_one_process(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    served = start_replica(workers_config(tmp_path, keys, "sqlite", 1), replica_env(keys))
    try:
        assert children_of(served.process.pid) == []
        assert "workers:" not in "".join(served.log)
    finally:
        stop(served)
    assert os.path.exists(tmp_path / "data" / "custodes.db")
