"""EncryptedStore: the Store contract, no plaintext on disk, bound ciphertexts, data keys
(wrapping, wrong master key, creation races) and the master key sources."""

from __future__ import annotations

import base64
import importlib
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custodes._internal.clock import FrozenClock
from custodes.storage.base import NS_RESOURCE_POLICY, NS_RESOURCES, NS_SESSIONS, Store
from custodes.storage.encrypted import (
    NS_DATA_KEYS,
    CiphertextError,
    DataKeyError,
    EncryptedStore,
    MissingDataKey,
    ReservedNamespace,
    WrongMasterKey,
)
from custodes.storage.masterkey import MasterKey, MasterKeyError
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore

NOW = 1_700_000_000.0
MASTER_RAW = bytes(range(1, 33))
OTHER_RAW = bytes(range(101, 133))

# Tenanted namespaces as "<tenant>/<namespace>"; sessions stay in the clear.
T1_RES = f"t1/{NS_RESOURCES}"
T1_POL = f"t1/{NS_RESOURCE_POLICY}"
T2_RES = f"t2/{NS_RESOURCES}"
T1_SESS = f"t1/{NS_SESSIONS}"


def _tenant_of(namespace: str) -> str:
    return namespace.split("/", 1)[0]


def _encrypted(namespace: str) -> bool:
    return not namespace.endswith(NS_SESSIONS)


def _wrap(inner: Store, raw: bytes = MASTER_RAW) -> EncryptedStore:
    return EncryptedStore(
        inner,
        MasterKey.from_bytes(raw),
        encrypted=_encrypted,
        tenant_of=_tenant_of,
        clock=FrozenClock(NOW),
    )


# --- the Store contract ------------------------------------------------------------------

# The contract module's tests take a fixture named `store`; imported here, pytest runs them
# again with this module's `store` fixture below. (Same directory, so it is importable.)
_contract = importlib.import_module("test_store_contract")
_CONTRACT_TESTS = {n: f for n, f in vars(_contract).items() if n.startswith("test_")}
globals().update(_CONTRACT_TESTS)


