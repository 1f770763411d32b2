"""The audit log: appends on the real stores (SQLite and memory), concurrent appenders, the
correlation-id index, and tamper tests that must each name the right entry and reason."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from jwcrypto import jwk

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.clock import FrozenClock
from custodes.audit.entry import (
    BROKER_STREAM,
    GENESIS_PREV,
    AuditEntry,
    AuditKind,
    build_entry,
    format_time,
    key_id,
    parse_time,
)
from custodes.audit.errors import (
    AuditAnchorMismatch,
    AuditAppendConflict,
    AuditChainError,
    AuditChainForked,
    AuditEmpty,
    AuditEntryEdited,
    AuditEntryMalformed,
    AuditEntryMissing,
    AuditEntryReordered,
    AuditEventInvalid,
    AuditSignatureInvalid,
    AuditStreamInvalid,
    AuditTailUncovered,
    AuditTimeReversed,
    AuditTruncated,
    AuditUnknownKey,
    AuditWrongStream,
)
from custodes.audit.log import MAX_APPEND_ATTEMPTS, NS_HEAD, AuditLog
from custodes.audit.verify import VerifyReport, parse_head, verify_chain, verify_jsonl
from custodes.errors import ConfigError, StorageError
from custodes.storage.base import Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore
from custodes.types.json import JsonObject
from custodes.types.secret import Secret

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STREAM = "acme"


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = SqliteStore(tmp_path / "store.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


@pytest.fixture
def log(store: Store, key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> AuditLog:
    return AuditLog(store, key, clock)


def fill(log: AuditLog, clock: FrozenClock, n: int = 6, stream: str = STREAM) -> list[JsonObject]:
    """``n`` entries of every kind, one second apart; returned as exported JSON objects."""
    kinds = [k for k in AuditKind if k is not AuditKind.CHECKPOINT]
    for i in range(n):
        log.append(stream, kinds[i % len(kinds)], f"admin-{i}", {"n": i, "resource": f"r/{i}"})
        clock.advance(1.0)
    return [e.to_json() for e in log.entries(stream)]


def sealed(log: AuditLog, clock: FrozenClock, n: int = 6) -> list[JsonObject]:
    """``fill``, then a checkpoint (entry ``n``): a stream whose end is signed."""
    fill(log, clock, n)
    log.checkpoint(STREAM)
    return [e.to_json() for e in log.entries(STREAM)]


def broken(report: VerifyReport, cls: type[AuditChainError], seq: int) -> AuditChainError:
    """The report failed at ``seq`` with exactly ``cls``, and counted the entries before it."""
    assert not report.ok
    assert type(report.error) is cls, report.error
    assert report.first_bad_seq == seq
    assert report.reason is not None and report.reason == str(report.error)
    assert report.error is not None
    return report.error


# --- appending and reading -------------------------------------------------------------------


def test_append_and_read(
    log: AuditLog, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    clock.advance(0.25)
    first = log.append(STREAM, AuditKind.ADMIN, "alice", {"action": "set-policy", "version": 3})
    clock.advance(1.5)
    second = log.append(STREAM, "release", None, {"resource": "default/key/1"})
    assert (first.seq, second.seq) == (0, 1)
    assert first.time == "2026-01-01T00:00:00.250Z" and second.time == "2026-01-01T00:00:01.750Z"
    assert first.prev == GENESIS_PREV and second.prev == first.hash
    assert first.kind is AuditKind.ADMIN and second.kind is AuditKind.RELEASE
    assert first.actor == "alice" and second.actor is None
    assert first.kid == key_id(key.public_key()) == log.kid
    assert log.entries(STREAM) == [first, second]
    assert log.head(STREAM) == (1, second.hash)
    report = log.verify_stream(STREAM)
    assert report.ok and report.count == 2 and report.head == (1, second.hash)
    assert report.first_seq == 0 and report.error is None and report.reason is None


def test_entry_format_is_independently_checkable(
    log: AuditLog, key: ec.EllipticCurvePrivateKey
) -> None:
    """hash = SHA-256(JCS(entry - hash - sig)); sig = plain ES256 over the same bytes; kid =
    the RFC 7638 thumbprint as jwcrypto computes it."""
    entry = log.append(STREAM, "attestation", "guest", {"tee": "sample", "ok": True})
    obj = entry.to_json()
    assert set(obj) == {
        "seq",
        "time",
        "stream",
        "kind",
        "actor",
        "event",
        "prev",
        "kid",
        "hash",
        "sig",
    }
    signed = {k: v for k, v in obj.items() if k not in ("hash", "sig")}
    canonical = rfc8785.dumps(signed)
    assert hashlib.sha256(canonical).hexdigest() == obj["hash"]
    raw = b64url_decode(obj["sig"])
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(der, canonical, ec.ECDSA(hashes.SHA256()))  # raises if invalid
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert obj["kid"] == jwk.JWK.from_pem(pem).thumbprint()
    assert entry.to_bytes() == rfc8785.dumps(obj)


def test_storage_layout_and_streams_are_separate(
    log: AuditLog, store: Store, clock: FrozenClock
) -> None:
    fill(log, clock, 3)
    log.append("beta", "tenant", "op", {"created": "beta"})
    log.append(BROKER_STREAM, "tenant", "op", {"created": "beta"})
    assert store.list("audit/acme", now=clock.now()) == [f"{i:012d}" for i in range(3)]
    assert store.list("audit/beta", now=clock.now()) == ["000000000000"]
    assert (
        store.get("audit/acme", "000000000001", now=clock.now())
        == log.entries(STREAM)[1].to_bytes()
    )
    assert [e.seq for e in log.entries("beta")] == [0]
    assert log.entries("beta")[0].prev == GENESIS_PREV
    assert all(e.stream == STREAM for e in log.entries(STREAM))
    assert log.entries(BROKER_STREAM)[0].stream == BROKER_STREAM
    assert log.entries("gamma") == [] and log.head("gamma") is None


def test_entries_since_and_limit(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock, 6)
    assert [e.seq for e in log.entries(STREAM, since_seq=2)] == [2, 3, 4, 5]
    assert [e.seq for e in log.entries(STREAM, since_seq=2, limit=2)] == [2, 3]
    assert log.entries(STREAM, since_seq=9) == []


def test_find(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock, 6)
    releases = log.find(STREAM, lambda e: e.kind is AuditKind.RELEASE)
    assert [e.seq for e in releases] == [2]
    assert [e.seq for e in log.find(STREAM, lambda e: e.event["n"] > 1, limit=2)] == [2, 3]


def test_time_never_decreases(log: AuditLog, clock: FrozenClock) -> None:
    """A replica whose clock is behind records the previous entry's time, not an earlier one."""
    first = log.append(STREAM, "admin", "a", {})
    clock.advance(-30.0)
    second = log.append(STREAM, "admin", "a", {})
    assert second.time == first.time
    assert log.verify_stream(STREAM).ok


