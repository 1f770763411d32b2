"""PostgreSQL store specifics, against a real server (``tests/pg_server.py``): migrations,
opening errors, durability settings, replicas racing, and faults (server restart, kill -9 of
the server, connections lost mid-statement).

The Store contract itself runs against PostgreSQL in ``test_store_contract.py``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import TupleRow

from custodes.errors import ConfigError, StorageError
from custodes.storage.base import NS_RESOURCES, NS_SESSIONS
from custodes.storage.batch import Batch, Row
from custodes.storage.factory import open_store
from custodes.storage.postgres import PostgresStore
from custodes.storage.sql import SCHEMA_VERSION
from pg_server import PgServer, running_postgres

NS = NS_RESOURCES
NOW = 1_700_000_000.0
_WAIT_S = 30.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def dsn(postgres: PgServer) -> Iterator[str]:
    """A fresh, empty database; dropped afterwards (which fails if a store left it open)."""
    dsn = postgres.create_database()
    yield dsn
    if not postgres.running:  # a fault test failed half-way
        postgres.start()
    postgres.drop_database(dsn)


@contextmanager
def opened(dsn: str, *, pool_size: int = 8, connect_timeout: int = 5) -> Iterator[PostgresStore]:
    store = PostgresStore(dsn, pool_size=pool_size, connect_timeout=connect_timeout)
    try:
        yield store
    finally:
        store.close()


def _query(dsn: str, sql: str) -> list[TupleRow]:
    with closing(psycopg.connect(dsn, autocommit=True)) as conn:
        cur = conn.execute(sql)
        return cur.fetchall() if cur.description is not None else []


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def _dbname(dsn: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])


# --- migrations ---------------------------------------------------------------------------


def test_fresh_database_gets_the_current_schema(dsn: str) -> None:
    with opened(dsn) as store:
        store.set(NS, "k", b"v")
    assert SCHEMA_VERSION == 1
    assert _query(dsn, "SELECT version FROM schema_migrations") == [(1,)]
    columns = _query(
        dsn,
        "SELECT column_name, data_type, is_nullable, collation_name "
        "FROM information_schema.columns WHERE table_name = 'kv' ORDER BY ordinal_position",
    )
    assert columns == [
        ("namespace", "text", "NO", "C"),
        ("key", "text", "NO", "C"),
        ("value", "bytea", "NO", None),
        ("expires_at", "double precision", "YES", None),
    ]
    indexes = _query(dsn, "SELECT indexname FROM pg_indexes WHERE tablename = 'kv' ORDER BY 1")
    assert indexes == [("kv_expiry",), ("kv_pkey",)]


def test_reopen_keeps_data_and_applies_nothing_again(dsn: str) -> None:
    with opened(dsn) as store:
        store.set(NS, "forever", b"v1")
        store.set(NS, "timed", b"v2", expires_at=NOW + 10)
    applied = _query(dsn, "SELECT version, applied_at FROM schema_migrations")
    with opened(dsn) as store:
        assert store.get(NS, "forever", now=NOW) == b"v1"
        assert store.get(NS, "timed", now=NOW) == b"v2"
        assert store.get(NS, "timed", now=NOW + 10) is None
        assert store.list(NS, now=NOW) == ["forever", "timed"]
    assert _query(dsn, "SELECT version, applied_at FROM schema_migrations") == applied


def test_newer_schema_version_is_refused(dsn: str) -> None:
    with opened(dsn):
        pass
    _query(dsn, "INSERT INTO schema_migrations (version) VALUES (2)")
    with pytest.raises(StorageError, match="newer"):
        PostgresStore(dsn)
    # Nothing touched; the refused store's connection is closed (checked by the fixture's
    # unforced DROP DATABASE).
    assert _query(dsn, "SELECT version FROM schema_migrations ORDER BY 1") == [(1,), (2,)]


def test_stores_opening_together_on_an_empty_database_all_succeed(dsn: str) -> None:
    count = 4
    barrier = threading.Barrier(count)
    results: list[PostgresStore | BaseException | None] = [None] * count

    def open_one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = PostgresStore(dsn)
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stores = [r for r in results if isinstance(r, PostgresStore)]
    try:
        assert len(stores) == count, results
        for i, store in enumerate(stores):
            store.set(NS, f"k{i}", b"v")
        assert stores[0].list(NS, now=NOW) == [f"k{i}" for i in range(count)]
    finally:
        for store in stores:
            store.close()
    assert _query(dsn, "SELECT version FROM schema_migrations") == [(1,)]


def test_a_foreign_kv_table_is_refused_and_left_alone(dsn: str) -> None:
    _query(dsn, "CREATE TABLE kv (x integer)")
    with pytest.raises(StorageError) as info:
        PostgresStore(dsn)
    assert isinstance(info.value.__cause__, psycopg.Error)
    # The failed migration rolled back whole, bookkeeping table included.
    assert _query(dsn, "SELECT to_regclass('schema_migrations')") == [(None,)]
    assert _query(
        dsn, "SELECT column_name FROM information_schema.columns WHERE table_name = 'kv'"
    ) == [("x",)]


def test_a_role_without_create_opens_a_migrated_database(dsn: str) -> None:
    with opened(dsn):
        pass
    _query(
        dsn,
        "DO $$ BEGIN "
        "IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replica') THEN "
        "CREATE ROLE replica LOGIN; END IF; END $$",
    )
    _query(dsn, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    _query(dsn, "GRANT SELECT, INSERT, UPDATE, DELETE ON kv, schema_migrations TO replica")
    limited = dsn.replace("user=custodes", "user=replica")
    with opened(limited) as store:
        store.set(NS, "k", b"v")
        assert store.get(NS, "k", now=NOW) == b"v"


# --- opening errors -----------------------------------------------------------------------


def test_non_utf8_database_is_refused(postgres: PgServer) -> None:
    dsn = postgres.create_database(encoding="SQL_ASCII")
    try:
        with pytest.raises(StorageError, match="UTF8"):
            PostgresStore(dsn)
        assert _query(dsn, "SELECT to_regclass('schema_migrations')") == [(None,)]
    finally:
        postgres.drop_database(dsn)


@pytest.mark.parametrize(
    "bad",
    [
        "host=127.0.0.1 password=s3cret junk",
        "host=127.0.0.1 password='s3cret",
        "postgresql://user:s3cret@[::1/db",
        "nosuchoption=s3cret",
    ],
)
def test_invalid_dsn_gives_storage_error_without_the_dsn(bad: str) -> None:
    with pytest.raises(StorageError) as info:
        PostgresStore(bad)
    assert "s3cret" not in str(info.value)
    # The psycopg error quotes the string: it is not chained either.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_nothing_listening_gives_storage_error(postgres: PgServer) -> None:
    import socket

    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(StorageError) as info:
            PostgresStore(f"host=127.0.0.1 port={port} user=u password=s3cret dbname=d")
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert "s3cret" not in str(info.value)
    assert f"u@127.0.0.1:{port}/d" in str(info.value)


def test_missing_database_gives_storage_error(postgres: PgServer) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        PostgresStore(postgres.dsn("no_such_database"))


def test_bad_pool_settings_are_refused(dsn: str) -> None:
    with pytest.raises(StorageError):
        PostgresStore(dsn, pool_size=0)
    with pytest.raises(StorageError):
        PostgresStore(dsn, connect_timeout=0)


def test_the_dsn_is_kept_out_of_reprs(dsn: str) -> None:
    with opened(dsn + " password=s3cret") as store:
        assert "s3cret" not in repr(vars(store))
        assert "password" not in store.where


def test_use_after_close_gives_storage_error(dsn: str) -> None:
    store = PostgresStore(dsn)
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.get(NS, "k", now=NOW)
    with pytest.raises(StorageError, match="closed"):
        store.set(NS, "k", b"v")
    store.close()  # idempotent


@pytest.mark.parametrize("key", ["nul\x00inside", "lone\udc80surrogate"])
def test_unstorable_key_gives_storage_error_and_the_store_goes_on(dsn: str, key: str) -> None:
    with opened(dsn) as store:
        with pytest.raises(StorageError):
            store.set(NS, key, b"v")
        with pytest.raises(StorageError):
            store.set(NS_SESSIONS, key, b"v")  # inside an explicit transaction
        with pytest.raises(StorageError):
            store.get(NS, key, now=NOW)
        store.set(NS, "fine", b"v")
        assert store.list(NS, now=NOW) == ["fine"]


def test_factory_opens_postgres(dsn: str, tmp_path: Path) -> None:
    store = open_store("postgres", sqlite_path=tmp_path / "unused.db", dsn=dsn)
    try:
        assert isinstance(store, PostgresStore)
        store.set(NS, "k", b"v")
    finally:
        store.close()
    assert not (tmp_path / "unused.db").exists()
    with pytest.raises(ConfigError):
        open_store("postgres", sqlite_path=tmp_path / "unused.db", dsn=None)
    with pytest.raises(ConfigError):
        open_store("postgres", sqlite_path=tmp_path / "unused.db", dsn="")


# --- durability ---------------------------------------------------------------------------


def _connection_setting(store: PostgresStore, name: str) -> object:
    conn = store._pool.acquire()
    try:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
        assert row is not None
        return row[0]
    finally:
        store._pool.release(conn, reuse=True)


@pytest.mark.parametrize(
    ("database_default", "expected"),
    [("off", "on"), ("on", "on"), ("local", "local"), ("remote_apply", "remote_apply")],
)
def test_commits_wait_for_the_wal_flush(dsn: str, database_default: str, expected: str) -> None:
    # A database (or server) default of "off" is raised to "on"; stronger ones are kept.
    _query(dsn, f"ALTER DATABASE {_dbname(dsn)} SET synchronous_commit = {database_default}")
    with opened(dsn) as store:
        assert _connection_setting(store, "synchronous_commit") == expected


def _log_of(postgres: PgServer, action: Callable[[], object]) -> str:
    """What the server logged while ``action`` ran (statements are logged before they run,
    and the server writes its log before it answers)."""
    start = postgres.log_path.stat().st_size
    action()
    with postgres.log_path.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


@pytest.mark.parametrize(
    ("volatile", "asynchronous"),
    [(None, {NS_SESSIONS}), (frozenset(), set()), (frozenset({NS}), {NS})],
    ids=["default", "none", "resources"],
)
def test_only_volatile_namespaces_commit_asynchronously(
    postgres: PgServer,
    dsn: str,
    volatile: frozenset[str] | None,
    asynchronous: set[str],
) -> None:
    _query(dsn, f"ALTER DATABASE {_dbname(dsn)} SET log_statement = 'all'")
    store = (
        PostgresStore(dsn) if volatile is None else PostgresStore(dsn, volatile_namespaces=volatile)
    )
    try:
        # A tenant's namespaces count by their last path component.
        for ns in (NS, NS_SESSIONS, f"t/acme/{NS}", f"t/acme/{NS_SESSIONS}"):
            writes: list[Callable[[], object]] = [
                partial(store.set, ns, "k", b"v"),
                partial(store.insert, ns, "i", b"v", now=NOW),
                partial(store.compare_and_swap, ns, "k", b"v", b"w", now=NOW),
                partial(store.delete, ns, "k"),
            ]
            for write in writes:
                log = _log_of(postgres, write)
                assert "kv" in log  # the statement itself was logged
                expected = ns.rsplit("/", 1)[-1] in asynchronous
                assert ("SET LOCAL synchronous_commit = off" in log) == expected
        # Reads and purges never change the setting.
        for read in (
            lambda: store.get(NS_SESSIONS, "i", now=NOW),
            lambda: store.list(NS_SESSIONS, now=NOW),
            lambda: store.purge_expired(NOW),
        ):
            assert "synchronous_commit" not in _log_of(postgres, read)
        assert store.get(NS_SESSIONS, "i", now=NOW) == b"v"
    finally:
        store.close()


# --- replicas and the pool ----------------------------------------------------------------


def _race(count: int, attempt: Callable[[int], bool]) -> list[int]:
    """Run ``attempt(i)`` in ``count`` threads released together; the indices that won."""
    barrier = threading.Barrier(count)
    results: list[bool | BaseException] = [False] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r for r in results if isinstance(r, BaseException)] == []
    return [i for i, r in enumerate(results) if r is True]


def test_two_replicas_racing_insert_have_one_winner(dsn: str) -> None:
    with opened(dsn) as a, opened(dsn) as b:
        replicas = (a, b)
        for round_ in range(5):
            key = f"nonce{round_}"

            def attempt(i: int, key: str = key) -> bool:
                return replicas[i % 2].insert(NS, key, b"%d" % i, now=NOW)

            winners = _race(8, attempt)
            assert len(winners) == 1
            assert b.get(NS, key, now=NOW) == b"%d" % winners[0]


def test_two_replicas_racing_cas_have_one_winner(dsn: str) -> None:
    with opened(dsn) as a, opened(dsn) as b:
        replicas = (a, b)
        for round_ in range(5):
            key = f"session{round_}"
            a.set(NS_SESSIONS, key, b"authed", expires_at=NOW + 60)

            def attempt(i: int, key: str = key) -> bool:
                return replicas[i % 2].compare_and_swap(
                    NS_SESSIONS, key, b"authed", b"%d" % i, now=NOW
                )

            winners = _race(8, attempt)
            assert len(winners) == 1
            assert a.get(NS_SESSIONS, key, now=NOW) == b"%d" % winners[0]


def test_the_pool_bounds_the_connections(dsn: str) -> None:
    def backends() -> int:
        rows = _query(
            dsn,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'custodes'",
        )
        return int(str(rows[0][0]))

    with opened(dsn, pool_size=2) as store:
        for i in range(8):
            store.set(NS, f"k{i}", b"0")
        _race(8, lambda i: store.compare_and_swap(NS, f"k{i}", b"0", b"1", now=NOW))
        assert 1 <= backends() <= 2
        assert all(store.get(NS, f"k{i}", now=NOW) == b"1" for i in range(8))
    _wait_for(lambda: backends() == 0, "the closed store's connections to end")


# --- faults -------------------------------------------------------------------------------


_WRITER = textwrap.dedent(
    """
    import sys
    from custodes.errors import StorageError
    from custodes.storage.postgres import PostgresStore

    store = PostgresStore(sys.argv[1], connect_timeout=2)
    try:
        for i in range(1_000_000):
            store.set("repository", f"k{i:07d}", f"value-{i}".encode())
            print(i, flush=True)  # acknowledged only after set() returned
    except StorageError:
        print("stopped", flush=True)
    """
)


def test_acknowledged_writes_survive_kill9_of_the_server(postgres: PgServer, dsn: str) -> None:
    with opened(dsn):
        pass  # schema in place before the child starts
    wanted = 200
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, dsn], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked: list[int] = []
    tail: list[str] = []
    try:
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) == wanted:
                break
        # Mid-way: the child is still writing when the server dies.
        postgres.kill9()
        for line in child.stdout:
            if line.strip().isdigit():
                acked.append(int(line))
            else:
                tail.append(line.strip())
        child.wait(_WAIT_S)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        if not postgres.running:
            postgres.start()  # crash recovery
    # The child saw a clean StorageError, not a raw psycopg exception.
    assert tail == ["stopped"]
    assert child.returncode == 0
    assert len(acked) >= wanted
    assert acked == list(range(len(acked)))
    with opened(dsn) as store:
        for i in acked:
            assert store.get(NS, f"k{i:07d}", now=NOW) == f"value-{i}".encode()
        # At most one write was in flight (committed but not yet acknowledged) at the kill.
        assert len(acked) <= len(store.list(NS, now=NOW)) <= len(acked) + 1


@pytest.mark.parametrize("fault", ["restart", "kill9"])
def test_an_open_store_recovers_after_the_server_comes_back(
    postgres: PgServer, dsn: str, fault: str
) -> None:
    with opened(dsn, pool_size=4) as store:
        store.set(NS, "before", b"v")
        # Several idle pooled connections, all of which the fault kills.
        _race(4, lambda i: store.get(NS, "before", now=NOW) == b"v")
        if fault == "restart":
            postgres.restart()
        else:
            postgres.kill9()
            postgres.start()
        # Not-idempotent calls first, and in a durable namespace (one statement, no BEGIN
        # that could fail first): the dead pooled connections are found before sending.
        assert store.insert(NS, "challenge", b"c", now=NOW)
        assert store.compare_and_swap(NS, "challenge", b"c", b"used", now=NOW)
        assert store.insert(NS_SESSIONS, "session", b"s", now=NOW)
        assert store.get(NS, "before", now=NOW) == b"v"
        store.set(NS, "after", b"w")
        assert store.list(NS, now=NOW) == ["after", "before", "challenge"]


def test_calls_fail_cleanly_while_the_server_is_down(postgres: PgServer, dsn: str) -> None:
    with opened(dsn, connect_timeout=2) as store:
        store.set(NS, "k", b"v")
        postgres.stop("immediate")
        try:
            calls: list[Callable[[], object]] = [
                lambda: store.get(NS, "k", now=NOW),
                lambda: store.set(NS, "k", b"w"),
                lambda: store.insert(NS, "n", b"v", now=NOW),
                lambda: store.compare_and_swap(NS, "k", b"v", b"w", now=NOW),
                lambda: store.delete(NS, "k"),
                lambda: store.list(NS, now=NOW),
                lambda: store.purge_expired(NOW),
            ]
            for call in calls:
                with pytest.raises(StorageError) as info:
                    call()
                assert isinstance(info.value.__cause__, psycopg.Error)
        finally:
            postgres.start()
        assert store.get(NS, "k", now=NOW) == b"v"


def _lock_waiters(dsn: str) -> list[int]:
    rows = _query(
        dsn,
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'custodes' "
        "AND wait_event_type = 'Lock'",
    )
    return [int(str(r[0])) for r in rows]


@contextmanager
def _row_locked(dsn: str, key: str) -> Iterator[psycopg.Connection[TupleRow]]:
    """Another client holding ``key``'s row lock until the block ends (then rolled back)."""
    with closing(psycopg.connect(dsn)) as holder:
        holder.execute("SELECT 1 FROM kv WHERE namespace = %s AND key = %s FOR UPDATE", (NS, key))
        try:
            yield holder
        finally:
            holder.rollback()


