"""A bounded, locked mapping for caches that worker threads share.

The broker runs verifiers and policy analysis in a thread pool, so a cache that lives on a
verifier instance is read and written concurrently. A plain ``dict`` with "evict the first key
when full" is a check-then-act race: two threads at the cap both pick the same oldest key and
the second ``pop`` raises ``KeyError`` (or the iteration sees the dict change size). Every
read-modify-write here happens under one lock; computing a value to cache happens outside it
(two threads may compute the same value; the last one stored wins, both are equal).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """At most ``capacity`` entries; the least recently used one is evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a cache needs a capacity of at least 1, not {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def get(self, key: K) -> V | None:
        """The cached value, or None; a hit makes the entry the most recently used."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Store ``value``, evicting least recently used entries beyond the capacity."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def values(self) -> list[V]:
        """A snapshot of the values, least recently used first."""
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