def test_time_codec() -> None:
    assert format_time(0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_767_225_600_007) == "2026-01-01T00:00:00.007Z"
    assert parse_time("2026-01-01T00:00:00.007Z") == 1_767_225_600_007
    for bad in (
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.000+00:00",
        "2026-02-30T00:00:00.000Z",
        5,
    ):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_event_is_detached_from_the_caller(log: AuditLog) -> None:
    event: JsonObject = {"list": [1, 2]}
    entry = log.append(STREAM, "admin", "a", event)
    event["list"].append(3)
    assert entry.event == {"list": [1, 2]}
    assert log.verify_stream(STREAM).ok


@pytest.mark.parametrize(
    ("stream", "kind", "actor", "event", "error"),
    [
        ("", "admin", "a", {}, AuditStreamInvalid),
        ("a/b", "admin", "a", {}, AuditStreamInvalid),
        ("../x", "admin", "a", {}, AuditStreamInvalid),
        (STREAM, "delete", "a", {}, AuditEventInvalid),
        (STREAM, "checkpoint", None, {}, AuditEventInvalid),
        (STREAM, AuditKind.CHECKPOINT, None, {}, AuditEventInvalid),
        (STREAM, "admin", "", {}, AuditEventInvalid),
        (STREAM, "admin", "x" * 1025, {}, AuditEventInvalid),
        (STREAM, "admin", "a", ["not", "an", "object"], AuditEventInvalid),
        (STREAM, "admin", "a", {"key": b"\x00raw"}, AuditEventInvalid),
        (STREAM, "admin", "a", {"key": Secret("hunter2")}, AuditEventInvalid),
        (STREAM, "admin", "a", {"x": float("nan")}, AuditEventInvalid),
        (STREAM, "admin", "a", {"x": 2**60}, AuditEventInvalid),
        (STREAM, "admin", "a", {"blob": "x" * 70_000}, AuditEventInvalid),
        (STREAM, "denial", "a", {"correlation_id": "has space"}, AuditEventInvalid),
        (STREAM, "denial", "a", {"correlation_id": 7}, AuditEventInvalid),
    ],
)
def test_append_refuses(
    log: AuditLog,
    store: Store,
    clock: FrozenClock,
    stream: str,
    kind: str,
    actor: str,
    event: JsonObject,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        log.append(stream, kind, actor, event)
    assert log.entries(STREAM) == []
    assert store.get(NS_HEAD, STREAM, now=clock.now()) is None


def test_constructor_refuses_other_curves(store: Store, clock: FrozenClock) -> None:
    with pytest.raises(ConfigError):
        AuditLog(store, ec.generate_private_key(ec.SECP384R1()), clock)


# --- concurrency ---------------------------------------------------------------------------


def run_threads(work: Callable[[int], None], n: int = 8) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def assert_complete_chain(log: AuditLog, threads: int, per_thread: int) -> None:
    entries = log.entries(STREAM)
    assert [e.seq for e in entries] == list(range(threads * per_thread))
    seen = sorted((e.event["thread"], e.event["i"]) for e in entries)
    assert seen == [(t, i) for t in range(threads) for i in range(per_thread)]
    report = log.verify_stream(STREAM)
    assert report.ok and report.count == threads * per_thread


def test_concurrent_appends_one_log(log: AuditLog) -> None:
    def work(t: int) -> None:
        for i in range(12):
            log.append(STREAM, "release", f"t{t}", {"thread": t, "i": i})

    run_threads(work)
    assert_complete_chain(log, 8, 12)


def test_concurrent_appends_from_replicas(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    """Eight brokers, each with its own SQLite connection to one database file: only
    Store.insert keeps them from writing the same seq."""
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path) for _ in range(8)]
    logs = [AuditLog(s, key, clock) for s in stores]
    try:

        def work(t: int) -> None:
            for i in range(6):
                logs[t].append(STREAM, "release", f"t{t}", {"thread": t, "i": i})

        run_threads(work)
        assert_complete_chain(logs[0], 8, 6)
    finally:
        for s in stores:
            s.close()


