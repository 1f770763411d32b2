"""The dashboard's audit digest: what it counts comes from verified entries only, and each way
a stored stream can be damaged stops it at the right entry (edited, deleted, re-signed by
another key, replaced after it was verified). A real audit log on the in-memory store."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import FrozenClock
from custodes.audit.entry import build_entry
from custodes.audit.log import AuditLog
from custodes.storage.memory import MemoryStore
from custodes.ui import digest as digest_module
from custodes.ui.digest import Digests

STREAM = "bank"


SIGNING_KEY = ec.generate_private_key(ec.SECP256R1())


def make_log() -> tuple[AuditLog, MemoryStore, FrozenClock]:
    store = MemoryStore()
    clock = FrozenClock(time.time())
    return AuditLog(store, SIGNING_KEY, clock), store, clock


def history(log: AuditLog, n: int) -> None:
    for i in range(n):
        token = f"tok{i}"
        log.append(
            STREAM,
            "attestation",
            None,
            {
                "tee": "snp" if i % 2 else "tdx",
                "status": "affirming",
                "token_id": token,
                "correlation_id": token,
            },
        )
        log.append(STREAM, "release", None, {"resource": "default/key/a", "token_id": token})


def key(seq: int) -> str:
    return f"{seq:012d}"


def test_counts_come_from_verified_entries() -> None:
    log, _, _ = make_log()
    history(log, 5)
    log.append(STREAM, "admin", "alice", {"action": "resource.put", "resource": "default/key/a"})
    log.append(STREAM, "admin", "alice", {"action": "reference-value.register", "ids": ["svn"]})
    log.append(
        STREAM,
        "admin",
        "alice",
        {"action": "resource-policy.set", "policy_id": "resource-policy", "version": 2},
    )
    d = Digests(log).refresh(STREAM)
    status = d.status()
    assert status.verified == 13 and status.broken_at is None
    assert d.kinds["attestation"] == 5 and d.kinds["release"] == 5
    assert dict(d.tees) == {"snp": 2, "tdx": 3}
    releases = [r for r in d.records if str(r.kind) == "release"]
    assert {r.tee for r in releases} == {"snp", "tdx"}  # joined through the token id
    assert d.resource_puts["default/key/a"] == 1
    assert d.rv_changes["svn"].actor == "alice"
    assert d.policy_versions[("resource", "resource-policy", 2)].actor == "alice"
    assert sum(c[0] for c in d.minutes.values()) == 5


def test_new_entries_are_verified_from_the_last_one() -> None:
    log, _, _ = make_log()
    history(log, 2)
    digests = Digests(log)
    assert digests.refresh(STREAM).status().verified == 4
    history(log, 1)
    assert digests.refresh(STREAM).status().verified == 6


def test_an_edited_entry_stops_the_digest_there() -> None:
    log, store, clock = make_log()
    history(log, 4)
    raw = store.get(f"audit/{STREAM}", key(5), now=clock.now())
    assert raw is not None
    edited = json.loads(raw)
    edited["event"]["resource"] = "default/key/other"
    store.set(f"audit/{STREAM}", key(5), json.dumps(edited).encode())
    d = Digests(log).refresh(STREAM)
    status = d.status()
    assert status.broken_at == 5 and status.verified == 5
    assert "hash mismatch" in (status.broken_reason or "")
    assert max(r.seq for r in d.records) == 4  # nothing after the break


def test_a_deleted_entry_stops_the_digest_there() -> None:
    log, store, _ = make_log()
    history(log, 3)
    store.delete(f"audit/{STREAM}", key(2))
    status = Digests(log).refresh(STREAM).status()
    assert status.broken_at == 2 and status.verified == 2


def test_an_entry_signed_by_another_key_is_refused() -> None:
    log, store, clock = make_log()
    history(log, 2)
    head = log.entry(STREAM, 3)
    assert head is not None
    forged = build_entry(
        seq=4,
        time_ms=head.time_ms,
        stream=STREAM,
        kind="release",
        actor=None,
        event={"resource": "default/key/a", "token_id": "x"},
        prev=head.hash,
        signing_key=ec.generate_private_key(ec.SECP256R1()),
    )
    store.insert(f"audit/{STREAM}", key(4), forged.to_bytes(), now=clock.now())
    store.set("audit-head", STREAM, b"4")
    status = Digests(log).refresh(STREAM).status()
    assert status.broken_at == 4 and "unknown key" in (status.broken_reason or "")


def test_an_entry_replaced_after_verification_breaks_the_next_link() -> None:
    log, store, clock = make_log()
    history(log, 2)
    digests = Digests(log)
    assert digests.refresh(STREAM).status().verified == 4
    # The last verified entry is replaced by a validly signed other one (the key's holder
    # rewriting history), then a new entry chains to the replacement.
    three = log.entry(STREAM, 3)
    two = log.entry(STREAM, 2)
    assert three is not None and two is not None
    store.delete(f"audit/{STREAM}", key(3))
    replaced = build_entry(
        seq=3,
        time_ms=three.time_ms,
        stream=STREAM,
        kind="release",
        actor=None,
        event={"resource": "default/key/stolen", "token_id": "tok1"},
        prev=two.hash,
        signing_key=SIGNING_KEY,  # the log's own key: a rewrite by the key's holder
    )
    store.insert(f"audit/{STREAM}", key(3), replaced.to_bytes(), now=clock.now())
    # Appended by a broker started after the rewrite: a running log keeps its head in memory
    # and would chain to the entry it wrote itself.
    restarted = AuditLog(store, SIGNING_KEY, clock)
    restarted.append(STREAM, "release", None, {"resource": "default/key/a", "token_id": "tok1"})
    status = digests.refresh(STREAM).status()
    assert status.broken_at is not None and status.verified == 4


def test_a_long_backlog_is_verified_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_module, "INLINE_ENTRIES", 10)
    monkeypatch.setattr(digest_module, "BATCH_ENTRIES", 7)
    log, _, _ = make_log()
    history(log, 40)
    digests = Digests(log)
    first = digests.refresh(STREAM)
    assert first.worker is not None  # too many to verify while the page waits
    digests.wait(STREAM, timeout=30)
    assert first.status().verified == 80
    assert not first.status().catching_up
    assert first.kinds["release"] == 40
