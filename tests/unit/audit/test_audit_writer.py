"""The audit writer: group commit, the chain head kept in memory, batches written in one
transaction, and chains written concurrently by threads, processes (one SQLite file) and
replicas (one PostgreSQL) that verify; a crash loses no acknowledged entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import FrozenClock, SystemClock
from custodes.audit.group_commit import GroupCommit
from custodes.audit.log import AuditLog
from custodes.errors import StorageError
from custodes.storage.base import Store
from custodes.storage.batch import Batch, Row, batch_store
from custodes.storage.memory import MemoryStore
from custodes.storage.postgres import PostgresStore
from custodes.storage.sqlite import SqliteStore
from pg_server import PgServer, running_postgres

STREAM = "acme"
APPENDER = Path(__file__).resolve().parents[2] / "audit_appender.py"
NOW = 1_700_000_000.0


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def key_file(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "audit-key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def dsn(postgres: PgServer) -> Iterator[str]:
    dsn = postgres.create_database()
    yield dsn
    postgres.drop_database(dsn)


def run_threads(count: int, work: object) -> None:
    errors: list[BaseException] = []

    def guarded(t: int) -> None:
        try:
            work(t)  # type: ignore[operator]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# --- group commit ---------------------------------------------------------------------------


def test_concurrent_callers_share_commits_and_get_their_own_results() -> None:
    batches: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        time.sleep(0.005)  # a commit's fsync: callers arriving meanwhile queue up
        batches.append(len(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results: dict[int, int] = {}

    def work(t: int) -> None:
        for i in range(10):
            results[t * 100 + i] = group.submit(t * 100 + i)

    run_threads(16, work)
    assert results == {n: n * 10 for n in results} and len(results) == 160
    assert sum(batches) == 160 and group.commits == len(batches)
    assert len(batches) < 160 / 2, batches  # shared commits, not one per caller
    assert max(batches) > 1


def test_one_callers_failure_is_its_own_and_a_failed_commit_fails_its_batch() -> None:
    fail_all = threading.Event()

    def commit(items: Sequence[int]) -> list[int | BaseException]:
        if fail_all.is_set():
            raise StorageError("disk gone")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    group: GroupCommit[int, int | BaseException] = GroupCommit(commit)
    assert group.submit(3) == 3
    with pytest.raises(ValueError, match="bad -1"):
        group.submit(-1)
    fail_all.set()
    with pytest.raises(StorageError, match="disk gone"):
        group.submit(4)
    fail_all.clear()
    assert group.submit(5) == 5  # the writer recovers


def test_a_batch_never_exceeds_its_bound() -> None:
    sizes: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        time.sleep(0.002)
        sizes.append(len(items))
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=3)
    run_threads(12, lambda t: [group.submit(i) for i in range(5)])
    assert sum(sizes) == 60 and max(sizes) <= 3
    with pytest.raises(ValueError):
        GroupCommit(commit, max_batch=0)


# --- batches in the stores ------------------------------------------------------------------


def batch_contract(store: Store) -> None:
    batches = batch_store(store)
    assert batches is not None
    assert store.insert("audit/s", "k1", b"old", now=NOW)
    refused = Batch(
        inserts=(Row("audit/s", "k0", b"a"), Row("audit/s", "k1", b"b")),
        upserts=(Row("audit-head", "s", b"1"),),
        if_absent=(Row("audit-index/s", "c", b"0"),),
    )
    assert not batches.write_batch(refused, now=NOW)
    # All or nothing: no row of the refused batch was written.
    assert store.get("audit/s", "k0", now=NOW) is None
    assert store.get("audit/s", "k1", now=NOW) == b"old"
    assert store.get("audit-head", "s", now=NOW) is None
    assert store.get("audit-index/s", "c", now=NOW) is None
    store.set("audit-head", "s", b"0")
    store.set("audit-index/s", "c", b"first")
    accepted = Batch(
        inserts=(Row("audit/s", "k2", b"x"), Row("audit/s", "k3", b"y")),
        upserts=(Row("audit-head", "s", b"3"),),
        if_absent=(Row("audit-index/s", "c", b"second"), Row("audit-index/s", "d", b"3")),
    )
    assert batches.write_batch(accepted, now=NOW)
    assert store.list("audit/s", now=NOW) == ["k1", "k2", "k3"]
    assert store.get("audit-head", "s", now=NOW) == b"3"  # upserted
    assert store.get("audit-index/s", "c", now=NOW) == b"first"  # kept: only if absent
    assert store.get("audit-index/s", "d", now=NOW) == b"3"
    # An expired row does not block an insert (as Store.insert).
    store.set("audit/s", "k9", b"gone", expires_at=NOW - 1)
    assert batches.write_batch(Batch(inserts=(Row("audit/s", "k9", b"new"),)), now=NOW)
    assert store.get("audit/s", "k9", now=NOW) == b"new"


def test_sqlite_batches_are_all_or_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        batch_contract(store)
    finally:
        store.close()


def test_postgres_batches_are_all_or_nothing(dsn: str) -> None:
    store = PostgresStore(dsn)
    try:
        batch_contract(store)
    finally:
        store.close()


def test_the_memory_store_has_no_batches() -> None:
    assert batch_store(MemoryStore()) is None


# --- the writer -----------------------------------------------------------------------------


class CountingStore(SqliteStore):
    """A real SQLite store that counts reads and commits."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0
        self.batches_written = 0

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        self.reads += 1
        return super().get(namespace, key, now=now)

    def list(self, namespace: str, *, now: float) -> list[str]:
        self.reads += 1
        return super().list(namespace, now=now)

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        self.batches_written += 1
        return super().write_batch(batch, now=now)