def test_concurrent_appends_from_replicas_in_memory(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    store = MemoryStore()
    logs = [AuditLog(store, key, clock) for _ in range(8)]

    def work(t: int) -> None:
        for i in range(12):
            logs[t].append(STREAM, "release", f"t{t}", {"thread": t, "i": i})

    run_threads(work)
    assert_complete_chain(logs[0], 8, 12)


class AlwaysBeatenStore(MemoryStore):
    """A store where another replica (a real AuditLog on the same store) appends just before
    every insert of ours: the worst case of contention, which no real timing can force."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: AuditLog | None = None
        self._racing = False

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        if self.rival is not None and not self._racing and namespace.startswith("audit/"):
            self._racing = True
            try:
                self.rival.append(namespace.removeprefix("audit/"), "admin", "rival", {})
            finally:
                self._racing = False
        return super().insert(namespace, key, value, now=now, expires_at=expires_at)


def test_append_gives_up_after_bounded_conflicts(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    store = AlwaysBeatenStore()
    store.rival = AuditLog(store, key, clock)
    loser = AuditLog(store, key, clock)
    with pytest.raises(AuditAppendConflict) as info:
        loser.append(STREAM, "admin", "me", {"mine": True})
    assert isinstance(info.value, StorageError)
    entries = loser.entries(STREAM)
    assert len(entries) == MAX_APPEND_ATTEMPTS
    assert all(e.actor == "rival" for e in entries)
    assert loser.verify_stream(STREAM).ok


def test_stale_or_wrong_head_hint(log: AuditLog, store: Store, clock: FrozenClock) -> None:
    """The head hint is only a hint: lagging, ahead or garbage, the next seq is still right."""
    fill(log, clock, 4)
    store.set(NS_HEAD, STREAM, b"1")
    assert log.append(STREAM, "admin", "a", {}).seq == 4
    store.set(NS_HEAD, STREAM, b"99")
    assert log.append(STREAM, "admin", "a", {}).seq == 5
    store.set(NS_HEAD, STREAM, b"garbage")
    assert log.append(STREAM, "admin", "a", {}).seq == 6
    store.delete(NS_HEAD, STREAM)
    assert log.append(STREAM, "admin", "a", {}).seq == 7
    assert log.verify_stream(STREAM).ok


# --- correlation ids ------------------------------------------------------------------------


def test_correlation_id_lookup(log: AuditLog, store: Store, clock: FrozenClock) -> None:
    fill(log, clock, 2)
    denial = log.append(
        STREAM, "denial", "guest", {"correlation_id": "7f3a9c", "rule": "allow", "claim": "x"}
    )
    fill(log, clock, 2)
    assert log.get_by_correlation_id(STREAM, "7f3a9c") == denial
    assert log.get_by_correlation_id(STREAM, "nope") is None
    assert log.get_by_correlation_id(STREAM, "bad id/../x") is None
    # Another tenant cannot find it, even knowing the id.
    assert log.get_by_correlation_id("beta", "7f3a9c") is None
    # An index entry pointing at another entry is not trusted.
    store.set("audit-index/acme", "7f3a9c", b"0")
    assert log.get_by_correlation_id(STREAM, "7f3a9c") is None
    # A lost index entry (a crash between the two writes) is restored by rebuild_index.
    store.delete("audit-index/acme", "7f3a9c")
    assert log.get_by_correlation_id(STREAM, "7f3a9c") is None
    assert log.rebuild_index(STREAM) == 1
    assert log.get_by_correlation_id(STREAM, "7f3a9c") == denial
    assert log.rebuild_index(STREAM) == 0


def test_duplicate_correlation_id_keeps_the_first(log: AuditLog) -> None:
    first = log.append(STREAM, "denial", "g", {"correlation_id": "c1"})
    log.append(STREAM, "denial", "g", {"correlation_id": "c1"})
    assert log.get_by_correlation_id(STREAM, "c1") == first


# --- tampering -------------------------------------------------------------------------------


def keys_of(log: AuditLog) -> dict[str, ec.EllipticCurvePublicKey]:
    return log.public_keys()


def test_intact_chain_verifies(log: AuditLog, clock: FrozenClock) -> None:
    entries = sealed(log, clock)
    report = verify_chain(entries, keys_of(log))
    assert report.ok and report.count == 7 and report.first_seq == 0
    assert report.head == (6, entries[6]["hash"]) and not report.anchored
    assert report.complete and report.checkpoints == 1
    assert report.checkpoint is not None and report.checkpoint.seq == 6
    anchored = verify_chain(entries, keys_of(log), expected_head=(6, entries[6]["hash"]))
    assert anchored.ok and anchored.anchored
    # An anchor inside the chain is checked too.
    assert verify_chain(entries, keys_of(log), expected_head=(2, entries[2]["hash"])).ok


def test_edit_event_field(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3]["event"]["resource"] = "r/other"
    report = verify_chain(entries, keys_of(log))
    broken(report, AuditEntryEdited, 3)
    assert report.count == 3 and report.head == (2, entries[2]["hash"])


def test_edit_time(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3]["time"] = "2025-12-31T23:59:59.000Z"
    broken(verify_chain(entries, keys_of(log)), AuditEntryEdited, 3)


def test_edit_actor_and_recompute_hash(log: AuditLog, clock: FrozenClock) -> None:
    """Whoever edits and re-hashes still cannot sign."""
    entries = fill(log, clock)
    entries[3]["actor"] = "mallory"
    signed = {k: v for k, v in entries[3].items() if k not in ("hash", "sig")}
    entries[3]["hash"] = hashlib.sha256(rfc8785.dumps(signed)).hexdigest()
    broken(verify_chain(entries, keys_of(log)), AuditSignatureInvalid, 3)


def test_delete_middle_entry(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    del entries[3]
    error = broken(verify_chain(entries, keys_of(log)), AuditEntryMissing, 3)
    assert "entry 3 is missing" in error.reason


def test_delete_two_entries(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    del entries[2:4]
    error = broken(verify_chain(entries, keys_of(log)), AuditEntryMissing, 2)
    assert "entries 2..3" in error.reason


def test_swap_two_entries(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3], entries[4] = entries[4], entries[3]
    error = broken(verify_chain(entries, keys_of(log)), AuditEntryReordered, 3)
    assert "reordered" in error.reason


def test_repeated_entry(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries.insert(3, dict(entries[2]))
    broken(verify_chain(entries, keys_of(log)), AuditEntryReordered, 3)


def test_truncate_tail(log: AuditLog, clock: FrozenClock) -> None:
    entries = sealed(log, clock)
    anchor = (6, entries[6]["hash"])
    cut = entries[:4]
    # The shorter chain is a valid chain, but nothing signed says it ends there.
    error = broken(verify_chain(cut, keys_of(log)), AuditTailUncovered, 4)
    assert "no checkpoint" in error.reason
    # Told to accept that, it is the old blind spot: valid, and the report says incomplete.
    unanchored = verify_chain(cut, keys_of(log), require_checkpoint=False)
    assert unanchored.ok and not unanchored.complete and unanchored.checkpoint is None
    assert unanchored.head == (3, entries[3]["hash"])
    # An anchor says more precisely what is missing.
    error = broken(verify_chain(cut, keys_of(log), expected_head=anchor), AuditTruncated, 4)
    assert "entries 4..6" in error.reason


def test_truncate_everything(log: AuditLog, clock: FrozenClock) -> None:
    entries = sealed(log, clock)
    broken(verify_chain([], keys_of(log), expected_head=(6, entries[6]["hash"])), AuditTruncated, 0)
    for required in (True, False):
        error = broken(verify_chain([], keys_of(log), require_checkpoint=required), AuditEmpty, 0)
        assert "proves nothing" in error.reason


def test_rewritten_log_does_not_match_the_anchor(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    """The broker key re-used to write a different history (restored backup, forged log)."""
    entries = fill(log, clock)
    other = AuditLog(MemoryStore(), key, clock)
    rewritten = fill(other, clock)
    broken(
        verify_chain(rewritten, keys_of(log), expected_head=(4, entries[4]["hash"])),
        AuditAnchorMismatch,
        4,
    )


def test_anchor_before_the_first_entry(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    broken(
        verify_chain(
            entries[3:], keys_of(log), expected_head=(1, entries[1]["hash"]), start_seq=None
        ),
        AuditAnchorMismatch,
        1,
    )


def test_invalid_anchor_is_a_usage_error(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    with pytest.raises(ConfigError):
        verify_chain(entries, keys_of(log), expected_head=(1, "xyz"))
    with pytest.raises(ConfigError):
        verify_chain(entries, keys_of(log), expected_head=(-1, entries[0]["hash"]))


def test_partial_export(log: AuditLog, clock: FrozenClock) -> None:
    entries = sealed(log, clock)
    for start in (2, None):
        report = verify_chain(entries[2:], keys_of(log), start_seq=start)
        assert report.ok and report.first_seq == 2 and report.count == 5 and report.complete
    # As a whole log, its start is missing.
    error = broken(verify_chain(entries[2:], keys_of(log)), AuditEntryMissing, 0)
    assert "entries 0..1" in error.reason
    broken(verify_chain(entries[2:], keys_of(log), start_seq=1), AuditEntryMissing, 1)
    with pytest.raises(ConfigError):
        verify_chain(entries, keys_of(log), start_seq=-1)


def test_delete_first_entry(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    error = broken(verify_chain(entries[1:], keys_of(log)), AuditEntryMissing, 0)
    assert "entry 0 is missing" in error.reason


def test_swap_first_two_entries(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[0], entries[1] = entries[1], entries[0]
    broken(verify_chain(entries, keys_of(log)), AuditEntryReordered, 0)
    # Also when the start is unknown: entry 0 after entry 1 is the moved one.
    broken(verify_chain(entries, keys_of(log), start_seq=None), AuditEntryReordered, 0)


def test_change_signature(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3]["sig"] = entries[2]["sig"]  # a genuine signature, of another entry
    broken(verify_chain(entries, keys_of(log)), AuditSignatureInvalid, 3)


def test_flip_a_signature_bit(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    raw = bytearray(b64url_decode(entries[4]["sig"]))
    raw[10] ^= 1
    entries[4]["sig"] = b64url_encode(bytes(raw))
    broken(verify_chain(entries, keys_of(log)), AuditSignatureInvalid, 4)


def es256_over_digest(key: ec.EllipticCurvePrivateKey, digest: bytes) -> str:
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
    return b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def resign(entry: JsonObject, key: ec.EllipticCurvePrivateKey, *, own_kid: bool) -> JsonObject:
    forged = build_entry(
        seq=entry["seq"],
        time_ms=parse_time(entry["time"]),
        stream=entry["stream"],
        kind=entry["kind"],
        actor="mallory",
        event=entry["event"],
        prev=entry["prev"],
        signing_key=key,
    ).to_json()
    if not own_kid:
        # Keep the broker's kid and hash: only the signature is the forger's.
        signed = {k: v for k, v in forged.items() if k not in ("hash", "sig")}
        signed["kid"] = entry["kid"]
        digest = hashlib.sha256(rfc8785.dumps(signed)).digest()
        forged = {**signed, "hash": digest.hex(), "sig": es256_over_digest(key, digest)}
    return forged


def test_signed_with_another_key_under_the_brokers_kid(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3] = resign(entries[3], ec.generate_private_key(ec.SECP256R1()), own_kid=False)
    broken(verify_chain(entries, keys_of(log)), AuditSignatureInvalid, 3)


def test_signed_with_another_key_under_its_own_kid(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    entries[3] = resign(entries[3], ec.generate_private_key(ec.SECP256R1()), own_kid=True)
    broken(verify_chain(entries, keys_of(log)), AuditUnknownKey, 3)


def test_whole_log_signed_by_another_key(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    other = ec.generate_private_key(ec.SECP256R1())
    broken(
        verify_chain(entries, {key_id(other.public_key()): other.public_key()}), AuditUnknownKey, 0
    )


def test_rotated_keys(store: Store, clock: FrozenClock) -> None:
    old, new = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    fill(AuditLog(store, old, clock), clock, 3)
    rotated = AuditLog(store, new, clock)
    fill(rotated, clock, 3)
    rotated.checkpoint(STREAM)
    entries = [e.to_json() for e in rotated.entries(STREAM)]
    both = {key_id(k.public_key()): k.public_key() for k in (old, new)}
    assert verify_chain(entries, both).ok
    broken(verify_chain(entries, rotated.public_keys()), AuditUnknownKey, 0)


def test_forked_chain(log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey) -> None:
    """Two authentic histories spliced together: every entry is signed, the link is not."""
    entries = fill(log, clock)
    other = fill(AuditLog(MemoryStore(), key, FrozenClock(T0 + 100)), FrozenClock(T0 + 100))
    spliced = entries[:3] + other[3:]
    broken(verify_chain(spliced, keys_of(log)), AuditChainForked, 3)


def test_first_entry_must_start_the_chain(key: ec.EllipticCurvePrivateKey) -> None:
    genesis = build_entry(
        seq=0,
        time_ms=0,
        stream=STREAM,
        kind="admin",
        actor=None,
        event={},
        prev="f" * 64,
        signing_key=key,
    )
    keys = {key_id(key.public_key()): key.public_key()}
    broken(verify_chain([genesis.to_json()], keys), AuditChainForked, 0)


def test_time_going_backwards(key: ec.EllipticCurvePrivateKey) -> None:
    """Signed by the broker key yet earlier than its predecessor (AuditLog never writes this;
    a second writer with the same key could)."""
    first = build_entry(
        seq=0,
        time_ms=5000,
        stream=STREAM,
        kind="admin",
        actor=None,
        event={},
        prev=GENESIS_PREV,
        signing_key=key,
    )
    second = build_entry(
        seq=1,
        time_ms=4999,
        stream=STREAM,
        kind="admin",
        actor=None,
        event={},
        prev=first.hash,
        signing_key=key,
    )
    keys = {key_id(key.public_key()): key.public_key()}
    broken(verify_chain([first.to_json(), second.to_json()], keys), AuditTimeReversed, 1)


def test_entry_of_another_stream(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    log = AuditLog(MemoryStore(), key, clock)
    entries = fill(log, clock, 3)
    foreign = build_entry(
        seq=3,
        time_ms=parse_time(entries[2]["time"]),
        stream="beta",
        kind="release",
        actor=None,
        event={"resource": "beta/secret"},
        prev=entries[2]["hash"],
        signing_key=key,
    )
    broken(verify_chain([*entries, foreign.to_json()], keys_of(log)), AuditWrongStream, 3)
    broken(verify_chain(entries, keys_of(log), stream="beta"), AuditWrongStream, 0)
    with pytest.raises(AuditStreamInvalid):
        verify_chain(entries, keys_of(log), stream="no/slash")


def test_another_tenants_log_copied_in(log: AuditLog, store: Store, clock: FrozenClock) -> None:
    """Entries signed by the same broker key for tenant beta, copied under acme's namespace."""
    fill(log, clock, 3, stream="beta")
    for seq, raw in enumerate(exported(log, "beta").splitlines()):
        store.set("audit/acme", f"{seq:012d}", raw)
    broken(log.verify_stream(STREAM), AuditWrongStream, 0)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e.update(extra=1),
        lambda e: e.pop("kid"),
        lambda e: e.update(seq=True),
        lambda e: e.update(kind="other"),
        lambda e: e.update(event=[1]),
        lambda e: e.update(prev="A" * 64),
        lambda e: e.update(sig="AAAA"),
        lambda e: e.update(time="yesterday"),
        lambda e: e.update(actor=5),
        lambda e: e.update(stream="no/slash"),
        lambda e: e.update(event={"big": 2**60}),
    ],
)
def test_malformed_entry(
    log: AuditLog, clock: FrozenClock, mutate: Callable[[JsonObject], object]
) -> None:
    entries = fill(log, clock)
    mutate(entries[3])
    broken(verify_chain(entries, keys_of(log)), AuditEntryMalformed, 3)


