"""The SQL of the two database stores, written once: the schema's migration steps and each
statement of the :class:`~custodes.storage.base.Store` interface, rendered per dialect.

Statements are written with ``?`` for a parameter and rendered with the dialect's own
placeholder (``?`` for sqlite3, ``%s`` for psycopg). Where the dialects differ, the difference
is named here with the reason beside it: a field of :class:`Dialect` (column types, table
options), or a statement only one of them runs (:data:`POSTGRES_BATCH`). :class:`SqlStore`
implements the Store interface once over them.

The rest of each backend is connection handling, which is all driver-specific: how a write
transaction takes its lock (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL the row locks each
statement takes, and an advisory lock for migrations), how a commit skips waiting for the
disk (``PRAGMA synchronous`` against ``SET LOCAL synchronous_commit``), where the schema
version is recorded (``PRAGMA user_version`` against the ``schema_migrations`` table), and
which failures may be retried.

Expiry is the same everywhere: a row is live while ``expires_at`` is NULL or later than the
caller's ``now``; an expired row is invisible and replaced by an insert of its key.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Final, LiteralString, TypeAlias

from custodes.storage.base import is_volatile


@dataclass(frozen=True, slots=True)
class Dialect:
    # The driver's parameter style: sqlite3 takes qmark, psycopg takes format (%s).
    placeholder: LiteralString
    # Keys are compared and ordered by code point, as Python's sorted() does (list() returns
    # them sorted). SQLite's default BINARY collation already does; PostgreSQL's default is
    # the database's locale, so the column names the "C" collation.
    key_type: LiteralString
    # SQLite's storage classes against PostgreSQL's types of the same meaning.
    bytes_type: LiteralString
    seconds_type: LiteralString
    # SQLite keeps a WITHOUT ROWID table in its primary key's b-tree (one lookup, no hidden
    # rowid); PostgreSQL has no such option (a heap and an index, always).
    table_options: LiteralString


SQLITE: Final = Dialect(
    placeholder="?",
    key_type="TEXT",
    bytes_type="BLOB",
    seconds_type="REAL",
    table_options=" WITHOUT ROWID",
)
POSTGRES: Final = Dialect(
    placeholder="%s",
    key_type='text COLLATE "C"',
    bytes_type="bytea",
    seconds_type="double precision",
    table_options="",
)

# Migration N is _MIGRATIONS[N - 1], applied once per database (in one transaction, under a
# lock that makes stores opening together take turns). Append only: a database records the
# steps it has, so a released step never changes. {key}, {bytes}, {seconds} and {options}
# are the dialect's column types and table options.
_MIGRATIONS: Final[tuple[tuple[LiteralString, ...], ...]] = (
    (
        "CREATE TABLE kv ("
        "namespace {key} NOT NULL, "
        "key {key} NOT NULL, "
        "value {bytes} NOT NULL, "
        "expires_at {seconds}, "
        "PRIMARY KEY (namespace, key)"
        "){options}",
        "CREATE INDEX kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_INTO: Final = "INSERT INTO kv (namespace, key, value, expires_at) "
_ONE_ROW: Final = "VALUES (?, ?, ?, ?) "
_REPLACE: Final = (
    "ON CONFLICT (namespace, key) DO UPDATE "
    "SET value = excluded.value, expires_at = excluded.expires_at"
)
# Create only: an expired row with the same key may linger until purged; it is replaced.
_IF_EXPIRED: Final = " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?"
# A batch's rows as three arrays (namespaces, keys, values), stored without expiry.
_ROWS: Final = "SELECT n, k, v, NULL FROM unnest(?::text[], ?::text[], ?::bytea[]) AS b(n, k, v) "


@dataclass(frozen=True, slots=True)
class Statements:
    """One dialect's statements; parameters in the order each line names."""

    migrations: tuple[tuple[LiteralString, ...], ...]
    get: LiteralString  # namespace, key, now -> value
    upsert: LiteralString  # namespace, key, value, expires_at
    insert: LiteralString  # namespace, key, value, expires_at, now; rowcount 1 if written
    compare_and_swap: LiteralString  # new, namespace, key, expected, now; rowcount 1 if swapped
    delete: LiteralString  # namespace, key
    list_keys: LiteralString  # namespace, now -> keys, sorted
    purge_expired: LiteralString  # now