@pytest.fixture(params=["sqlite-all-encrypted", "memory-sessions-in-clear"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "sqlite-all-encrypted":
        # Every namespace encrypted, one tenant per namespace.
        s = EncryptedStore(
            SqliteStore(tmp_path / "store.db"),
            MasterKey.from_bytes(MASTER_RAW),
            encrypted=lambda ns: True,
            tenant_of=lambda ns: ns,
            clock=FrozenClock(NOW),
        )
    else:
        # Sessions pass through in the clear; everything else under one tenant.
        s = EncryptedStore(
            MemoryStore(),
            MasterKey.from_bytes(MASTER_RAW),
            encrypted=lambda ns: ns != NS_SESSIONS,
            tenant_of=lambda ns: "default",
            clock=FrozenClock(NOW),
        )
    yield s
    s.close()


def test_the_contract_tests_were_imported() -> None:
    assert len(_CONTRACT_TESTS) >= 20
    assert "test_concurrent_cas_has_exactly_one_winner" in _CONTRACT_TESTS


# --- what an infrastructure admin with the database file sees ------------------------------

SECRETS = {
    (T1_RES, "default/key/db-password"): b"hunter2-TENANT-ONE-db-password",
    (T1_RES, "default/key/api"): b'{"token": "TENANT-ONE-api-token-value"}',
    (T1_POL, "policy"): b'package policy\ndefault allow := "TENANT-ONE-policy"',
    (T2_RES, "default/key/db-password"): b"TENANT-TWO-correct-horse-battery",
}


def _fill(store: EncryptedStore) -> None:
    for (ns, key), value in SECRETS.items():
        store.set(ns, key, value)
    # Values written by insert and compare_and_swap are encrypted too.
    assert store.insert(T1_RES, "inserted", b"TENANT-ONE-inserted-value", now=NOW)
    store.set(T2_RES, "swapped", b"TENANT-TWO-before-swap")
    assert store.compare_and_swap(
        T2_RES, "swapped", b"TENANT-TWO-before-swap", b"TENANT-TWO-after-swap", now=NOW
    )


PLAINTEXTS = [
    *SECRETS.values(),
    b"TENANT-ONE-inserted-value",
    b"TENANT-TWO-before-swap",
    b"TENANT-TWO-after-swap",
]
# Distinctive fragments too, in case a value were stored split or re-encoded.
FRAGMENTS = [b"hunter2", b"TENANT-ONE", b"TENANT-TWO", b"correct-horse", b"api-token"]


def test_raw_read_of_the_sqlite_file_finds_no_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = _wrap(SqliteStore(db))
    _fill(store)
    # Still open: the WAL holds the recent writes; read both the live rows and every file.
    raw = sqlite3.connect(db)
    try:
        rows = raw.execute("SELECT namespace, key, value FROM kv").fetchall()
    finally:
        raw.close()
    assert len(rows) == len(PLAINTEXTS) - 1 + 2  # values (one swapped away) + two data keys
    for _ns, _key, value in rows:
        blob = bytes(value)
        for secret in PLAINTEXTS + FRAGMENTS:
            assert secret not in blob
        assert MASTER_RAW not in blob
    files = sorted(tmp_path.glob("store.db*"))
    assert db in files
    for path in files:
        content = path.read_bytes()
        for secret in PLAINTEXTS + FRAGMENTS:
            assert secret not in content, (path.name, secret)
        assert MASTER_RAW not in content
    store.close()
    content = db.read_bytes()
    for secret in PLAINTEXTS + FRAGMENTS:
        assert secret not in content
    # ...while the store itself, with the master key, reads everything back.
    reopened = _wrap(SqliteStore(db))
    for (ns, key), value in SECRETS.items():
        assert reopened.get(ns, key, now=NOW) == value
    assert reopened.get(T2_RES, "swapped", now=NOW) == b"TENANT-TWO-after-swap"
    reopened.close()


def test_documented_format_decrypts_by_hand(tmp_path: Path) -> None:
    """Decrypt a row with nothing but the master key and docs/encryption-at-rest.md, and
    check that the unwrapped data key itself appears nowhere in the file."""
    db = tmp_path / "store.db"
    store = _wrap(SqliteStore(db))
    store.set(T1_RES, "k", b"by-hand")
    store.close()
    raw = sqlite3.connect(db)
    try:
        (record,) = raw.execute(
            "SELECT value FROM kv WHERE namespace=? AND key=?", (NS_DATA_KEYS, "t1")
        ).fetchone()
        (blob,) = raw.execute(
            "SELECT value FROM kv WHERE namespace=? AND key=?", (T1_RES, "k")
        ).fetchone()
    finally:
        raw.close()

    def lp(s: str) -> bytes:
        return struct.pack(">I", len(s.encode())) + s.encode()

    record, blob = bytes(record), bytes(blob)
    assert len(record) == 73
    assert record[0] == 1
    assert record[1:5] == (1).to_bytes(4, "big")
    assert record[5:13] == MasterKey.from_bytes(MASTER_RAW).key_id
    dek = AESGCM(MASTER_RAW).decrypt(
        record[13:25], record[25:], b"custodes/data-key/v1\x00" + record[:13] + lp("t1")
    )
    assert len(dek) == 32
    assert dek not in db.read_bytes()
    assert blob[0] == 1
    assert blob[1:5] == (1).to_bytes(4, "big")
    aad = blob[:5] + lp("t1") + lp(T1_RES) + lp("k")
    assert AESGCM(dek).decrypt(blob[5:17], blob[17:], aad) == b"by-hand"


def test_every_write_uses_a_fresh_nonce() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "a", b"same")
    first = inner.get(T1_RES, "a", now=NOW)
    store.set(T1_RES, "a", b"same")
    store.set(T1_RES, "b", b"same")
    second = inner.get(T1_RES, "a", now=NOW)
    other = inner.get(T1_RES, "b", now=NOW)
    assert first is not None and second is not None and other is not None
    assert len({first, second, other}) == 3
    assert len({first[5:17], second[5:17], other[5:17]}) == 3


def test_clear_namespaces_pass_through_and_create_no_key() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_SESS, "s", b"session-state")
    assert inner.get(T1_SESS, "s", now=NOW) == b"session-state"
    assert store.compare_and_swap(T1_SESS, "s", b"session-state", b"next", now=NOW)
    assert inner.get(T1_SESS, "s", now=NOW) == b"next"
    assert inner.list(NS_DATA_KEYS, now=NOW) == []