def _in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # checked by the test
            outcome.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("operation", ["insert", "compare_and_swap", "write_batch"])
def test_a_write_whose_connection_dies_in_flight_is_not_retried(dsn: str, operation: str) -> None:
    batch = Batch(inserts=(Row(NS, "k", b"new"),))
    with opened(dsn) as store:
        store.set(NS, "k", b"old", expires_at=NOW - 1)  # expired: insert would replace it
        if operation == "insert":
            call: Callable[[], object] = lambda: store.insert(NS, "k", b"new", now=NOW)  # noqa: E731
        elif operation == "write_batch":
            call = lambda: store.write_batch(batch, now=NOW)  # noqa: E731
        else:
            store.set(NS, "k", b"old")
            call = lambda: store.compare_and_swap(NS, "k", b"old", b"new", now=NOW)  # noqa: E731
        with _row_locked(dsn, "k"):
            thread, outcome = _in_thread(call)
            _wait_for(lambda: len(_lock_waiters(dsn)) == 1, "the write to wait on the lock")
            [pid] = _lock_waiters(dsn)
            _query(dsn, f"SELECT pg_terminate_backend({pid})")
            # Not retried: a retry would wait on the lock again and the call would not end.
            thread.join(_WAIT_S)
            assert not thread.is_alive()
        [error] = outcome
        assert isinstance(error, StorageError)
        assert "may or may not" in str(error)
        assert isinstance(error.__cause__, psycopg.OperationalError)
        assert store.get(NS, "k", now=NOW - 10) == b"old"
        # The store goes on, on a new connection.
        if operation == "insert":
            assert store.insert(NS, "k", b"new", now=NOW)
        elif operation == "write_batch":
            assert store.write_batch(batch, now=NOW)
        else:
            assert store.compare_and_swap(NS, "k", b"old", b"new", now=NOW)
        assert store.get(NS, "k", now=NOW - 10) == b"new"


