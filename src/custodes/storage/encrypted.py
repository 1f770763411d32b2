"""Encryption at rest: a :class:`~custodes.storage.base.Store` that wraps another one and
keeps the values of chosen namespaces as AES-256-GCM ciphertext under per-tenant data keys.

Keys
    Each tenant (``tenant_of(namespace)``) has one data key (DEK): 32 random bytes, created on
    the tenant's first encrypted write and stored in the inner store, in the reserved namespace
    :data:`NS_DATA_KEYS` under the tenant id, *wrapped* by the :class:`MasterKey`, which the
    inner store never sees. Two processes creating the same tenant's DEK race on
    ``insert``; the loser drops its key and uses the winner's. Unwrapped DEKs are cached in
    memory (in :class:`~custodes.types.secret.Secret`) for the life of this object.

Wrapped DEK record (73 bytes)::

    record version (1) = 1 | DEK version (4, big-endian) = 1 | master key id (8)
    | nonce (12) | AES-256-GCM(master key, DEK) (32) | tag (16)

    AAD = "custodes/data-key/v1" NUL | the first 13 bytes | u32 len | tenant id (UTF-8)

AES-GCM rather than AES-KW (RFC 3394): the AAD binds the wrapped key to its tenant, so a
record copied to another tenant's slot does not unwrap, and one primitive serves keys and
values. The master key id (a PRF of the master key) tells a wrong master key apart from a
damaged record. Random 96-bit nonces are safe here: a master key wraps one key per tenant.

Value ciphertext (at least 33 bytes)::

    format version (1) = 1 | DEK version (4, big-endian) | nonce (12, random per write)
    | AES-256-GCM(DEK, value) | tag (16)

    AAD = the first 5 bytes | u32 len | tenant | u32 len | namespace | u32 len | key
          (strings in UTF-8, lengths big-endian)

so a ciphertext moved to another key, namespace or tenant fails to decrypt.

Compare-and-swap
    Ciphertexts are randomised, so the caller's plaintext ``expected`` cannot be compared by
    the inner store. :meth:`EncryptedStore.compare_and_swap` reads the current ciphertext,
    decrypts it, compares the plaintext with ``expected`` in constant time, encrypts ``new``
    and calls the inner ``compare_and_swap`` with the *exact ciphertext it read* as the
    expected value. That keeps it atomic: if anyone wrote in between, the stored bytes
    differ and the inner swap refuses.

Namespaces where ``encrypted(namespace)`` is false pass through unchanged. Expiry times,
namespaces and keys are stored in the clear (see ``docs/encryption-at-rest.md``).

Rotation is not implemented. Master key rotation would re-wrap every record of
:data:`NS_DATA_KEYS` under the new key (a compare-and-swap per record; values untouched).
DEK rotation would add a record per DEK version and re-encrypt values lazily; the DEK version
in every ciphertext exists for that.
"""

from __future__ import annotations

import hmac
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custodes._internal.clock import Clock
from custodes.errors import StorageError
from custodes.storage.base import Store
from custodes.storage.batch import Batch, Row, batch_store
from custodes.storage.masterkey import KEY_ID_SIZE, KEY_SIZE, NONCE_SIZE, MasterKey
from custodes.types.secret import Secret

NS_DATA_KEYS: Final = "_data_keys"

FORMAT_VERSION: Final = 1
_DEK_RECORD_VERSION: Final = 1
# The version new DEKs get; the only one until DEK rotation exists.
_CURRENT_DEK_VERSION: Final = 1
_TAG_SIZE: Final = 16

_VALUE_HEADER: Final = struct.Struct(">BI")  # format version, DEK version
_DEK_HEADER: Final = struct.Struct(f">BI{KEY_ID_SIZE}s")  # record version, DEK version, id
_DEK_RECORD_SIZE: Final = _DEK_HEADER.size + NONCE_SIZE + KEY_SIZE + _TAG_SIZE
_MIN_VALUE_SIZE: Final = _VALUE_HEADER.size + NONCE_SIZE + _TAG_SIZE
_DEK_LABEL: Final = b"custodes/data-key/v1\x00"


class CiphertextError(StorageError):
    """A stored value does not decrypt: malformed, tampered with, or moved from another key,
    namespace or tenant."""

    code = "ciphertext"


class DataKeyError(StorageError):
    """A tenant's wrapped data key cannot be unwrapped: malformed, damaged, or moved."""

    code = "data-key"


class WrongMasterKey(DataKeyError):
    """The data key was wrapped by another master key than the one configured."""

    code = "wrong-master-key"


class MissingDataKey(StorageError):
    """A value is encrypted under a data key that the store does not hold."""

    code = "missing-data-key"