def test_reading_does_not_create_a_data_key() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    assert store.get(T1_RES, "missing", now=NOW) is None
    assert not store.compare_and_swap(T1_RES, "missing", b"a", b"b", now=NOW)
    assert inner.list(NS_DATA_KEYS, now=NOW) == []
    store.set(T1_RES, "k", b"v")
    store.set(T1_POL, "k", b"v")
    store.set(T2_RES, "k", b"v")
    assert inner.list(NS_DATA_KEYS, now=NOW) == ["t1", "t2"]


def test_a_new_store_over_the_same_data_reads_it(tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    MasterKey.generate_file(key_file)
    db = tmp_path / "store.db"

    def open_store() -> EncryptedStore:
        return EncryptedStore(
            SqliteStore(db),
            MasterKey.from_file(key_file),
            encrypted=_encrypted,
            tenant_of=_tenant_of,
            clock=FrozenClock(NOW),
        )

    first = open_store()
    first.set(T1_RES, "k", b"persisted", expires_at=NOW + 10)
    first.close()
    second = open_store()
    assert second.get(T1_RES, "k", now=NOW) == b"persisted"
    assert second.get(T1_RES, "k", now=NOW + 10) is None
    second.close()


# --- ciphertexts are bound to their place ------------------------------------------------


def _copy(inner: Store, src: tuple[str, str], dst: tuple[str, str]) -> None:
    blob = inner.get(*src, now=NOW)
    assert blob is not None
    inner.set(*dst, blob)


def test_ciphertext_moved_to_another_key_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "a", b"value-of-a")
    store.set(T1_RES, "b", b"value-of-b")
    _copy(inner, (T1_RES, "a"), (T1_RES, "b"))
    with pytest.raises(CiphertextError):
        store.get(T1_RES, "b", now=NOW)
    assert store.get(T1_RES, "a", now=NOW) == b"value-of-a"


def test_ciphertext_moved_to_another_namespace_of_the_tenant_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"resource")
    store.set(T1_POL, "other", b"policy")  # the tenant's key exists either way
    _copy(inner, (T1_RES, "k"), (T1_POL, "k"))
    with pytest.raises(CiphertextError):
        store.get(T1_POL, "k", now=NOW)


def test_ciphertext_moved_to_another_tenant_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"tenant one")
    store.set(T2_RES, "other", b"tenant two")
    _copy(inner, (T1_RES, "k"), (T2_RES, "k"))
    with pytest.raises(CiphertextError):
        store.get(T2_RES, "k", now=NOW)


def test_data_key_record_moved_to_another_tenant_fails() -> None:
    # Giving tenant b tenant a's data key (and a's ciphertext) does not work: the wrapped
    # record names its tenant.
    inner = MemoryStore()
    store = _wrap(inner)
    store.set("a/x", "k", b"v")
    _copy(inner, ("a/x", "k"), ("b/x", "k"))
    _copy(inner, (NS_DATA_KEYS, "a"), (NS_DATA_KEYS, "b"))
    with pytest.raises(DataKeyError) as info:
        _wrap(inner).get("b/x", "k", now=NOW)
    assert type(info.value) is DataKeyError


def test_tampered_ciphertext_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"some value")
    blob = bytearray(inner.get(T1_RES, "k", now=NOW) or b"")
    blob[-1] ^= 1
    inner.set(T1_RES, "k", bytes(blob))
    with pytest.raises(CiphertextError):
        store.get(T1_RES, "k", now=NOW)
    # A CAS on a damaged value raises rather than pretending it did not match.
    with pytest.raises(CiphertextError):
        store.compare_and_swap(T1_RES, "k", b"some value", b"new", now=NOW)