def test_the_head_is_kept_in_memory(tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    store = CountingStore(tmp_path / "s.db")
    try:
        log = AuditLog(store, key, FrozenClock(NOW))
        log.append(STREAM, "release", None, {"i": 0})
        reads = store.reads
        for i in range(1, 20):
            log.append(STREAM, "release", None, {"i": i, "correlation_id": f"c{i}"})
        assert store.reads == reads  # no read on the hot path
        assert store.batches_written == 20
        # Derived data came with the entries, in the same commit.
        assert store.get("audit-head", STREAM, now=NOW) == b"19"
        found = log.get_by_correlation_id(STREAM, "c7")
        assert found is not None and found.seq == 7
        assert log.verify_stream(STREAM).ok
    finally:
        store.close()


def test_threads_share_commits_and_the_chain_verifies(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    store = CountingStore(tmp_path / "s.db")
    try:
        log = AuditLog(store, key, SystemClock())

        def work(t: int) -> None:
            for i in range(12):
                entry = log.append(STREAM, "release", f"t{t}", {"t": t, "i": i})
                assert entry.event == {"t": t, "i": i}  # each caller gets its own entry

        run_threads(16, work)
        entries = log.entries(STREAM)
        assert [e.seq for e in entries] == list(range(16 * 12))
        assert sorted((e.event["t"], e.event["i"]) for e in entries) == [
            (t, i) for t in range(16) for i in range(12)
        ]
        report = log.verify_stream(STREAM)
        assert report.ok and report.count == 16 * 12
        assert store.batches_written < 16 * 12  # group commit: fewer commits than entries
    finally:
        store.close()


def test_a_conflict_reloads_the_head_and_reseals(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    """Two logs on one file (two processes): each one's cached head goes stale whenever the
    other appends; every append still lands, once, and the chain verifies."""
    path = tmp_path / "s.db"
    stores = [SqliteStore(path), SqliteStore(path)]
    try:
        logs = [AuditLog(s, key, SystemClock()) for s in stores]
        for i in range(10):
            assert logs[i % 2].append(STREAM, "admin", None, {"i": i}).seq == i
        assert [e.event["i"] for e in logs[0].entries(STREAM)] == list(range(10))
        assert logs[1].verify_stream(STREAM).ok
    finally:
        for s in stores:
            s.close()


def test_a_failed_batch_fails_its_callers_and_the_next_one_succeeds(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey
) -> None:
    class FailingOnce(SqliteStore):
        fail = True

        def write_batch(self, batch: Batch, *, now: float) -> bool:
            if self.fail:
                self.fail = False
                raise StorageError("disk full")
            return super().write_batch(batch, now=now)

    store = FailingOnce(tmp_path / "s.db")
    try:
        log = AuditLog(store, key, SystemClock())
        with pytest.raises(StorageError, match="disk full"):
            log.append(STREAM, "admin", None, {"i": 1})
        assert log.append(STREAM, "admin", None, {"i": 2}).seq == 0
        assert [e.event for e in log.entries(STREAM)] == [{"i": 2}]
    finally:
        store.close()


def _appenders(
    count: int, where: list[str], key_file: Path, *, threads: int, per_thread: int
) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(APPENDER),
                *where,
                "--key",
                str(key_file),
                "--tag",
                f"p{p}",
                "--threads",
                str(threads),
                "--count",
                str(per_thread),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(count)
    ]


def _check_processes(procs: list[subprocess.Popen[str]], log: AuditLog, expected: int) -> None:
    acked: set[tuple[int, str]] = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        acked |= {(int(s), h) for _, s, h in (line.split() for line in out.splitlines())}
    entries = log.entries(STREAM)
    assert len(acked) == expected == len(entries)
    assert {(e.seq, e.hash) for e in entries} == acked
    report = log.verify_stream(STREAM)
    assert report.ok and report.count == expected


def test_processes_on_one_sqlite_file(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, key_file: Path
) -> None:
    path = tmp_path / "shared.db"
    SqliteStore(path).close()  # created once, as `custodes serve` does before forking
    procs = _appenders(3, ["--sqlite", str(path)], key_file, threads=4, per_thread=10)
    store = SqliteStore(path)
    try:
        _check_processes(procs, AuditLog(store, key, SystemClock()), 3 * 4 * 10)
    finally:
        store.close()


def test_replicas_on_postgres(dsn: str, key: ec.EllipticCurvePrivateKey, key_file: Path) -> None:
    PostgresStore(dsn).close()  # migrated once
    procs = _appenders(2, ["--dsn", dsn], key_file, threads=4, per_thread=15)
    store = PostgresStore(dsn)
    try:
        _check_processes(procs, AuditLog(store, key, SystemClock()), 2 * 4 * 15)
    finally:
        store.close()


def test_a_crash_loses_no_acknowledged_entry(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, key_file: Path
) -> None:
    """SIGKILL while eight threads append: every entry acknowledged before is in the store,
    as acknowledged, and the chain verifies."""
    path = tmp_path / "crash.db"
    SqliteStore(path).close()
    [proc] = _appenders(1, ["--sqlite", str(path)], key_file, threads=8, per_thread=0)
    acked: list[tuple[int, str]] = []
    assert proc.stdout is not None
    try:
        while len(acked) < 200:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "appender ended"
            _, seq, digest = line.split()
            acked.append((int(seq), digest))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    store = SqliteStore(path)
    try:
        log = AuditLog(store, key, SystemClock())
        stored = {(e.seq, e.hash) for e in log.entries(STREAM)}
        assert set(acked) <= stored
        assert log.verify_stream(STREAM).ok
        # The next append (a restarted broker) continues the chain after the last stored one.
        assert log.append(STREAM, "admin", None, {"after": "crash"}).seq == len(stored)
        assert log.verify_stream(STREAM).ok
    finally:
        store.close()