class ReservedNamespace(StorageError):
    """A caller used the namespace that holds the wrapped data keys."""

    code = "reserved-namespace"


@dataclass(frozen=True, slots=True, eq=False)
class _DataKey:
    version: int
    key: Secret[bytes] = field(repr=False)


def _lp(text: str) -> bytes:
    """Length-prefixed UTF-8, so that concatenated fields cannot be re-split differently."""
    # surrogatepass: every str has exactly one encoding, and none raises.
    raw = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(raw)) + raw


class EncryptedStore:
    """A :class:`Store` that encrypts the values of the namespaces ``encrypted`` selects.

    It owns ``inner``: :meth:`close` closes it.
    """

    def __init__(
        self,
        inner: Store,
        master: MasterKey,
        *,
        encrypted: Callable[[str], bool],
        tenant_of: Callable[[str], str],
        clock: Clock,
    ) -> None:
        self._inner = inner
        self._master = master
        self._encrypted = encrypted
        self._tenant_of = tenant_of
        self._clock = clock
        self._keys: dict[str, _DataKey] = {}
        self._keys_lock = threading.Lock()

    # --- data keys -----------------------------------------------------------------------

    def _dek_context(self, tenant: str, header: bytes) -> bytes:
        return _DEK_LABEL + header + _lp(tenant)

    def _wrap(self, tenant: str, dek: _DataKey) -> bytes:
        header = _DEK_HEADER.pack(_DEK_RECORD_VERSION, dek.version, self._master.key_id)
        return header + self._master.wrap(dek.key, self._dek_context(tenant, header))

    def _unwrap(self, tenant: str, record: bytes) -> _DataKey:
        prefix = f"cannot unwrap the data key of tenant {tenant!r}"
        if len(record) != _DEK_RECORD_SIZE:
            raise DataKeyError(
                f"{prefix}: the record is {len(record)} bytes, not {_DEK_RECORD_SIZE}"
            )
        header = record[: _DEK_HEADER.size]
        record_version, dek_version, key_id = _DEK_HEADER.unpack(header)
        if record_version != _DEK_RECORD_VERSION:
            raise DataKeyError(f"{prefix}: unknown record version {record_version}")
        if not hmac.compare_digest(key_id, self._master.key_id):
            raise WrongMasterKey(
                f"{prefix}: wrong master key? (it was wrapped by master key id "
                f"{key_id.hex()}, the configured one is {self._master.key_id.hex()})"
            )
        key = self._master.unwrap(record[_DEK_HEADER.size :], self._dek_context(tenant, header))
        if key is None:
            raise DataKeyError(f"{prefix}: the record is damaged or was copied from another tenant")
        return _DataKey(dek_version, key)

    @overload
    def _data_key(self, tenant: str, *, create: Literal[True]) -> _DataKey: ...

    @overload
    def _data_key(self, tenant: str, *, create: Literal[False]) -> _DataKey | None: ...

    def _data_key(self, tenant: str, *, create: bool) -> _DataKey | None:
        cached = self._keys.get(tenant)
        if cached is not None:
            return cached
        # One loader per process at a time; other processes are handled by `insert`.
        with self._keys_lock:
            cached = self._keys.get(tenant)
            if cached is not None:
                return cached
            now = self._clock.now()
            record = self._inner.get(NS_DATA_KEYS, tenant, now=now)
            if record is None:
                if not create:
                    return None
                fresh = _DataKey(_CURRENT_DEK_VERSION, Secret(secrets.token_bytes(KEY_SIZE)))
                if self._inner.insert(NS_DATA_KEYS, tenant, self._wrap(tenant, fresh), now=now):
                    self._keys[tenant] = fresh
                    return fresh
                # Another process created it between our read and our insert: use theirs.
                record = self._inner.get(NS_DATA_KEYS, tenant, now=now)
                if record is None:
                    raise StorageError(
                        f"the data key of tenant {tenant!r} vanished while it was created"
                    )
            dek = self._unwrap(tenant, record)
            self._keys[tenant] = dek
            return dek

    # --- values --------------------------------------------------------------------------

    @staticmethod
    def _aad(header: bytes, tenant: str, namespace: str, key: str) -> bytes:
        return header + _lp(tenant) + _lp(namespace) + _lp(key)

    def _encrypt(self, namespace: str, key: str, value: bytes) -> bytes:
        tenant = self._tenant_of(namespace)
        dek = self._data_key(tenant, create=True)
        header = _VALUE_HEADER.pack(FORMAT_VERSION, dek.version)
        nonce = secrets.token_bytes(NONCE_SIZE)
        sealed = AESGCM(dek.key.reveal()).encrypt(
            nonce, value, self._aad(header, tenant, namespace, key)
        )
        return header + nonce + sealed

    def _decrypt(self, namespace: str, key: str, blob: bytes) -> bytes:
        where = f"{namespace!r}/{key!r}"
        if len(blob) < _MIN_VALUE_SIZE:
            raise CiphertextError(f"value {where} is {len(blob)} bytes: not a ciphertext")
        header = blob[: _VALUE_HEADER.size]
        version, dek_version = _VALUE_HEADER.unpack(header)
        if version != FORMAT_VERSION:
            raise CiphertextError(f"value {where} has unknown format version {version}")
        tenant = self._tenant_of(namespace)
        dek = self._data_key(tenant, create=False)
        if dek is None:
            raise MissingDataKey(
                f"value {where} is encrypted but tenant {tenant!r} has no data key"
            )
        if dek.version != dek_version:
            raise MissingDataKey(
                f"value {where} is encrypted under data key version {dek_version} of tenant "
                f"{tenant!r}; the store holds version {dek.version}"
            )
        nonce = blob[_VALUE_HEADER.size : _VALUE_HEADER.size + NONCE_SIZE]
        try:
            return AESGCM(dek.key.reveal()).decrypt(
                nonce,
                blob[_VALUE_HEADER.size + NONCE_SIZE :],
                self._aad(header, tenant, namespace, key),
            )
        except InvalidTag:
            raise CiphertextError(
                f"value {where} does not decrypt: damaged, or moved from another key, "
                "namespace or tenant"
            ) from None

    @staticmethod
    def _check(namespace: str) -> None:
        if namespace == NS_DATA_KEYS:
            raise ReservedNamespace(f"namespace {NS_DATA_KEYS!r} is reserved for data keys")

    # --- Store ---------------------------------------------------------------------------

    def get(self, namespace: str, key: str, *, now: float) -> bytes | None:
        self._check(namespace)
        value = self._inner.get(namespace, key, now=now)
        if value is None or not self._encrypted(namespace):
            return value
        return self._decrypt(namespace, key, value)

    def set(
        self, namespace: str, key: str, value: bytes, *, expires_at: float | None = None
    ) -> None:
        self._check(namespace)
        if self._encrypted(namespace):
            value = self._encrypt(namespace, key, value)
        self._inner.set(namespace, key, value, expires_at=expires_at)

    def insert(
        self, namespace: str, key: str, value: bytes, *, now: float, expires_at: float | None = None
    ) -> bool:
        self._check(namespace)
        if self._encrypted(namespace):
            value = self._encrypt(namespace, key, value)
        return self._inner.insert(namespace, key, value, now=now, expires_at=expires_at)

    def compare_and_swap(
        self, namespace: str, key: str, expected: bytes, new: bytes, *, now: float
    ) -> bool:
        """``expected`` and ``new`` are plaintext. Atomic because the inner swap compares
        the exact ciphertext read here (see the module docstring)."""
        self._check(namespace)
        if not self._encrypted(namespace):
            return self._inner.compare_and_swap(namespace, key, expected, new, now=now)
        current = self._inner.get(namespace, key, now=now)
        if current is None:
            return False
        if not hmac.compare_digest(self._decrypt(namespace, key, current), expected):
            return False
        sealed = self._encrypt(namespace, key, new)
        return self._inner.compare_and_swap(namespace, key, current, sealed, now=now)

    @property
    def batches(self) -> bool:
        return batch_store(self._inner) is not None

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        """The inner store's batch (:mod:`custodes.storage.batch`), values sealed as by
        :meth:`set`; refused with :class:`StorageError` when the inner store has none."""
        inner = batch_store(self._inner)
        if inner is None:
            raise StorageError("the inner store cannot write batches")

        def sealed(rows: tuple[Row, ...]) -> tuple[Row, ...]:
            out = []
            for row in rows:
                self._check(row.namespace)
                if self._encrypted(row.namespace):
                    value = self._encrypt(row.namespace, row.key, row.value)
                    row = Row(row.namespace, row.key, value)
                out.append(row)
            return tuple(out)

        return inner.write_batch(
            Batch(sealed(batch.inserts), sealed(batch.upserts), sealed(batch.if_absent)), now=now
        )

    def delete(self, namespace: str, key: str) -> bool:
        self._check(namespace)
        return self._inner.delete(namespace, key)

    def list(self, namespace: str, *, now: float) -> list[str]:
        self._check(namespace)
        return self._inner.list(namespace, now=now)

    def purge_expired(self, now: float) -> int:
        # Data key records never expire, so this touches values only.
        return self._inner.purge_expired(now)

    def close(self) -> None:
        with self._keys_lock:
            self._keys.clear()
        self._inner.close()