def test_too_short_ciphertext_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"")
    inner.set(T1_RES, "k", (inner.get(T1_RES, "k", now=NOW) or b"")[:-1])
    with pytest.raises(CiphertextError):
        store.get(T1_RES, "k", now=NOW)


def test_plaintext_left_in_an_encrypted_namespace_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"v")
    inner.set(T1_RES, "legacy", b"a plaintext value written before encryption was enabled")
    with pytest.raises(CiphertextError):
        store.get(T1_RES, "legacy", now=NOW)


def test_unknown_format_version_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"v")
    blob = inner.get(T1_RES, "k", now=NOW) or b""
    inner.set(T1_RES, "k", b"\x02" + blob[1:])
    with pytest.raises(CiphertextError):
        store.get(T1_RES, "k", now=NOW)


def test_unknown_data_key_version_fails() -> None:
    inner = MemoryStore()
    store = _wrap(inner)
    store.set(T1_RES, "k", b"v")
    blob = inner.get(T1_RES, "k", now=NOW) or b""
    inner.set(T1_RES, "k", blob[:1] + (2).to_bytes(4, "big") + blob[5:])
    with pytest.raises(MissingDataKey):
        store.get(T1_RES, "k", now=NOW)


def test_value_without_its_data_key_fails() -> None:
    inner = MemoryStore()
    _wrap(inner).set(T1_RES, "k", b"v")
    assert inner.delete(NS_DATA_KEYS, "t1")
    with pytest.raises(MissingDataKey):
        _wrap(inner).get(T1_RES, "k", now=NOW)


# --- data keys and the master key ---------------------------------------------------------


def test_wrong_master_key_is_refused_clearly() -> None:
    inner = MemoryStore()
    _wrap(inner).set(T1_RES, "k", b"v")
    other = _wrap(inner, OTHER_RAW)
    with pytest.raises(WrongMasterKey) as info:
        other.get(T1_RES, "k", now=NOW)
    message = str(info.value)
    assert "cannot unwrap the data key of tenant 't1': wrong master key?" in message
    for raw in (MASTER_RAW, OTHER_RAW):
        assert raw.hex() not in message
        assert base64.b64encode(raw).decode() not in message
    # Writing with the wrong key fails too, rather than creating a second data key.
    with pytest.raises(WrongMasterKey):
        other.set(T1_RES, "k2", b"v2")
    assert inner.list(NS_DATA_KEYS, now=NOW) == ["t1"]


def test_damaged_data_key_record_is_not_blamed_on_the_master_key() -> None:
    inner = MemoryStore()
    _wrap(inner).set(T1_RES, "k", b"v")
    record = bytearray(inner.get(NS_DATA_KEYS, "t1", now=NOW) or b"")
    record[-1] ^= 1
    inner.set(NS_DATA_KEYS, "t1", bytes(record))
    with pytest.raises(DataKeyError) as info:
        _wrap(inner).get(T1_RES, "k", now=NOW)
    assert type(info.value) is DataKeyError
    assert "cannot unwrap the data key of tenant 't1'" in str(info.value)


def test_malformed_data_key_record_fails() -> None:
    inner = MemoryStore()
    _wrap(inner).set(T1_RES, "k", b"v")
    record = inner.get(NS_DATA_KEYS, "t1", now=NOW) or b""
    inner.set(NS_DATA_KEYS, "t1", record[:-1])
    with pytest.raises(DataKeyError):
        _wrap(inner).get(T1_RES, "k", now=NOW)


def test_unknown_data_key_record_version_fails() -> None:
    inner = MemoryStore()
    _wrap(inner).set(T1_RES, "k", b"v")
    record = inner.get(NS_DATA_KEYS, "t1", now=NOW) or b""
    inner.set(NS_DATA_KEYS, "t1", b"\x02" + record[1:])
    with pytest.raises(DataKeyError) as info:
        _wrap(inner).get(T1_RES, "k", now=NOW)
    assert type(info.value) is DataKeyError


