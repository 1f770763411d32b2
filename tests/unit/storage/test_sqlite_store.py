"""SQLite store specifics: durability settings, reopen, schema versions, bad files, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from custodes._internal.private_files import FileModeError
from custodes.errors import StorageError
from custodes.storage.base import NS_RESOURCES
from custodes.storage.sqlite import SqliteStore

NS = NS_RESOURCES
NOW = 1_700_000_000.0


def _open_fds_to(path: Path) -> list[str]:
    """Paths of this process's open file descriptors that point at ``path`` (Linux)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path):
            found.append(target)
    return found


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    s.set(NS, "forever", b"v1")
    s.set(NS, "timed", b"v2", expires_at=NOW + 10)
    s.close()
    s = SqliteStore(path)
    try:
        assert s.get(NS, "forever", now=NOW) == b"v1"
        assert s.get(NS, "timed", now=NOW) == b"v2"
        assert s.get(NS, "timed", now=NOW + 10) is None
        assert s.list(NS, now=NOW) == ["forever", "timed"]
    finally:
        s.close()


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "s.db"
    s = SqliteStore(path)
    s.set(NS, "k", b"v")
    s.close()
    assert path.is_file()


def test_file_is_wal_with_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    s = SqliteStore(path)
    try:
        # synchronous is a per-connection setting: ask the store's own connection.
        assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        s.close()
    # WAL is recorded in the file itself: a fresh connection sees it.
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        db.close()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=2")
    db.close()
    path.chmod(0o600)  # a store group or others can read is refused before this check
    with pytest.raises(StorageError, match="newer") as info:
        SqliteStore(path)
    # The refused store did not keep the file open (checked while its traceback, which
    # references it, is still alive), and did not touch the version.
    assert info.value.__cause__ is None
    assert _open_fds_to(path) == []
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        db.close()


def test_fresh_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    try:
        columns = db.execute("SELECT name, type, \"notnull\", pk FROM pragma_table_info('kv')")
        assert columns.fetchall() == [
            ("namespace", "TEXT", 1, 1),
            ("key", "TEXT", 1, 2),
            ("value", "BLOB", 1, 0),
            ("expires_at", "REAL", 0, 0),
        ]
        # WITHOUT ROWID: the table has no rowid to select.
        with pytest.raises(sqlite3.OperationalError, match="rowid"):
            db.execute("SELECT rowid FROM kv")
        indexes = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'kv' "
            "AND sql IS NOT NULL"
        )
        assert indexes.fetchall() == [("kv_expiry",)]
    finally:
        db.close()


def test_stores_opening_together_on_a_fresh_file_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    count = 8
    barrier = threading.Barrier(count)
    results: list[SqliteStore | BaseException | None] = [None] * count

    def open_one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = SqliteStore(path)
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stores = [r for r in results if isinstance(r, SqliteStore)]
    try:
        assert len(stores) == count, results
        for i, store in enumerate(stores):
            store.set(NS, f"k{i}", b"v")
        assert stores[0].list(NS, now=NOW) == [f"k{i}" for i in range(count)]
    finally:
        for store in stores:
            store.close()


def test_a_foreign_kv_table_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE kv (x integer)")
    db.close()
    path.chmod(0o600)
    with pytest.raises(StorageError) as info:
        SqliteStore(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    # The failed migration rolled back whole: no index, no version.
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM pragma_table_info('kv')").fetchall() == [("x",)]
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'index'").fetchone() == (
            0,
        )
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        db.close()


def test_a_current_file_opens_while_another_process_writes(tmp_path: Path) -> None:
    # Opening a file at the current schema version writes nothing, so it does not wait for
    # (and time out on) the write lock that a long write elsewhere holds.
    path = tmp_path / "s.db"
    SqliteStore(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        s = SqliteStore(path)
        try:
            assert s.get(NS, "k", now=NOW) is None
        finally:
            s.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a database, just some text\n" * 50,
        b"SQLite format 3\x00" + b"\xff" * 4080,  # right magic, garbage header
        os.urandom(8192),
    ],
    ids=["text", "bad-header", "random"],
)
def test_non_database_file_gives_storage_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(StorageError) as info:
        SqliteStore(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)
    # Checked while the traceback (which references the half-built store) is alive.
    assert _open_fds_to(path) == []