@pytest.mark.parametrize("operation", ["set", "delete"])
def test_an_idempotent_write_whose_connection_dies_is_retried(dsn: str, operation: str) -> None:
    with opened(dsn) as store:
        store.set(NS, "k", b"old")
        call: Callable[[], object] = (
            (lambda: store.set(NS, "k", b"new"))
            if operation == "set"
            else (lambda: store.delete(NS, "k"))
        )
        with _row_locked(dsn, "k"):
            thread, outcome = _in_thread(call)
            _wait_for(lambda: len(_lock_waiters(dsn)) == 1, "the write to wait on the lock")
            [first] = _lock_waiters(dsn)
            _query(dsn, f"SELECT pg_terminate_backend({first})")
            # The retry, on a new connection, waits on the same lock.
            _wait_for(
                lambda: _lock_waiters(dsn) not in ([], [first]), "the retry to wait on the lock"
            )
            assert outcome == []
        thread.join(_WAIT_S)
        assert not thread.is_alive()
        if operation == "set":
            assert outcome == [None]
            assert store.get(NS, "k", now=NOW) == b"new"
        else:
            assert outcome == [True]
            assert store.get(NS, "k", now=NOW) is None


def test_the_server_fixture_cleans_up_after_a_failure() -> None:
    seen: list[Path] = []
    with pytest.raises(RuntimeError, match="boom"), running_postgres() as server:
        seen.append(server.root)
        pid = server._process.pid if server._process else 0
        raise RuntimeError("boom")
    assert not seen[0].exists()
    assert pid > 0
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped
