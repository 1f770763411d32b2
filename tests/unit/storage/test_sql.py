"""The statement table shared by the SQLite and PostgreSQL stores (``custodes.storage.sql``).

What each statement does is checked against both real databases by the Store contract
(``test_store_contract.py``) and the batch contract (``tests/unit/audit/test_audit_writer.py``);
this checks that the two backends run the same text, in each driver's parameter style.
"""

from __future__ import annotations

import dataclasses

import pytest

from custodes.storage.postgres import PostgresStore
from custodes.storage.sql import (
    POSTGRES,
    POSTGRES_BATCH,
    SCHEMA_VERSION,
    SQLITE,
    Statements,
    statements,
)
from custodes.storage.sqlite import SqliteStore

_STATEMENTS = [f.name for f in dataclasses.fields(Statements) if f.name != "migrations"]


@pytest.mark.parametrize("name", _STATEMENTS)
def test_both_dialects_run_one_statement_in_their_own_parameter_style(name: str) -> None:
    sqlite = getattr(statements(SQLITE), name)
    postgres = getattr(statements(POSTGRES), name)
    assert "%" not in sqlite  # psycopg would read a % as the start of a placeholder
    assert "?" not in postgres
    assert sqlite.count("?") >= 1
    assert sqlite.replace("?", "%s") == postgres


def test_the_backends_use_the_shared_statements() -> None:
    assert SqliteStore._sql == statements(SQLITE)
    assert PostgresStore._sql == statements(POSTGRES)


def test_the_schema_differs_only_in_the_dialects_types() -> None:
    sqlite = statements(SQLITE).migrations
    postgres = statements(POSTGRES).migrations
    assert len(sqlite) == len(postgres) == SCHEMA_VERSION
    for dialect, steps in ((SQLITE, sqlite), (POSTGRES, postgres)):
        create_table = steps[0][0]
        assert f"namespace {dialect.key_type} NOT NULL" in create_table
        assert f"value {dialect.bytes_type} NOT NULL" in create_table
        assert create_table.endswith(")" + dialect.table_options)
        assert "{" not in create_table  # every type was filled in
    assert sqlite[0][1] == postgres[0][1]  # the expiry index


def test_batches_as_arrays_are_postgres_only_and_in_its_parameter_style() -> None:
    for sql in (POSTGRES_BATCH.insert, POSTGRES_BATCH.upsert):
        assert "?" not in sql
        assert sql.count("%s") == 4  # namespaces, keys, values, now
        assert sql.endswith(" RETURNING 1")
    # The batch insert refuses a live key exactly as the one-row insert does.
    insert = statements(POSTGRES).insert
    condition = insert[insert.index("ON CONFLICT") :]
    assert POSTGRES_BATCH.insert.endswith(condition + " RETURNING 1")
