"""SQLite store (the embedded default): one file, WAL journal, synchronous=FULL so that a
write acknowledged to a client survives a crash or power loss.

Exception: writes to the *volatile* namespaces (by default only the RCAR sessions, of every
tenant: the last path component of the namespace is what counts) commit with
synchronous=NORMAL, which survives a crash of the process but not of the machine, and costs no
fsync. A lost session only makes its guest run the handshake again, and three fsyncs per
handshake were most of the broker's handshake time.

The broker calls the store from worker threads (custodes.kbs.lanes); its two connections (the
durable one, and one for the volatile namespaces' writes) are used under one lock: sqlite3
connections are not safe for concurrent use, and two connections of one process taking turns
never wait on each other's file lock.

The schema and the statements are :mod:`custodes.storage.sql`'s, shared with PostgreSQL; the
schema version is the file's ``user_version``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final, LiteralString

from custodes._internal.private_files import (
    FileModeError,
    check_store_file,
    create_private_file,
    ensure_private_dir,
)
from custodes.errors import ConfigError, StorageError
from custodes.storage.base import VOLATILE_NAMESPACES, is_volatile
from custodes.storage.batch import Batch
from custodes.storage.sql import SCHEMA_VERSION, SQLITE, Args, Result, SqlStore, statements

# How long a call waits for another connection's write lock before "database is locked".
_BUSY_TIMEOUT_MS: Final = 5000


class _BatchRefused(Exception):
    """Internal: a key of the batch's inserts is live; rolls the transaction back."""


@contextmanager
def _write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Committed if the block returns, rolled back if it raises. ``BEGIN IMMEDIATE`` takes
    the write lock up front, waiting up to the busy timeout: a deferred transaction that read
    first could not upgrade once another process wrote, and would fail with "database is
    locked" at once instead of waiting."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _check_modes(path: Path) -> None:
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        check_store_file(file)


class SqliteStore(SqlStore):
    _sql = statements(SQLITE)

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
        self._volatile_db: sqlite3.Connection | None = None
        try:
            self._prepare()
            _check_modes(path)  # a -wal/-shm left by an older run keeps its own mode
            # The writes of volatile namespaces go through a second connection that commits
            # without an fsync (synchronous=NORMAL, a per-connection setting): switching one
            # connection's setting around each such write cost two statements a write.
            self._volatile_db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._volatile_db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._volatile_db.execute("PRAGMA synchronous=NORMAL")
        except BaseException as e:
            # A store that failed to open must not keep the file open.
            self._db.close()
            if self._volatile_db is not None:
                self._volatile_db.close()
            if isinstance(e, sqlite3.Error):
                raise StorageError(f"cannot open SQLite store {path}: {e}") from e
            raise

    def _prepare(self) -> None:
        path = self.path
        try:
            self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._enable_wal()
            self._db.execute("PRAGMA synchronous=FULL")
            if self._schema_version() != SCHEMA_VERSION:
                self._migrate()
        except sqlite3.Error as e:
            raise StorageError(f"cannot open SQLite store {path}: {e}") from e

    def _enable_wal(self) -> None:
        """Switch the file to WAL (recorded in the file: a no-op once done). The switch needs
        the exclusive lock after a read, and SQLite answers "database is locked" at once rather
        than wait when another connection holds a lock (it could deadlock otherwise): stores
        opening a fresh file together retry, within the busy timeout."""
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if e.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                    raise
            time.sleep(0.005)

    def _schema_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: schema version {version} is newer than this custodes "
                f"({SCHEMA_VERSION}); upgrade custodes"
            )
        return version

    def _migrate(self) -> None:
        """The missing steps and the new version in one transaction. ``BEGIN IMMEDIATE``
        makes stores opening the file together take turns; the version is read again under
        the lock, so a later one applies nothing twice."""
        with _write_transaction(self._db):
            for step in self._sql.migrations[self._schema_version() :]:
                for statement in step:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def _connection(self, *, volatile: bool) -> Iterator[sqlite3.Connection]:
        """A connection under the store's one lock (so the two never wait on each other):
        the volatile one, committing without an fsync, when ``volatile``; its errors become
        :class:`StorageError`."""
        try:
            with self._lock:
                db = self._volatile_db if volatile and self._volatile_db is not None else self._db
                yield db
        except sqlite3.Error as e:
            raise StorageError(f"SQLite store {self.path}: {e}") from e

    def _run(
        self, sql: LiteralString, args: Args, *, volatile: bool = False, idempotent: bool = True
    ) -> Result:
        """One statement, its rows read and its cursor closed under the lock: a SELECT left
        half-read keeps a read transaction open on the shared connection, and a write that
        another thread then makes on it fails at once with "database is locked" as soon as
        another process has written (a stale snapshot cannot be upgraded)."""
        with self._connection(volatile=volatile) as db:
            cur = db.execute(sql, args)
            try:
                return Result(cur.fetchall(), cur.rowcount)
            finally:
                cur.close()

    batches = True  # write_batch below (custodes.storage.batch)

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """One transaction, one commit (:mod:`custodes.storage.batch`)."""
        volatile = all(is_volatile(r.namespace, self._volatile) for r in batch.rows())
        try:
            with self._connection(volatile=volatile) as db, _write_transaction(db):
                for row in batch.inserts:
                    cur = db.execute(
                        self._sql.insert, (row.namespace, row.key, row.value, None, now)
                    )
                    if cur.rowcount != 1:
                        raise _BatchRefused
                for row in batch.upserts:
                    db.execute(self._sql.upsert, (row.namespace, row.key, row.value, None))
                for row in batch.if_absent:
                    db.execute(self._sql.insert, (row.namespace, row.key, row.value, None, now))
        except _BatchRefused:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._volatile_db is not None:
                self._volatile_db.close()
