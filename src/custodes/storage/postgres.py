"""PostgreSQL store (scale-out): several broker replicas share one database.

Same semantics as :class:`~custodes.storage.sqlite.SqliteStore`, and the same schema and
statements (:mod:`custodes.storage.sql`): one ``kv`` table keyed by (namespace, key), byte
values, optional expiry, an atomic insert and compare-and-swap. Each operation is one
statement, so PostgreSQL's row locks make ``insert`` and ``compare_and_swap`` atomic across
connections, processes and replicas.

Schema: versioned migrations, recorded in ``schema_migrations``, applied when a store opens,
in one transaction under an advisory lock so that replicas starting together neither race nor
apply a step twice. A database whose schema is newer than this code is refused.

Durability: a write returns only once its commit is flushed to the server's WAL
(``synchronous_commit`` is raised to ``on`` where the server default is ``off``; stronger
settings such as ``remote_apply`` are kept). The *volatile* namespaces (by default the RCAR
sessions of every tenant: the last path component of the namespace is what counts) commit
with ``synchronous_commit = off``, as SQLite commits them without an fsync: a server crash
may lose the last few, and a lost session only makes its guest attest again.

Connections: a small pool, one connection per concurrent call (psycopg connections are not
shared between threads mid-statement); connections idle in the pool that the server dropped
(a restart) are detected and replaced before use.

Recovery: a call that loses its connection is retried once on a fresh one when that cannot
apply it twice: always for ``get``, ``list``, ``set``, ``delete`` and ``purge_expired``
(idempotent), and for ``insert`` and ``compare_and_swap`` only when the connection failed
before the statement was sent. Otherwise the outcome is unknown and the call raises
:class:`StorageError` rather than guess; a single-use challenge then fails closed. After a
retry, ``delete`` may report ``False`` and ``purge_expired`` undercount for rows the lost
attempt had removed.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Final, LiteralString, TypeAlias, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from custodes.errors import StorageError
from custodes.storage.base import VOLATILE_NAMESPACES
from custodes.storage.batch import Batch, Row
from custodes.storage.sql import (
    POSTGRES,
    POSTGRES_BATCH,
    SCHEMA_VERSION,
    Args,
    Result,
    SqlStore,
    statements,
)
from custodes.types.secret import Secret

# pg_advisory_xact_lock key serialising migrations per database: b"custodes" as an int64.
_MIGRATION_LOCK: Final = int.from_bytes(b"custodes", "big")

_CREATE_MIGRATIONS_TABLE: Final = """
    CREATE TABLE schema_migrations (
        version    integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""

# Keep a stronger server setting (remote_write, remote_apply); only "off" is raised.
_DURABLE_COMMITS: Final = (
    "SELECT set_config('synchronous_commit', 'on', false) "
    "WHERE current_setting('synchronous_commit') = 'off'"
)

_Conn: TypeAlias = psycopg.Connection[TupleRow]
_T = TypeVar("_T")


class _BatchRefused(Exception):
    """Internal: a key of the batch's inserts is live; rolls the transaction back."""


class _ConnectionLost(Exception):
    """Internal: the connection broke; ``sent`` says whether the statement had been sent."""

    def __init__(self, error: psycopg.Error, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


def _describe(params: Mapping[str, object]) -> str:
    """``user@host:port/dbname`` for messages; never the password or other options."""
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    user = f"{params['user']}@" if params.get("user") else ""
    dbname = params.get("dbname") or "(default database)"
    return f"{user}{host}:{port}/{dbname}"


def _looks_alive(conn: _Conn) -> bool:
    """Whether an idle pooled connection is still usable, without a round trip.

    An idle connection has nothing to read; a readable socket means the server sent an
    error and/or closed it (shutdown, restart, terminated backend).
    """
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


class _Pool:
    """At most ``size`` connections, each used by one caller at a time (thread safe)."""

    def __init__(self, connect: Callable[[], _Conn], size: int, wait_s: float) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._idle: list[_Conn] = []
        self._closed = False

    def acquire(self) -> _Conn:
        if not self._slots.acquire(timeout=self._wait_s):
            raise StorageError(f"no free PostgreSQL connection within {self._wait_s:g} s")
        try:
            while True:
                with self._lock:
                    if self._closed:
                        raise StorageError("the PostgreSQL store is closed")
                    conn = self._idle.pop() if self._idle else None
                if conn is None:
                    return self._connect()
                if _looks_alive(conn):
                    return conn
                conn.close()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: _Conn, *, reuse: bool) -> None:
        try:
            with self._lock:
                keep = (
                    reuse
                    and not self._closed
                    and not conn.closed
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()
        finally:
            self._slots.release()

    def drop_idle(self) -> None:
        """Close every idle connection (after one broke, the others likely did too)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.drop_idle()


class PostgresStore(SqlStore):
    _sql = statements(POSTGRES)

    def __init__(
        self,
        dsn: str,
        *,
        volatile_namespaces: frozenset[str] = VOLATILE_NAMESPACES,
        connect_timeout: int = 5,
        pool_size: int = 8,
        pool_wait_s: float = 30.0,
    ) -> None:
        if pool_size < 1 or connect_timeout < 1:
            raise StorageError("pool_size and connect_timeout must be at least 1")
        try:
            params = conninfo_to_dict(dsn)
            extra: dict[str, str | int | None] = {"connect_timeout": connect_timeout}
            if "application_name" not in params:
                extra["application_name"] = "custodes"
            conninfo = make_conninfo(dsn, **extra)
        except psycopg.Error:
            # libpq quotes the offending part of the string, which may be the password.
            raise StorageError(
                "invalid PostgreSQL DSN (not shown: it may hold a password)"
            ) from None
        self._conninfo = Secret(conninfo)
        self.where = _describe(params)
        self._volatile = volatile_namespaces
        self._pool = _Pool(self._connect, pool_size, pool_wait_s)
        try:
            conn = self._pool.acquire()
            reuse = False
            try:
                self._check_server(conn)
                self._migrate(conn)
                reuse = True
            except psycopg.Error as e:
                raise StorageError(f"cannot open PostgreSQL store {self.where}: {e}") from e
            finally:
                self._pool.release(conn, reuse=reuse)
        except BaseException:
            # A store that failed to open keeps no connection.
            self._pool.close()
            raise

    # --- connections and schema ----------------------------------------------------------

    def _connect(self) -> _Conn:
        try:
            conn: _Conn = psycopg.connect(self._conninfo.reveal(), autocommit=True)
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to PostgreSQL {self.where}: {e}") from e
        try:
            conn.execute(_DURABLE_COMMITS)
        except psycopg.Error as e:
            conn.close()
            raise StorageError(f"cannot set up a PostgreSQL connection {self.where}: {e}") from e
        return conn

    def _check_server(self, conn: _Conn) -> None:
        # Keys are text: in another server encoding some keys could not be stored at all.
        encoding = conn.info.parameter_status("server_encoding")
        if encoding != "UTF8":
            raise StorageError(
                f"PostgreSQL database {self.where} has encoding {encoding}; it must be UTF8"
            )

    def _migrate(self, conn: _Conn) -> None:
        with conn.transaction():
            # Held to the end of the transaction: concurrent openers wait, then see the
            # steps already applied.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            if row is not None and row[0]:
                row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
                current = int(row[0]) if row is not None and isinstance(row[0], int) else 0
            else:
                # Created only when missing: a role without CREATE can open a migrated database.
                conn.execute(_CREATE_MIGRATIONS_TABLE)
                current = 0
            if current > SCHEMA_VERSION:
                raise StorageError(
                    f"PostgreSQL database {self.where}: schema version {current} is newer "
                    f"than this custodes ({SCHEMA_VERSION}); upgrade custodes"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in self._sql.migrations[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    # --- running statements --------------------------------------------------------------

    def _run(
        self, sql: LiteralString, args: Args, *, volatile: bool = False, idempotent: bool = True
    ) -> Result:
        """One statement, retried once where that is safe; in a transaction of its own only
        where the commit is ``volatile`` (``SET LOCAL`` lasts one transaction)."""
        return self._retried(
            partial(self._execute, sql=sql, args=args),
            idempotent=idempotent,
            transaction=volatile,
            volatile=volatile,
            what="the write",
        )

    @staticmethod
    def _execute(conn: _Conn, *, sql: LiteralString, args: Args) -> Result:
        cur = conn.execute(sql, args)
        rows = cur.fetchall() if cur.description is not None else []
        return Result(rows, cur.rowcount)

    def _retried(
        self,
        work: Callable[[_Conn], _T],
        *,
        idempotent: bool,
        transaction: bool,
        volatile: bool,
        what: str,
    ) -> _T:
        """``work`` on a pooled connection, run again once on a fresh one if the connection
        was lost and running it twice cannot apply it twice: it is ``idempotent``, or nothing
        of it had been sent."""
        for attempt in (1, 2):
            try:
                return self._attempt(work, transaction=transaction, volatile=volatile)
            except _ConnectionLost as lost:
                if attempt == 1 and (idempotent or not lost.sent):
                    continue
                if lost.sent and not idempotent:
                    raise StorageError(
                        f"PostgreSQL store {self.where}: connection lost with {what} in "
                        f"flight; it may or may not have been applied: {lost.error}"
                    ) from lost.error
                raise StorageError(f"PostgreSQL store {self.where}: {lost.error}") from lost.error
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, work: Callable[[_Conn], _T], *, transaction: bool, volatile: bool) -> _T:
        """``work`` once, in a transaction of its own if ``transaction`` (else in autocommit),
        committing without waiting for the WAL flush if ``volatile``."""
        conn = self._pool.acquire()
        sent = False
        reuse = False
        try:
            if transaction:
                with conn.transaction():
                    if volatile:
                        conn.execute("SET LOCAL synchronous_commit = off")
                    sent = True
                    result = work(conn)
            else:
                sent = True
                result = work(conn)
            reuse = True
            return result
        except _BatchRefused:
            reuse = True  # rolled back by the transaction block, the connection is fine
            raise
        except psycopg.Error as e:
            if conn.broken or conn.closed:
                # Most likely the server restarted: the idle connections are dead as well.
                self._pool.drop_idle()
                raise _ConnectionLost(e, sent=sent) from e
            reuse = True
            raise StorageError(f"PostgreSQL store {self.where}: {e}") from e
        except UnicodeError as e:  # a key that is not valid Unicode (lone surrogate)
            reuse = True
            raise StorageError(f"PostgreSQL store {self.where}: {e}") from e
        finally:
            self._pool.release(conn, reuse=reuse)

    batches = True  # write_batch below (custodes.storage.batch)

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """One transaction, one durable commit (:mod:`custodes.storage.batch`), in three
        statements whatever the number of rows. Retried on a fresh connection only when the
        connection failed before anything was sent: otherwise the outcome is unknown."""

        def write(conn: _Conn) -> None:
            written = self._batch_rows(conn, POSTGRES_BATCH.insert, batch.inserts, now)
            if written != len(batch.inserts):
                raise _BatchRefused
            self._batch_rows(conn, POSTGRES_BATCH.upsert, batch.upserts, now)
            self._batch_rows(conn, POSTGRES_BATCH.insert, batch.if_absent, now)

        try:
            self._retried(write, idempotent=False, transaction=True, volatile=False, what="a batch")
        except _BatchRefused:
            return False
        return True

    @staticmethod
    def _batch_rows(conn: _Conn, sql: LiteralString, rows: Sequence[Row], now: float) -> int:
        if not rows:
            return 0
        cur = conn.execute(
            sql,
            (
                [r.namespace for r in rows],
                [r.key for r in rows],
                [r.value for r in rows],
                now,
            ),
        )
        return len(cur.fetchall())

    def close(self) -> None:
        self._pool.close()
