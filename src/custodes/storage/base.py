"""The storage interface: namespaced keys with byte values, optional expiry, and an atomic
compare-and-swap (what single-use challenges need, also across replicas later).

The namespaces the broker uses are named here, in one place.
"""

from __future__ import annotations

from typing import Final, Protocol

NS_RESOURCES: Final = "repository"
NS_RESOURCE_POLICY: Final = "resource_policy"
NS_ATTESTATION_POLICY: Final = "attestation_policy"
NS_REFERENCE_VALUES: Final = "reference_value"
NS_SESSIONS: Final = "kbs_protocol_session"

# Writes to these commit without waiting for the disk: sessions (a lost one only makes its
# guest run the handshake again) and the audit log's derived data (the head hint and the
# correlation-id index, both rebuilt from the chain itself). Matched on the first or the last
# component of a namespace, so every tenant's sessions and every stream's index count.
VOLATILE_NAMESPACES: Final = frozenset({NS_SESSIONS, "audit-head", "audit-index"})


def is_volatile(namespace: str, volatile: frozenset[str]) -> bool:
    parts = namespace.split("/")
    return parts[-1] in volatile or parts[0] in volatile


NAMESPACES: Final = (
    NS_RESOURCES,
    NS_RESOURCE_POLICY,
    NS_ATTESTATION_POLICY,
    NS_REFERENCE_VALUES,
    NS_SESSIONS,
)


class Store(Protocol):
    """A durable key-value store. Every write is durable when the call returns.

    ``expires_at`` (Unix seconds) makes an entry invisible to ``get``/``list`` from that time
    on; expired entries are removed by :meth:`purge_expired`.
    """

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None: ...

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        """Create or overwrite."""
        ...

    def insert(
        self, namespace: str, key: str, value: bytes, *, now: float, expires_at: float | None = None
    ) -> bool:
        """Create only; ``False`` (and nothing written) if the key exists and is not expired."""
        ...

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        """Replace the value only if it is still ``expected`` and not expired, atomically."""
        ...

    def delete(self, namespace: str, key: str) -> bool:
        """``True`` if something was deleted."""
        ...

    def list(self, namespace: str, *, now: float) -> list[str]:
        """Live keys of a namespace, sorted."""
        ...

    def purge_expired(self, now: float) -> int: ...

    def close(self) -> None: ...
