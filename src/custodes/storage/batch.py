"""Several writes in one transaction (one durable commit): what the audit log's group commit
needs from a store.

A store that implements :class:`BatchStore` commits a :class:`Batch` atomically: every row
of ``inserts`` is created (none of their keys is live) or nothing at all is written, and the
call returns ``False``. ``upserts`` are written unconditionally and ``if_absent`` rows only
where their key is not live, both in the same transaction. The commit is durable when the
call returns unless every row is in a volatile namespace.

Stores without it (the in-memory store) are used one ``insert`` at a time.

:func:`batch_store` is the one place that decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Row:
    namespace: str
    key: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    inserts: tuple[Row, ...]
    upserts: tuple[Row, ...] = ()
    if_absent: tuple[Row, ...] = ()

    def rows(self) -> tuple[Row, ...]:
        return self.inserts + self.upserts + self.if_absent


@runtime_checkable
class BatchStore(Protocol):
    @property
    def batches(self) -> bool:
        """Whether :meth:`write_batch` works (a wrapper depends on the store it wraps)."""
        ...

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """Commit ``batch`` in one transaction; ``False`` (nothing written) if a key of
        ``batch.inserts`` is live."""
        ...


def batch_store(store: object) -> BatchStore | None:
    """``store`` if it can commit batches, else ``None``."""
    return store if isinstance(store, BatchStore) and store.batches else None
