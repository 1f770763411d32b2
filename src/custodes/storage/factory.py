"""Opening the store that the configuration names (``storage.backend``)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from custodes.errors import ConfigError
from custodes.storage.base import Store

BACKENDS: Final = ("sqlite", "postgres")


def open_store(backend: str, *, sqlite_path: Path, dsn: str | None) -> Store:
    """The configured store, open: ``sqlite`` at ``sqlite_path``, or ``postgres`` at ``dsn``.

    Raises :class:`ConfigError` for an unknown backend or a missing DSN, and
    :class:`StorageError` when the store cannot be opened.
    """
    # Imported here so that each backend's driver is loaded only when it is used.
    if backend == "sqlite":
        from custodes.storage.sqlite import SqliteStore

        return SqliteStore(sqlite_path)
    if backend == "postgres":
        if not dsn:
            raise ConfigError(
                'storage.backend "postgres" needs storage.dsn (or CUSTODES_POSTGRES_DSN)'
            )
        from custodes.storage.postgres import PostgresStore

        return PostgresStore(dsn)
    raise ConfigError(
        f"storage.backend {backend!r} is not supported (supported: {', '.join(BACKENDS)})"
    )
