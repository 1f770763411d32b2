"""Opening the configured store (the PostgreSQL case runs in test_postgres_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import ConfigError
from custodes.storage.factory import BACKENDS, open_store
from custodes.storage.sqlite import SqliteStore


def test_sqlite_backend_opens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "custodes.db"
    store = open_store("sqlite", sqlite_path=path, dsn="ignored")
    try:
        assert isinstance(store, SqliteStore)
        store.set("repository", "k", b"v")
    finally:
        store.close()
    assert path.is_file()


@pytest.mark.parametrize("dsn", [None, ""])
def test_postgres_backend_needs_a_dsn(tmp_path: Path, dsn: str | None) -> None:
    with pytest.raises(ConfigError, match="dsn"):
        open_store("postgres", sqlite_path=tmp_path / "s.db", dsn=dsn)
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("backend", ["", "SQLite", "postgresql", "redis"])
def test_unknown_backend_is_a_config_error(tmp_path: Path, backend: str) -> None:
    with pytest.raises(ConfigError, match="not supported"):
        open_store(backend, sqlite_path=tmp_path / "s.db", dsn=None)


def test_backends_lists_what_open_store_accepts() -> None:
    assert BACKENDS == ("sqlite", "postgres")