def test_directory_as_path_gives_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        SqliteStore(tmp_path)


def test_parent_is_a_file_gives_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(StorageError):
        SqliteStore(tmp_path / "file" / "s.db")


def test_use_after_close_gives_storage_error(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    s.close()
    with pytest.raises(StorageError):
        s.get(NS, "k", now=NOW)
    with pytest.raises(StorageError):
        s.set(NS, "k", b"v")


def test_empty_file_is_initialised(tmp_path: Path) -> None:
    # A zero-length file is a valid empty SQLite database.
    path = tmp_path / "s.db"
    path.write_bytes(b"")
    path.chmod(0o600)
    s = SqliteStore(path)
    try:
        s.set(NS, "k", b"v")
        assert s.get(NS, "k", now=NOW) == b"v"
    finally:
        s.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from custodes.storage.sqlite import SqliteStore

    store = SqliteStore(Path(sys.argv[1]))
    for i in range(1_000_000):
        store.set("repository", f"k{i:07d}", f"value-{i}".encode())
        print(i, flush=True)  # acknowledged only after set() returned
    """
)


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    wanted = 200
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    acked: list[int] = []
    try:
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) == wanted:
                break
        # Mid-way: the child is still writing when it is killed.
        child.send_signal(signal.SIGKILL)
        acked.extend(int(line) for line in child.stdout if line.strip())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert len(acked) >= wanted
    assert acked == list(range(len(acked)))
    s = SqliteStore(path)
    try:
        for i in acked:
            assert s.get(NS, f"k{i:07d}", now=NOW) == f"value-{i}".encode()
        # At most one write was in flight (done but not yet acknowledged) at the kill.
        assert len(acked) <= len(s.list(NS, now=NOW)) <= len(acked) + 1
    finally:
        s.close()


# --- file modes: the store is the broker's secret state ----------------------------------


def test_store_files_are_private_under_umask_022(tmp_path: Path) -> None:
    # SQLite alone makes 0644 files under umask 022; the directory is created 0700.
    old = os.umask(0o022)
    try:
        s = SqliteStore(tmp_path / "data" / "custodes.db")
    finally:
        os.umask(old)
    try:
        s.set(NS, "k", b"v")
        files = sorted((tmp_path / "data").iterdir())
        assert [f.name for f in files] == ["custodes.db", "custodes.db-shm", "custodes.db-wal"]
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {
            f.name: 0o600 for f in files
        }
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    finally:
        s.close()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_store_file_readable_by_others_is_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / "custodes.db"
    SqliteStore(path).close()
    exposed = path.with_name(path.name + suffix)
    exposed.touch()
    exposed.chmod(0o644)
    with pytest.raises(FileModeError, match=f"chmod 600 {exposed}"):
        SqliteStore(path)


def test_volatile_writes_commit_without_fsync_and_durable_ones_with_it(tmp_path: Path) -> None:
    # Each connection's own setting (2 = FULL: fsync at commit; 1 = NORMAL: none in WAL), and
    # which connection each write went through.
    from custodes.storage.base import NS_SESSIONS

    store = SqliteStore(tmp_path / "kv.db")
    try:
        seen: dict[str, list[str]] = {"durable": [], "volatile": []}
        store._db.set_trace_callback(seen["durable"].append)
        assert store._volatile_db is not None
        store._volatile_db.set_trace_callback(seen["volatile"].append)
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert store._volatile_db.execute("PRAGMA synchronous").fetchone()[0] == 1
        seen["durable"].clear()
        seen["volatile"].clear()
        store.set("t/bank/" + NS_SESSIONS, "s1", b"session")
        store.set("resources", "r1", b"secret")
        assert [("s1" in q, "r1" in q) for q in seen["volatile"]] == [(True, False)]
        assert [("s1" in q, "r1" in q) for q in seen["durable"]] == [(False, True)]
        assert store.get("t/bank/" + NS_SESSIONS, "s1", now=0.0) == b"session"
    finally:
        store.close()