@dataclass(frozen=True, slots=True)
class BatchStatements:
    """A batch's rows in one statement per kind of write: parameters namespaces[], keys[],
    values[], now; one row returned per row written. ``upsert`` does not use ``now`` but takes
    it, so that both have one calling convention."""

    insert: LiteralString
    upsert: LiteralString


def _render(template: LiteralString, dialect: Dialect) -> LiteralString:
    return template.replace("?", dialect.placeholder)


def statements(dialect: Dialect) -> Statements:
    return Statements(
        migrations=tuple(
            tuple(
                statement.format(
                    key=dialect.key_type,
                    bytes=dialect.bytes_type,
                    seconds=dialect.seconds_type,
                    options=dialect.table_options,
                )
                for statement in step
            )
            for step in _MIGRATIONS
        ),
        get=_render(
            "SELECT value FROM kv WHERE namespace = ? AND key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            dialect,
        ),
        upsert=_render(_INTO + _ONE_ROW + _REPLACE, dialect),
        insert=_render(_INTO + _ONE_ROW + _REPLACE + _IF_EXPIRED, dialect),
        compare_and_swap=_render(
            "UPDATE kv SET value = ? WHERE namespace = ? AND key = ? AND value = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            dialect,
        ),
        delete=_render("DELETE FROM kv WHERE namespace = ? AND key = ?", dialect),
        list_keys=_render(
            "SELECT key FROM kv WHERE namespace = ? "
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            dialect,
        ),
        purge_expired=_render(
            "DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", dialect
        ),
    )


# Only PostgreSQL writes a batch as arrays: each statement is a round trip to the server, so
# a batch costs three whatever its size. SQLite runs in the process (a statement costs no
# round trip) and has no array type: it runs the one-row insert and upsert once per row,
# inside one transaction.
POSTGRES_BATCH: Final = BatchStatements(
    insert=_render(_INTO + _ROWS + _REPLACE + _IF_EXPIRED + " RETURNING 1", POSTGRES),
    upsert=_render(_INTO + _ROWS + "WHERE ? IS NOT NULL " + _REPLACE + " RETURNING 1", POSTGRES),
)


Args: TypeAlias = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[tuple[Any, ...]]
    rowcount: int


class SqlStore(ABC):
    """The :class:`~custodes.storage.base.Store` interface over one dialect's statements: a
    backend names its statements, the namespaces whose commits need not wait for the disk
    (``_volatile``), and runs one statement (:meth:`_run`); it adds ``close``."""

    _sql: ClassVar[Statements]
    _volatile: frozenset[str]

    @abstractmethod
    def _run(
        self, sql: LiteralString, args: Args, *, volatile: bool = False, idempotent: bool = True
    ) -> Result:
        """``sql`` with ``args``, committed when it returns; driver errors become
        :class:`~custodes.errors.StorageError`. ``volatile``: the commit need not wait for
        the disk. ``idempotent``: running the statement twice has the effect of running it
        once (a backend that lost its connection may then run it again)."""

    def _write(self, sql: LiteralString, args: Args, namespace: str, *, idempotent: bool) -> int:
        """A write to ``namespace``; how many rows it changed."""
        # Per tenant ("t/<tenant>/<base>") and per stream: is_volatile reads the namespace's
        # first and last path components.
        volatile = is_volatile(namespace, self._volatile)
        return self._run(sql, args, volatile=volatile, idempotent=idempotent).rowcount

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        rows = self._run(self._sql.get, (namespace, key, now)).rows
        return bytes(rows[0][0]) if rows else None

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        args = (namespace, key, value, expires_at)
        self._write(self._sql.upsert, args, namespace, idempotent=True)

    def insert(
        self, namespace: str, key: str, value: bytes, *, now: float, expires_at: float | None = None
    ) -> bool:
        args = (namespace, key, value, expires_at, now)
        return self._write(self._sql.insert, args, namespace, idempotent=False) == 1

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        args = (new, namespace, key, expected, now)
        return self._write(self._sql.compare_and_swap, args, namespace, idempotent=False) == 1

    def delete(self, namespace: str, key: str) -> bool:
        return self._write(self._sql.delete, (namespace, key), namespace, idempotent=True) == 1

    def purge_expired(self, now: float) -> int:
        return self._run(self._sql.purge_expired, (now,)).rowcount

    def list(self, namespace: str, *, now: float) -> list[str]:
        rows = self._run(self._sql.list_keys, (namespace, now)).rows
        return [str(row[0]) for row in rows]