def test_not_an_object(log: AuditLog, clock: FrozenClock) -> None:
    entries: list[object] = list(fill(log, clock))
    entries[3] = "entry"
    broken(verify_chain(entries, keys_of(log)), AuditEntryMalformed, 3)  # type: ignore[arg-type]


def test_verify_refuses_non_p256_trusted_keys(log: AuditLog, clock: FrozenClock) -> None:
    entries = fill(log, clock)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ConfigError):
        verify_chain(entries, {"k": p384})


# --- tampering with the store itself --------------------------------------------------------


def test_tampered_store(log: AuditLog, store: Store, clock: FrozenClock) -> None:
    fill(log, clock)
    ns, now = "audit/acme", clock.now()
    original = store.get(ns, "000000000003", now=now)
    assert original is not None
    obj = json.loads(original)
    obj["event"]["resource"] = "r/x"
    store.set(ns, "000000000003", rfc8785.dumps(obj))
    broken(log.verify_stream(STREAM), AuditEntryEdited, 3)
    store.set(ns, "000000000003", b"{not json")
    broken(log.verify_stream(STREAM), AuditEntryMalformed, 3)
    with pytest.raises(AuditEntryMalformed):
        log.entries(STREAM)
    store.delete(ns, "000000000003")
    broken(log.verify_stream(STREAM), AuditEntryMissing, 3)
    store.set(ns, "000000000003", original)
    assert log.verify_stream(STREAM).ok
    # Values swapped between keys: key order is chain order, so this is a reordering.
    four = store.get(ns, "000000000004", now=now)
    assert four is not None
    store.set(ns, "000000000004", original)
    store.set(ns, "000000000003", four)
    broken(log.verify_stream(STREAM), AuditEntryReordered, 3)