def test_the_data_key_namespace_is_reserved() -> None:
    store = _wrap(MemoryStore())
    store.set(T1_RES, "k", b"v")
    with pytest.raises(ReservedNamespace):
        store.get(NS_DATA_KEYS, "t1", now=NOW)
    with pytest.raises(ReservedNamespace):
        store.set(NS_DATA_KEYS, "t1", b"x")
    with pytest.raises(ReservedNamespace):
        store.insert(NS_DATA_KEYS, "t9", b"x", now=NOW)
    with pytest.raises(ReservedNamespace):
        store.compare_and_swap(NS_DATA_KEYS, "t1", b"x", b"y", now=NOW)
    with pytest.raises(ReservedNamespace):
        store.delete(NS_DATA_KEYS, "t1")
    with pytest.raises(ReservedNamespace):
        store.list(NS_DATA_KEYS, now=NOW)


class _RivalWinsTheInsert(MemoryStore):
    """A real MemoryStore in which another broker process creates the tenant's data key in
    the window between our read of it and our insert: the interleaving that threads only
    hit by chance, made certain."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: EncryptedStore | None = None
        self.rival_ran = False

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        rival, self.rival = self.rival, None
        if rival is not None and namespace == NS_DATA_KEYS:
            rival.set(T1_RES, "from-rival", b"rival")
            self.rival_ran = True
        return super().insert(namespace, key, value, now=now, expires_at=expires_at)


def test_data_key_race_loser_uses_the_winners_key() -> None:
    inner = _RivalWinsTheInsert()
    ours, rival = _wrap(inner), _wrap(inner)
    inner.rival = rival
    ours.set(T1_RES, "from-us", b"us")
    assert inner.rival_ran
    assert inner.list(NS_DATA_KEYS, now=NOW) == ["t1"]
    assert ours.get(T1_RES, "from-rival", now=NOW) == b"rival"
    assert rival.get(T1_RES, "from-us", now=NOW) == b"us"


def test_data_key_is_created_once_when_processes_race(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    SqliteStore(db).close()  # create the schema before the race
    count = 6
    stores = [_wrap(SqliteStore(db)) for _ in range(count)]  # one connection each
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            stores[i].set(T1_RES, f"k{i}", b"value %d" % i)
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    assert errors == []
    raw = sqlite3.connect(db)
    try:
        (n,) = raw.execute("SELECT count(*) FROM kv WHERE namespace=?", (NS_DATA_KEYS,)).fetchone()
    finally:
        raw.close()
    assert n == 1
    fresh = _wrap(SqliteStore(db))
    for i in range(count):
        assert fresh.get(T1_RES, f"k{i}", now=NOW) == b"value %d" % i
    fresh.close()


# --- MasterKey ---------------------------------------------------------------------------


def test_master_key_repr_shows_only_its_id() -> None:
    key = MasterKey.from_bytes(MASTER_RAW)
    for text in (repr(key), str(key), f"{key}"):
        assert text == f"MasterKey(id={key.key_id.hex()})"
        assert MASTER_RAW.hex() not in text
    assert MasterKey.from_bytes(OTHER_RAW).key_id != key.key_id


@pytest.mark.parametrize(
    "raw", [b"", bytes(31), b"\x01" * 33, bytes(32)], ids=["empty", "31", "33", "zeros"]
)
def test_master_key_must_be_32_nonzero_bytes(raw: bytes) -> None:
    with pytest.raises(MasterKeyError):
        MasterKey.from_bytes(raw)


def test_generate_file_then_from_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    made = MasterKey.generate_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text("ascii")
    assert text.endswith("\n") and len(text) == 45
    assert MasterKey.from_file(path).key_id == made.key_id
    # The file and the environment take the same text.
    assert MasterKey.from_env("K", {"K": text}).key_id == made.key_id


def test_generate_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = MasterKey.generate_file(path)
    with pytest.raises(MasterKeyError):
        MasterKey.generate_file(path)
    assert MasterKey.from_file(path).key_id == first.key_id


def test_generate_file_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        MasterKey.generate_file(tmp_path / "master.key")
    finally:
        os.umask(old)
    assert (tmp_path / "master.key").stat().st_mode & 0o777 == 0o600


def _key_file(tmp_path: Path, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / "master.key"
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "content",
    [
        MASTER_RAW,
        base64.b64encode(MASTER_RAW),
        base64.b64encode(MASTER_RAW) + b"\n",
    ],
    ids=["raw", "base64", "base64-newline"],
)
def test_from_file_accepts_the_documented_forms(tmp_path: Path, content: bytes) -> None:
    key = MasterKey.from_file(_key_file(tmp_path, content))
    assert key.key_id == MasterKey.from_bytes(MASTER_RAW).key_id


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660])
def test_from_file_refuses_group_or_world_access(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, MASTER_RAW, mode)
    with pytest.raises(MasterKeyError) as info:
        MasterKey.from_file(path)
    assert f"{mode:04o}" in str(info.value)


def test_from_file_accepts_owner_read_only(tmp_path: Path) -> None:
    assert MasterKey.from_file(_key_file(tmp_path, MASTER_RAW, 0o400)).key_id


def test_from_file_follows_a_symlink_and_checks_the_target(tmp_path: Path) -> None:
    # Kubernetes Secret volumes present files as symlinks; the target's mode is what counts.
    target = _key_file(tmp_path, MASTER_RAW)
    link = tmp_path / "link.key"
    link.symlink_to(target)
    assert MasterKey.from_file(link).key_id == MasterKey.from_bytes(MASTER_RAW).key_id
    target.chmod(0o644)
    with pytest.raises(MasterKeyError):
        MasterKey.from_file(link)


@pytest.mark.parametrize(
    "content",
    [
        MASTER_RAW[:31],
        MASTER_RAW + b"\n",
        base64.b64encode(MASTER_RAW)[:-1],
        base64.b64encode(MASTER_RAW) + b"\n\n",
        b" " + base64.b64encode(MASTER_RAW),
        base64.urlsafe_b64encode(b"\xff" * 32),
        base64.b64encode(MASTER_RAW[:31]),
        base64.b64encode(MASTER_RAW + b"\x00"),
        MASTER_RAW.hex().encode(),
        b"\xff" * 45,
        bytes(32),
        b"",
    ],
    ids=[
        "raw-31",
        "raw-newline",
        "base64-cut",
        "base64-two-newlines",
        "base64-leading-space",
        "base64url",
        "base64-of-31",
        "base64-of-33",
        "hex",
        "non-ascii",
        "zeros",
        "empty",
    ],
)
def test_from_file_refuses_malformed_content(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(MasterKeyError):
        MasterKey.from_file(_key_file(tmp_path, content))


def test_from_file_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError):
        MasterKey.from_file(tmp_path / "absent.key")


def test_from_file_refuses_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(MasterKeyError):
        MasterKey.from_file(directory)


def test_from_env_reads_base64(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = MasterKey.from_bytes(MASTER_RAW).key_id
    text = base64.b64encode(MASTER_RAW).decode()
    assert MasterKey.from_env("CUSTODES_MK", {"CUSTODES_MK": text}).key_id == expected
    assert MasterKey.from_env("CUSTODES_MK", {"CUSTODES_MK": text + "\n"}).key_id == expected
    monkeypatch.setenv("CUSTODES_TEST_MASTER_KEY", text)
    assert MasterKey.from_env("CUSTODES_TEST_MASTER_KEY").key_id == expected


def test_from_env_refuses_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUSTODES_TEST_MASTER_KEY", raising=False)
    with pytest.raises(MasterKeyError):
        MasterKey.from_env("CUSTODES_TEST_MASTER_KEY")
    with pytest.raises(MasterKeyError):
        MasterKey.from_env("K", {})


@pytest.mark.parametrize(
    "text",
    [
        "",
        base64.b64encode(MASTER_RAW).decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),
        base64.b64encode(MASTER_RAW[:16]).decode(),
        MASTER_RAW.hex(),
        " " + base64.b64encode(MASTER_RAW).decode(),
        base64.b64encode(bytes(32)).decode(),
    ],
    ids=["empty", "unpadded", "base64url", "16-bytes", "hex", "leading-space", "zeros"],
)
def test_from_env_refuses_malformed_values(text: str) -> None:
    with pytest.raises(MasterKeyError):
        MasterKey.from_env("K", {"K": text})
