"""An in-memory store with the same semantics as :class:`SqliteStore` (unit tests, and the
floor of the handshake benchmark). Nothing survives the process."""

from __future__ import annotations

import threading


class MemoryStore:
    def __init__(self) -> None:
        self._data: dict[tuple[str, str], tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _live(entry: tuple[bytes, float | None], now: float) -> bool:
        return entry[1] is None or entry[1] > now

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        entry = self._data.get((namespace, key))
        return entry[0] if entry is not None and self._live(entry, now) else None

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        with self._lock:
            self._data[(namespace, key)] = (value, expires_at)

    def insert(
        self, namespace: str, key: str, value: bytes, *, now: float, expires_at: float | None = None
    ) -> bool:
        with self._lock:
            entry = self._data.get((namespace, key))
            if entry is not None and self._live(entry, now):
                return False
            self._data[(namespace, key)] = (value, expires_at)
            return True

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        with self._lock:
            entry = self._data.get((namespace, key))
            if entry is None or not self._live(entry, now) or entry[0] != expected:
                return False
            self._data[(namespace, key)] = (new, entry[1])
            return True

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            return self._data.pop((namespace, key), None) is not None

    def list(self, namespace: str, *, now: float) -> list[str]:
        # Under the lock: iterating while another thread writes would raise RuntimeError.
        with self._lock:
            return sorted(
                k for (ns, k), e in self._data.items() if ns == namespace and self._live(e, now)
            )

    def purge_expired(self, now: float) -> int:
        with self._lock:
            dead = [k for k, e in self._data.items() if not self._live(e, now)]
            for k in dead:
                del self._data[k]
            return len(dead)

    def close(self) -> None:
        self._data.clear()
