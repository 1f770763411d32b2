"""PostgreSQL store (scale-out): several broker replicas share one database.

Same semantics as :class:`~custodes.storage.sqlite.SqliteStore`: one ``kv`` table keyed by
(namespace, key), byte values, optional expiry, an atomic insert and compare-and-swap. Each
operation is one statement, so PostgreSQL's row locks make ``insert`` and
``compare_and_swap`` atomic across connections, processes and replicas.

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
from dataclasses import dataclass
from typing import Final, LiteralString, TypeAlias

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from custodes.errors import StorageError
from custodes.storage.base import VOLATILE_NAMESPACES, is_volatile
from custodes.storage.batch import Batch, Row
from custodes.types.secret import Secret

# Migration N is _MIGRATIONS[N - 1]. Append only: a released step never changes.
_MIGRATIONS: Final[tuple[tuple[LiteralString, ...], ...]] = (
    (
        """
        CREATE TABLE kv (
            namespace  text COLLATE "C" NOT NULL,
            key        text COLLATE "C" NOT NULL,
            value      bytea NOT NULL,
            expires_at double precision,
            PRIMARY KEY (namespace, key)
        )
        """,
        "CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

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

# A batch's rows as arrays: one statement per kind of write, whatever the batch size. The
# last parameter (now) is unused by the upsert but keeps one calling convention.
_BATCH_INSERT: Final = (
    "INSERT INTO kv (namespace, key, value, expires_at) "
    "SELECT n, k, v, NULL FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS b(n, k, v) "
    "ON CONFLICT (namespace, key) DO UPDATE "
    "SET value = excluded.value, expires_at = excluded.expires_at "
    "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= %s RETURNING 1"
)
_BATCH_UPSERT: Final = (
    "INSERT INTO kv (namespace, key, value, expires_at) "
    "SELECT n, k, v, NULL FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS b(n, k, v) "
    "WHERE %s IS NOT NULL "
    "ON CONFLICT (namespace, key) DO UPDATE "
    "SET value = excluded.value, expires_at = excluded.expires_at RETURNING 1"
)


class _BatchRefused(Exception):
    """Internal: a key of the batch's inserts is live; rolls the transaction back."""


@dataclass(frozen=True, slots=True)
class _Result:
    rows: list[TupleRow]
    rowcount: int


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


class PostgresStore:
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
                for statement in _MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    # --- running statements --------------------------------------------------------------

    def _run(
        self,
        sql: LiteralString,
        args: Sequence[object],
        *,
        namespace: str | None = None,
        idempotent: bool = True,
    ) -> _Result:
        """One statement in its own transaction, retried once where that is safe."""
        for attempt in (1, 2):
            try:
                return self._attempt(sql, args, namespace)
            except _ConnectionLost as lost:
                if attempt == 1 and (idempotent or not lost.sent):
                    continue
                if lost.sent and not idempotent:
                    raise StorageError(
                        f"PostgreSQL store {self.where}: connection lost with the write in "
                        f"flight; it may or may not have been applied: {lost.error}"
                    ) from lost.error
                raise StorageError(f"PostgreSQL store {self.where}: {lost.error}") from lost.error
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, sql: LiteralString, args: Sequence[object], namespace: str | None
    ) -> _Result:
        conn = self._pool.acquire()
        sent = False
        reuse = False
        try:
            # Per tenant ("t/<tenant>/<base>"): the last path component is what counts.
            if namespace is not None and is_volatile(namespace, self._volatile):
                with conn.transaction():
                    conn.execute("SET LOCAL synchronous_commit = off")
                    sent = True
                    result = self._execute(conn, sql, args)
            else:
                sent = True
                result = self._execute(conn, sql, args)
            reuse = True
            return result
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

    @staticmethod
    def _execute(conn: _Conn, sql: LiteralString, args: Sequence[object]) -> _Result:
        cur = conn.execute(sql, args)
        rows = cur.fetchall() if cur.description is not None else []
        return _Result(rows, cur.rowcount)

    # --- the Store interface -------------------------------------------------------------

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        result = self._run(
            "SELECT value FROM kv WHERE namespace = %s AND key = %s "
            "AND (expires_at IS NULL OR expires_at > %s)",
            (namespace, key, now),
        )
        return None if not result.rows else bytes(result.rows[0][0])

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        self._run(
            "INSERT INTO kv (namespace, key, value, expires_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (namespace, key) DO UPDATE "
            "SET value = excluded.value, expires_at = excluded.expires_at",
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
        result = self._run(
            "INSERT INTO kv (namespace, key, value, expires_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (namespace, key) DO UPDATE "
            "SET value = excluded.value, expires_at = excluded.expires_at "
            "WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= %s",
            (namespace, key, value, expires_at, now),
            namespace=namespace,
            idempotent=False,
        )
        return result.rowcount == 1

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        result = self._run(
            "UPDATE kv SET value = %s WHERE namespace = %s AND key = %s AND value = %s "
            "AND (expires_at IS NULL OR expires_at > %s)",
            (new, namespace, key, expected, now),
            namespace=namespace,
            idempotent=False,
        )
        return result.rowcount == 1

    def delete(self, namespace: str, key: str) -> bool:
        result = self._run(
            "DELETE FROM kv WHERE namespace = %s AND key = %s",
            (namespace, key),
            namespace=namespace,
        )
        return result.rowcount == 1

    def list(self, namespace: str, *, now: float) -> list[str]:
        # The key column's "C" collation orders by code point, as Python's sorted() does.
        result = self._run(
            "SELECT key FROM kv WHERE namespace = %s "
            "AND (expires_at IS NULL OR expires_at > %s) ORDER BY key",
            (namespace, now),
        )
        return [str(row[0]) for row in result.rows]

    def purge_expired(self, now: float) -> int:
        result = self._run(
            "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= %s", (now,)
        )
        return result.rowcount

    batches = True  # write_batch below (custodes.storage.batch)

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """One transaction, one durable commit (:mod:`custodes.storage.batch`), in three
        statements whatever the number of rows. Retried on a fresh connection only when the
        connection failed before anything was sent: otherwise the outcome is unknown."""
        for attempt in (1, 2):
            conn = self._pool.acquire()
            sent = False
            reuse = False
            try:
                with conn.transaction():
                    sent = True
                    written = self._batch_rows(conn, _BATCH_INSERT, batch.inserts, now)
                    if written != len(batch.inserts):
                        raise _BatchRefused
                    self._batch_rows(conn, _BATCH_UPSERT, batch.upserts, now)
                    self._batch_rows(conn, _BATCH_INSERT, batch.if_absent, now)
                reuse = True
                return True
            except _BatchRefused:
                reuse = True
                return False
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    self._pool.drop_idle()
                    if attempt == 1 and not sent:
                        continue
                    raise StorageError(
                        f"PostgreSQL store {self.where}: connection lost with a batch in "
                        f"flight; it may or may not have been applied: {e}"
                    ) from e
                reuse = True
                raise StorageError(f"PostgreSQL store {self.where}: {e}") from e
            except UnicodeError as e:
                reuse = True
                raise StorageError(f"PostgreSQL store {self.where}: {e}") from e
            finally:
                self._pool.release(conn, reuse=reuse)
        raise AssertionError("unreachable")  # pragma: no cover

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