def test_tail_deleted_in_the_store(
    log: AuditLog, store: Store, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    """Deleting the newest entries leaves a valid chain; the anchor recorded earlier tells."""
    fill(log, clock)
    anchor = log.head(STREAM)
    assert anchor is not None
    store.delete("audit/acme", "000000000005")
    assert log.verify_stream(STREAM).ok
    broken(log.verify_stream(STREAM, expected_head=anchor), AuditTruncated, 5)
    # A broker started afterwards re-uses seq 5: a different entry 5 than the anchor's.
    restarted = AuditLog(store, key, clock)
    restarted.append(STREAM, "admin", "a", {"after": "deletion"})
    broken(log.verify_stream(STREAM, expected_head=anchor), AuditAnchorMismatch, 5)


def test_tail_deleted_under_a_running_log(log: AuditLog, store: Store, clock: FrozenClock) -> None:
    """The running log keeps its head in memory: it goes on after the entry it wrote, so the
    deleted one shows as a gap, whatever the anchor."""
    fill(log, clock)
    store.delete("audit/acme", "000000000005")
    assert log.append(STREAM, "admin", "a", {"after": "deletion"}).seq == 6
    broken(log.verify_stream(STREAM), AuditEntryMissing, 5)


# --- export and JSON Lines ------------------------------------------------------------------


def exported(log: AuditLog, stream: str = STREAM) -> bytes:
    buf = io.BytesIO()
    log.export(stream, buf)
    return buf.getvalue()


def test_export_is_json_lines_of_the_stored_entries(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock)
    data = exported(log)
    lines = data.split(b"\n")
    # The six entries and the checkpoint the export appended first.
    assert lines[-1] == b"" and len(lines) == 8
    assert lines[:-1] == [e.to_bytes() for e in log.entries(STREAM)]
    assert [AuditEntry.from_bytes(line).seq for line in lines[:-1]] == list(range(7))
    head = log.head(STREAM)
    report = verify_jsonl(io.BytesIO(data), keys_of(log), expected_head=head)
    assert report.ok and report.count == 7 and report.complete
    buf = io.BytesIO()
    assert log.export(STREAM, buf, since_seq=4) == 4  # 4, 5, the first checkpoint, its own
    partial = verify_jsonl(io.BytesIO(buf.getvalue()), keys_of(log), start_seq=4)
    assert partial.ok and partial.checkpoints == 2 and partial.head == log.head(STREAM)
    # Without a checkpoint (the broker never asks for this) the stored entries only.
    buf = io.BytesIO()
    assert log.export(STREAM, buf, checkpoint=False) == 8


def lines_of(log: AuditLog, clock: FrozenClock) -> list[bytes]:
    fill(log, clock)
    return exported(log).split(b"\n")[:-1]


def verify_lines(lines: list[bytes], log: AuditLog, tail: bytes = b"\n") -> VerifyReport:
    return verify_jsonl(io.BytesIO(b"\n".join(lines) + tail), keys_of(log))


def test_jsonl_line_not_json(log: AuditLog, clock: FrozenClock) -> None:
    lines = lines_of(log, clock)
    lines[3] = lines[3][:-5]
    error = broken(verify_lines(lines, log), AuditEntryMalformed, 3)
    assert "line 4" in error.reason


def test_jsonl_earlier_break_wins_over_a_later_bad_line(log: AuditLog, clock: FrozenClock) -> None:
    lines = lines_of(log, clock)
    del lines[1]
    lines[3] = b"garbage"
    broken(verify_lines(lines, log), AuditEntryMissing, 1)


def test_jsonl_duplicate_member(log: AuditLog, clock: FrozenClock) -> None:
    """Two parsers could read two different entries from one line: refused."""
    lines = lines_of(log, clock)
    lines[3] = lines[3][:-1] + b',"actor":"mallory"}'
    error = broken(verify_lines(lines, log), AuditEntryMalformed, 3)
    assert "duplicate" in error.reason


def test_jsonl_blank_lines(log: AuditLog, clock: FrozenClock) -> None:
    lines = lines_of(log, clock)
    assert verify_lines(lines, log, tail=b"\n\n\n").ok
    assert verify_lines(lines, log, tail=b"").ok
    lines.insert(3, b"")
    error = broken(verify_lines(lines, log), AuditEntryMalformed, 3)
    assert "line 4 is empty" in error.reason


def test_jsonl_overlong_line(log: AuditLog, clock: FrozenClock) -> None:
    lines = lines_of(log, clock)
    lines[2] = b" " * (1024 * 1024 + 10)
    error = broken(verify_lines(lines, log), AuditEntryMalformed, 2)
    assert "longer than" in error.reason


def test_jsonl_not_utf8(log: AuditLog, clock: FrozenClock) -> None:
    lines = lines_of(log, clock)
    lines[0] = b"\xff\xfe"
    broken(verify_lines(lines, log), AuditEntryMalformed, 0)


def test_parse_head() -> None:
    digest = "AB" * 32
    assert parse_head(f"41:{digest}") == (41, digest.lower())
    for bad in ("41", f"-1:{digest}", f"x:{digest}", "41:abc", f"41:{digest}0", f":{digest}"):
        with pytest.raises(ConfigError):
            parse_head(bad)
