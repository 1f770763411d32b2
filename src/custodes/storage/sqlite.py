"""SQLite store (the embedded default): one file, WAL journal, synchronous=FULL so that a
write acknowledged to a client survives a crash or power loss.

Exception: writes to the *volatile* namespaces (by default only the RCAR sessions, of every
tenant: the last path component of the namespace is what counts) commit with
synchronous=NORMAL, which survives a crash of the process but not of the machine, and costs no
fsync. A lost session only makes its guest run the handshake again, and three fsyncs per
handshake were most of the broker's handshake time.

Calls are short and local, so the broker makes them from the event loop; one connection is
shared under a lock (sqlite3 connections are not safe for concurrent use).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custodes._internal.private_files import (
    FileModeError,
    check_store_file,
    create_private_file,
    ensure_private_dir,
)
from custodes.errors import ConfigError, StorageError
from custodes.storage.base import VOLATILE_NAMESPACES, is_volatile
from custodes.storage.batch import Batch

_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""


_UPSERT = (
    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value=excluded.value, "
    "expires_at=excluded.expires_at"
)
# Create only: an expired row with the same key may linger until purged; it is replaced.
_INSERT = (
    "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value=excluded.value, "
    "expires_at=excluded.expires_at "
    "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
)


@dataclass(frozen=True, slots=True)
class _Result:
    rows: list[Any]
    rowcount: int


def _check_modes(path: Path) -> None:
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        check_store_file(file)


class SqliteStore:
    def __init__(
        self, path: Path, *, volatile_namespaces: frozenset[str] = VOLATILE_NAMESPACES
    ) -> None:
        self.path = path
        self._volatile = volatile_namespaces
        self._lock = threading.Lock()
        try:
            # Created 0600 before SQLite opens it: SQLite would make it 0644 under umask 022,
            # and gives the -wal and -shm files the database file's mode.
            ensure_private_dir(path.parent)
            create_private_file(path)
            _check_modes(path)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except FileModeError:
            raise
        except (OSError, sqlite3.Error, ConfigError) as e:
            raise StorageError(f"cannot open SQLite store {path}: {e}") from e
        try:
            self._prepare()
            _check_modes(path)  # a -wal/-shm left by an older run keeps its own mode
        except BaseException:
            # A store that failed to open must not keep the file open.
            self._db.close()
            raise

    def _prepare(self) -> None:
        path = self.path
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise StorageError(
                    f"{path}: schema version {version} is newer than this custodes "
                    f"({_SCHEMA_VERSION}); upgrade custodes"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise StorageError(f"cannot open SQLite store {path}: {e}") from e

    def _run(self, sql: str, args: tuple[object, ...], *, namespace: str | None = None) -> _Result:
        """One statement, its rows read and its cursor closed under the lock: a SELECT left
        half-read keeps a read transaction open on the shared connection, and a write that
        another thread then makes on it fails at once with "database is locked" as soon as
        another process has written (a stale snapshot cannot be upgraded)."""
        try:
            with self._lock:
                volatile = namespace is not None and is_volatile(namespace, self._volatile)
                if volatile:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    cur = self._db.execute(sql, args)
                    try:
                        return _Result(cur.fetchall(), cur.rowcount)
                    finally:
                        cur.close()
                finally:
                    if volatile:
                        self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise StorageError(f"SQLite store {self.path}: {e}") from e

    batches = True  # write_batch below (custodes.storage.batch)

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """One transaction, one commit (:mod:`custodes.storage.batch`). ``BEGIN IMMEDIATE``
        takes the write lock up front, waiting up to the busy timeout: a deferred transaction
        that read first could not upgrade once another process wrote, and would fail with
        "database is locked" at once instead of waiting."""
        rows = batch.rows()
        volatile = all(is_volatile(r.namespace, self._volatile) for r in rows)
        try:
            with self._lock:
                if volatile:
                    self._db.execute("PRAGMA synchronous=NORMAL")
                try:
                    return self._write_batch(batch, now)
                finally:
                    if volatile:
                        self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            raise StorageError(f"SQLite store {self.path}: {e}") from e

    def _write_batch(self, batch: Batch, now: float) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for row in batch.inserts:
                cur = db.execute(_INSERT, (row.namespace, row.key, row.value, None, now))
                if cur.rowcount != 1:
                    db.execute("ROLLBACK")
                    return False
            for row in batch.upserts:
                db.execute(_UPSERT, (row.namespace, row.key, row.value, None))
            for row in batch.if_absent:
                db.execute(_INSERT, (row.namespace, row.key, row.value, None, now))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return True

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        rows = self._run(
            "SELECT value FROM kv WHERE namespace=? AND key=? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (namespace, key, now),
        ).rows
        return bytes(rows[0][0]) if rows else None

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        self._run(
            _UPSERT,
            (namespace, key, value, expires_at),
            namespace=namespace,
        )

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        # An expired row with the same key may linger until purged; replace it.
        cur = self._run(
            _INSERT,
            (namespace, key, value, expires_at, now),
            namespace=namespace,
        )
        return cur.rowcount == 1

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        cur = self._run(
            "UPDATE kv SET value=? WHERE namespace=? AND key=? AND value=? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (new, namespace, key, expected, now),
            namespace=namespace,
        )
        return cur.rowcount == 1

    def delete(self, namespace: str, key: str) -> bool:
        cur = self._run(
            "DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key), namespace=namespace
        )
        return cur.rowcount == 1

    def list(self, namespace: str, *, now: float) -> list[str]:
        rows = self._run(
            "SELECT key FROM kv WHERE namespace=? AND (expires_at IS NULL OR expires_at > ?) "
            "ORDER BY key",
            (namespace, now),
        ).rows
        return [str(r[0]) for r in rows]

    def purge_expired(self, now: float) -> int:
        cur = self._run("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
