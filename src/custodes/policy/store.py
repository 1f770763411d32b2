"""Stored Rego policies: one namespace of the key-value store, ids to policy text, versioned.

Every upload is a new version (``<id>@<n>``, n from 1) and becomes the active one; the active
text is also kept under ``<id>`` itself, so reading the active policy is one lookup (and the
store holds upstream's layout). Any earlier version can be activated again (rollback).

A policy is compiled before it is stored, so a stored policy always compiles. Shipped defaults
are written only when absent, so a policy the admin uploaded survives restarts.
"""

from __future__ import annotations

import re
import threading
from typing import Final

from custodes._internal.clock import Clock
from custodes.errors import NotFound, PolicyError, StorageError
from custodes.policy.engine import RegoEngine
from custodes.storage.base import Store

_POLICY_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


_VERSION_RETRIES: Final = 8
# Policy texts kept per store, by (id, version): a few ids, each with its active version.
_TEXT_CACHE: Final = 16


def _version_key(policy_id: str, version: int) -> str:
    return f"{policy_id}@{version:06d}"


def _check_id(policy_id: object) -> None:
    if not isinstance(policy_id, str) or not _POLICY_ID.fullmatch(policy_id):
        raise PolicyError(f"invalid policy id {policy_id!r}: expected [A-Za-z0-9._-]{{1,64}}")


class PolicyStore:
    def __init__(self, store: Store, namespace: str, clock: Clock) -> None:
        self._store = store
        self._ns = namespace
        self._clock = clock
        self._texts: dict[tuple[str, int], str] = {}
        self._texts_lock = threading.Lock()
        # Uploads in this process take turns choosing the next version number, so they never
        # race each other; the insert-if-absent below settles races with other processes.
        self._write_lock = threading.Lock()

    def set(self, policy_id: str, text: str) -> int:
        """Store a new version and activate it; returns its number. ``PolicyError`` for a
        bad id or a policy that does not compile."""
        _check_id(policy_id)
        RegoEngine.check(text)
        now = self._clock.now()
        with self._write_lock:
            for _ in range(_VERSION_RETRIES):
                version = self._latest(policy_id) + 1
                if self._store.insert(
                    self._ns, _version_key(policy_id, version), text.encode(), now=now
                ):
                    self._activate(policy_id, version, text)
                    return version
        # Not the client's mistake: a 503 the client may retry, not a 400.
        raise StorageError(f"policy {policy_id!r} is being changed concurrently; retry")

    def _latest(self, policy_id: str) -> int:
        prefix = policy_id + "@"
        versions = [
            int(k[len(prefix) :])
            for k in self._store.list(self._ns, now=self._clock.now())
            if k.startswith(prefix)
        ]
        return max(versions, default=0)

    def _activate(self, policy_id: str, version: int, text: str) -> None:
        # The pointer decides what is active; the copy under <id> keeps upstream's layout.
        self._store.set(self._ns, policy_id + "#active", str(version).encode())
        self._store.set(self._ns, policy_id, text.encode("utf-8"))

    def versions(self, policy_id: str) -> list[tuple[int, bool]]:
        """``(version, active)`` pairs, oldest first."""
        _check_id(policy_id)
        prefix = policy_id + "@"
        active = self.active_version(policy_id)
        numbers = sorted(
            int(k[len(prefix) :])
            for k in self._store.list(self._ns, now=self._clock.now())
            if k.startswith(prefix)
        )
        return [(n, n == active) for n in numbers]

    def active_version(self, policy_id: str) -> int | None:
        raw = self._store.get(self._ns, policy_id + "#active", now=self._clock.now())
        return int(raw) if raw is not None else None

    def get_version(self, policy_id: str, version: int) -> str | None:
        _check_id(policy_id)
        raw = self._store.get(self._ns, _version_key(policy_id, version), now=self._clock.now())
        return raw.decode("utf-8") if raw is not None else None

    def activate(self, policy_id: str, version: int) -> None:
        """Make an earlier (or later) stored version the active one."""
        text = self.get_version(policy_id, version)
        if text is None:
            raise NotFound(f"policy {policy_id!r} has no version {version}")
        self._activate(policy_id, version, text)

    def get(self, policy_id: str) -> str | None:
        """The active version's text."""
        return self.active(policy_id)[1]

    def active(self, policy_id: str) -> tuple[int | None, str | None]:
        """(version, text) of the active policy, read consistently: the active pointer is one
        write and versions never change, so concurrent activations can never mix one version's
        number with another's text. ``<id>`` itself (upstream's layout) is read only for stores
        written before versions existed (version ``None``)."""
        _check_id(policy_id)
        version = self.active_version(policy_id)
        if version is not None:
            # Versions never change: the pointer is the one read a request needs (a change made
            # by any replica is seen at once); the text is read once per version.
            key = (policy_id, version)
            cached = self._texts.get(key)
            if cached is None:
                cached = self.get_version(policy_id, version)
                if cached is not None:
                    with self._texts_lock:
                        if len(self._texts) >= _TEXT_CACHE:
                            self._texts.pop(next(iter(self._texts)))
                        self._texts[key] = cached
            return version, cached
        raw = self._store.get(self._ns, policy_id, now=self._clock.now())
        if raw is None:
            return None, None
        try:
            return None, raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise StorageError(f"stored policy {policy_id!r} is not UTF-8") from e

    def list(self) -> list[str]:
        return [
            k
            for k in self._store.list(self._ns, now=self._clock.now())
            if "@" not in k and "#" not in k
        ]

    def delete(self, policy_id: str) -> bool:
        """Remove the policy and all its versions."""
        _check_id(policy_id)
        for version, _ in self.versions(policy_id):
            self._store.delete(self._ns, _version_key(policy_id, version))
        self._store.delete(self._ns, policy_id + "#active")
        return self._store.delete(self._ns, policy_id)

    def ensure_default(self, policy_id: str, text: str) -> None:
        """Store ``text`` under ``policy_id`` only if nothing is stored there yet."""
        _check_id(policy_id)
        RegoEngine.check(text)
        if self._store.get(self._ns, policy_id, now=self._clock.now()) is None:
            self.set(policy_id, text)
