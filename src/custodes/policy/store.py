"""Stored Rego policies: one namespace of the key-value store, ids to policy text.

A policy is compiled before it is stored, so a stored policy always compiles. Shipped defaults
are written only when absent, so a policy the admin uploaded survives restarts.
"""

from __future__ import annotations

import re
from typing import Final

from custodes._internal.clock import Clock
from custodes.errors import PolicyError, StorageError
from custodes.policy.engine import RegoEngine
from custodes.storage.base import Store

_POLICY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _check_id(policy_id: object) -> None:
    if not isinstance(policy_id, str) or not _POLICY_ID.fullmatch(policy_id):
        raise PolicyError(f"invalid policy id {policy_id!r}: expected [A-Za-z0-9._-]{{1,64}}")


class PolicyStore:
    def __init__(self, store: Store, namespace: str, clock: Clock) -> None:
        self._store = store
        self._ns = namespace
        self._clock = clock

    def set(self, policy_id: str, text: str) -> None:
        """Create or replace; ``PolicyError`` for a bad id or a policy that does not compile."""
        _check_id(policy_id)
        RegoEngine.check(text)
        self._store.set(self._ns, policy_id, text.encode("utf-8"))

    def get(self, policy_id: str) -> str | None:
        _check_id(policy_id)
        raw = self._store.get(self._ns, policy_id, now=self._clock.now())
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StorageError(f"stored policy {policy_id!r} is not UTF-8") from e

    def list(self) -> list[str]:
        return self._store.list(self._ns, now=self._clock.now())

    def delete(self, policy_id: str) -> bool:
        _check_id(policy_id)
        return self._store.delete(self._ns, policy_id)

    def ensure_default(self, policy_id: str, text: str) -> None:
        """Store ``text`` under ``policy_id`` only if nothing is stored there yet."""
        _check_id(policy_id)
        RegoEngine.check(text)
        self._store.insert(self._ns, policy_id, text.encode("utf-8"), now=self._clock.now())
