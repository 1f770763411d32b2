"""Signed audit checkpoints: what an export ends with, what the log adds periodically, and
every way a verifier refuses a stream whose end is not proven (each its own test)."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.clock import FrozenClock
from custodes.audit.checkpoint import (
    CHECKPOINT_MEMBERS,
    Checkpoint,
    CheckpointPolicy,
    CheckpointReason,
    parse_checkpoint,
)
from custodes.audit.entry import GENESIS_PREV, AuditEntry, AuditKind, build_entry
from custodes.audit.errors import (
    AuditChainError,
    AuditCheckpointForeign,
    AuditCheckpointInvalid,
    AuditCheckpointMismatch,
    AuditEmpty,
    AuditEntryEdited,
    AuditSignatureInvalid,
    AuditTailUncovered,
    AuditWrongStream,
)
from custodes.audit.log import AuditLog
from custodes.audit.verify import VerifyReport, verify_chain, verify_jsonl
from custodes.errors import ConfigError, StorageError
from custodes.kbs.config import load_config
from custodes.storage.base import Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore
from custodes.types.json import JsonObject

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


def fill(log: AuditLog, clock: FrozenClock, n: int = 6, stream: str = STREAM) -> None:
    for i in range(n):
        log.append(stream, AuditKind.ADMIN, f"admin-{i}", {"n": i})
        clock.advance(1.0)


def export_lines(log: AuditLog, stream: str = STREAM, actor: str | None = None) -> list[bytes]:
    buf = io.BytesIO()
    log.export(stream, buf, actor=actor)
    return buf.getvalue().splitlines()


def verify_lines(log: AuditLog, lines: list[bytes], stream: str | None = None) -> VerifyReport:
    data = b"".join(line + b"\n" for line in lines)
    return verify_jsonl(io.BytesIO(data), log.public_keys(), stream=stream)


def objects(lines: list[bytes]) -> list[JsonObject]:
    return [json.loads(line) for line in lines]


def broken(report: VerifyReport, cls: type[AuditChainError], seq: int) -> AuditChainError:
    assert not report.ok
    assert type(report.error) is cls, report.error
    assert report.first_bad_seq == seq
    assert report.error is not None
    return report.error


def forged_checkpoint(
    key: ec.EllipticCurvePrivateKey,
    after: JsonObject,
    *,
    stream: str = STREAM,
    origin: str = STREAM,
    size: int | None = None,
    head: str | None = None,
    event: JsonObject | None = None,
) -> JsonObject:
    """A checkpoint entry after ``after``, signed by the real key (a buggy or dishonest
    broker): only what it claims can be wrong, never its signature."""
    body = event
    if body is None:
        body = Checkpoint(
            origin=origin,
            size=after["seq"] + 1 if size is None else size,
            head=after["hash"] if head is None else head,
            reason=CheckpointReason.EXPORT,
        ).to_event()
    return build_entry(
        seq=after["seq"] + 1,
        time_ms=int(T0 * 1000) + 100_000,
        stream=stream,
        kind=AuditKind.CHECKPOINT,
        actor=None,
        event=body,
        prev=after["hash"],
        signing_key=key,
    ).to_json()


# --- what an export ends with ---------------------------------------------------------------


def test_export_ends_with_a_checkpoint_of_its_own_size_and_head(
    log: AuditLog, clock: FrozenClock
) -> None:
    fill(log, clock)
    before = log.head(STREAM)
    assert before is not None
    lines = export_lines(log, actor="auditor-bob")
    last = AuditEntry.from_bytes(lines[-1])
    assert len(lines) == 7 and last.seq == 6 and last.kind is AuditKind.CHECKPOINT
    assert last.event == {"origin": STREAM, "size": 6, "head": before[1], "reason": "export"}
    assert last.actor == "auditor-bob" and last.prev == before[1]
    report = verify_lines(log, lines, stream=STREAM)
    assert report.ok and report.complete and report.count == 7 and report.checkpoints == 1
    assert report.checkpoint == last
    # The checkpoint is in the log itself: the next export covers it, and ends with its own.
    again = export_lines(log)
    assert again[:7] == lines and len(again) == 8
    assert verify_lines(log, again).ok


def test_export_of_an_empty_stream_is_a_signed_size_zero_checkpoint(log: AuditLog) -> None:
    lines = export_lines(log)
    assert len(lines) == 1
    only = AuditEntry.from_bytes(lines[0])
    assert only.seq == 0 and only.prev == GENESIS_PREV
    assert only.event == {"origin": STREAM, "size": 0, "head": GENESIS_PREV, "reason": "export"}
    report = verify_lines(log, lines)
    assert report.ok and report.complete and report.count == 1


class RivalAppendsWhileListing(MemoryStore):
    """Another replica appends at the moment the exporter lists the stream: the listing then
    holds an entry after the export's checkpoint."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: AuditLog | None = None

    def list(self, namespace: str, *, now: float) -> list[str]:
        rival, self.rival = self.rival, None
        if rival is not None and namespace == f"audit/{STREAM}":
            rival.append(STREAM, AuditKind.RELEASE, "guest", {"late": True})
        return super().list(namespace, now=now)


def test_export_stops_at_its_checkpoint_whatever_is_appended_meanwhile(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    store = RivalAppendsWhileListing()
    exporter = AuditLog(store, key, clock)
    fill(exporter, clock, 3)
    store.rival = AuditLog(store, key, clock)
    lines = export_lines(exporter)
    assert [AuditEntry.from_bytes(line).seq for line in lines] == [0, 1, 2, 3]
    assert AuditEntry.from_bytes(lines[-1]).kind is AuditKind.CHECKPOINT
    assert verify_lines(exporter, lines).complete
    # The late entry is in the log, after the checkpoint.
    assert [e.kind for e in exporter.entries(STREAM)][-2:] == [
        AuditKind.CHECKPOINT,
        AuditKind.RELEASE,
    ]


# --- refusals: nothing, no checkpoint, a tail after it --------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n", b"\n\n\n"])
def test_empty_stream_refused(log: AuditLog, data: bytes) -> None:
    for required in (True, False):
        report = verify_jsonl(io.BytesIO(data), log.public_keys(), require_checkpoint=required)
        error = broken(report, AuditEmpty, 0)
        assert "proves nothing" in error.reason


def test_checkpointless_stream_refused(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    error = broken(verify_chain(entries, log.public_keys()), AuditTailUncovered, 6)
    assert "no checkpoint" in error.reason and "entry 5" in error.reason
    # Every entry was verified before the end was judged.
    report = verify_chain(entries, log.public_keys())
    assert report.count == 6 and report.head == (5, entries[5]["hash"])


def test_tail_past_the_last_checkpoint_refused(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock, 3)
    log.checkpoint(STREAM)
    fill(log, clock, 2)
    entries = [e.to_json() for e in log.entries(STREAM)]
    error = broken(verify_chain(entries, log.public_keys()), AuditTailUncovered, 6)
    assert "entries 4..5 come after the last checkpoint (entry 3)" in error.reason
    error = broken(verify_chain(entries[:5], log.public_keys()), AuditTailUncovered, 5)
    assert "entry 4 comes after" in error.reason
    allowed = verify_chain(entries, log.public_keys(), require_checkpoint=False)
    assert allowed.ok and not allowed.complete and allowed.checkpoints == 1


def test_every_truncation_of_an_export_is_refused(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock, 5)
    lines = export_lines(log)
    assert verify_lines(log, lines).ok
    for cut in range(1, len(lines)):
        report = verify_lines(log, lines[:cut])
        broken(report, AuditTailUncovered, cut)


def test_truncated_to_an_earlier_checkpoint_shows_that_checkpoint(
    log: AuditLog, clock: FrozenClock
) -> None:
    """Cut back exactly to an earlier checkpoint, a stream is complete as of that checkpoint:
    the verifier reports which one (its time), for the auditor to compare with the export's."""
    fill(log, clock, 2)
    early = log.checkpoint(STREAM)
    clock.advance(3600)
    fill(log, clock, 2)
    lines = export_lines(log)
    report = verify_lines(log, lines[: early.seq + 1])
    assert report.ok and report.checkpoint == early
    full = verify_lines(log, lines)
    assert full.checkpoint is not None and full.checkpoint.time > early.time


# --- refusals: the checkpoint itself --------------------------------------------------------


def test_checkpoint_with_a_wrong_signature_refused(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock)
    entries = objects(export_lines(log))
    raw = bytearray(b64url_decode(entries[6]["sig"]))
    raw[5] ^= 1
    entries[6]["sig"] = b64url_encode(bytes(raw))
    broken(verify_chain(entries, log.public_keys()), AuditSignatureInvalid, 6)


def test_checkpoint_edited_after_signing_refused(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock)
    entries = objects(export_lines(log))
    entries[6]["event"]["size"] = 99
    broken(verify_chain(entries, log.public_keys()), AuditEntryEdited, 6)


def test_checkpoint_with_a_wrong_size_refused(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    for size in (5, 7, 0):
        forged = forged_checkpoint(key, entries[5], size=size)
        error = broken(
            verify_chain([*entries, forged], log.public_keys()), AuditCheckpointMismatch, 6
        )
        assert f"claims {size} entries but 6" in error.reason


def test_checkpoint_with_a_wrong_head_refused(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    forged = forged_checkpoint(key, entries[5], head=entries[4]["hash"])
    error = broken(verify_chain([*entries, forged], log.public_keys()), AuditCheckpointMismatch, 6)
    assert "head is not the hash of entry 5" in error.reason


def test_checkpoint_naming_another_tenant_refused(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    forged = forged_checkpoint(key, entries[5], origin="beta")
    error = broken(verify_chain([*entries, forged], log.public_keys()), AuditCheckpointForeign, 6)
    assert "'beta' inside stream 'acme'" in error.reason


def test_checkpoint_of_another_tenants_stream_refused(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey
) -> None:
    """beta's genuine checkpoint (same broker key) appended to acme's entries, and beta's whole
    genuine export offered as acme's."""
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    theirs = forged_checkpoint(key, entries[5], stream="beta", origin="beta")
    broken(verify_chain([*entries, theirs], log.public_keys()), AuditWrongStream, 6)
    fill(log, clock, 3, stream="beta")
    beta = export_lines(log, "beta")
    assert verify_lines(log, beta).ok
    broken(verify_lines(log, beta, stream=STREAM), AuditWrongStream, 0)


@pytest.mark.parametrize(
    "event",
    [
        {"origin": STREAM, "size": 6, "head": "0" * 64},
        {"origin": STREAM, "size": 6, "head": "0" * 64, "reason": "export", "extra": 1},
        {"origin": 7, "size": 6, "head": "0" * 64, "reason": "export"},
        {"origin": STREAM, "size": True, "head": "0" * 64, "reason": "export"},
        {"origin": STREAM, "size": -1, "head": "0" * 64, "reason": "export"},
        {"origin": STREAM, "size": "6", "head": "0" * 64, "reason": "export"},
        {"origin": STREAM, "size": 6, "head": "AB" * 32, "reason": "export"},
        {"origin": STREAM, "size": 6, "head": "0" * 63, "reason": "export"},
        {"origin": STREAM, "size": 6, "head": "0" * 64, "reason": "whim"},
    ],
)
def test_malformed_checkpoint_refused(
    log: AuditLog, clock: FrozenClock, key: ec.EllipticCurvePrivateKey, event: JsonObject
) -> None:
    fill(log, clock)
    entries = [e.to_json() for e in log.entries(STREAM)]
    forged = forged_checkpoint(key, entries[5], event=event)
    error = broken(verify_chain([*entries, forged], log.public_keys()), AuditCheckpointInvalid, 6)
    assert error.reason.startswith("malformed checkpoint")


def test_parse_checkpoint_order_of_checks() -> None:
    """Shape before origin before size before head: each error names one thing."""
    good = {"origin": STREAM, "size": 3, "head": "a" * 64, "reason": "time"}
    assert parse_checkpoint(seq=3, stream=STREAM, prev="a" * 64, event=good) == Checkpoint(
        STREAM, 3, "a" * 64, CheckpointReason.TIME
    )
    assert set(good) == CHECKPOINT_MEMBERS
    with pytest.raises(AuditCheckpointForeign):
        parse_checkpoint(seq=4, stream="beta", prev="b" * 64, event=good)
    with pytest.raises(AuditCheckpointMismatch, match="claims 3"):
        parse_checkpoint(seq=4, stream=STREAM, prev="b" * 64, event=good)
    with pytest.raises(AuditCheckpointMismatch, match="head"):
        parse_checkpoint(seq=3, stream=STREAM, prev="b" * 64, event=good)


# --- periodic checkpoints -------------------------------------------------------------------


def checkpoints_in(log: AuditLog, stream: str = STREAM) -> list[AuditEntry]:
    return [e for e in log.entries(stream) if e.kind is AuditKind.CHECKPOINT]


def test_checkpoint_every_n_entries(
    store: Store, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    log = AuditLog(store, key, clock, checkpoints=CheckpointPolicy(every_entries=4))
    fill(log, clock, 10)
    found = checkpoints_in(log)
    assert [c.seq for c in found] == [4, 8, 12]
    assert all(c.event["reason"] == "entries" and c.actor is None for c in found)
    report = log.verify_stream(STREAM, require_checkpoint=True)
    assert report.ok and report.complete and report.checkpoints == 3
    # One signature per N entries: 10 entries, 3 checkpoints, nothing else.
    assert len(log.entries(STREAM)) == 13


def test_checkpoint_every_t_seconds_only_when_something_was_appended(
    store: Store, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    log = AuditLog(store, key, clock, checkpoints=CheckpointPolicy(every_seconds=60))
    log.append(STREAM, "admin", "a", {})  # the clock of this process starts here
    clock.advance(59)
    log.append(STREAM, "admin", "a", {})
    assert checkpoints_in(log) == []
    clock.advance(1)
    log.append(STREAM, "admin", "a", {})
    assert [(c.seq, c.event["reason"]) for c in checkpoints_in(log)] == [(3, "time")]
    clock.advance(3600)  # idle: no checkpoint without an append
    assert len(log.entries(STREAM)) == 4
    log.append(STREAM, "admin", "a", {})
    assert [c.seq for c in checkpoints_in(log)] == [3, 5]
    assert log.verify_stream(STREAM, require_checkpoint=True).ok


def test_an_export_restarts_the_time_rule(
    store: Store, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    log = AuditLog(store, key, clock, checkpoints=CheckpointPolicy(every_seconds=60))
    log.append(STREAM, "admin", "a", {})
    clock.advance(50)
    export_lines(log)
    clock.advance(50)
    log.append(STREAM, "admin", "a", {})
    assert [c.event["reason"] for c in checkpoints_in(log)] == ["export"]


def test_checkpoints_off_by_policy(log: AuditLog, clock: FrozenClock) -> None:
    fill(log, clock, 30)
    clock.advance(10**6)
    fill(log, clock, 1)
    assert checkpoints_in(log) == []


class CheckpointRaceStore(MemoryStore):
    """Just before our periodic checkpoint is inserted, a rival replica inserts one at the same
    place (the race two replicas running the same rule can have)."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: AuditLog | None = None

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        rival = self.rival
        if rival is not None and b'"kind":"checkpoint"' in value:
            self.rival = None
            rival.checkpoint(namespace.removeprefix("audit/"), reason=CheckpointReason.ENTRIES)
        return super().insert(namespace, key, value, now=now, expires_at=expires_at)


def test_a_periodic_checkpoint_is_not_doubled_by_a_race(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    store = CheckpointRaceStore()
    log = AuditLog(store, key, clock, checkpoints=CheckpointPolicy(every_entries=3))
    fill(log, clock, 2)
    store.rival = AuditLog(store, key, clock)
    log.append(STREAM, "admin", "a", {})
    assert [e.kind for e in log.entries(STREAM)] == [AuditKind.ADMIN] * 3 + [AuditKind.CHECKPOINT]
    assert log.verify_stream(STREAM, require_checkpoint=True).ok


class CheckpointsFailStore(MemoryStore):
    """A database that fails exactly when a checkpoint is written."""

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        if b'"kind":"checkpoint"' in value:
            raise StorageError("database is gone")
        return super().insert(namespace, key, value, now=now, expires_at=expires_at)


def test_a_failed_periodic_checkpoint_does_not_fail_the_append(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry is stored: refusing its caller now would refuse an action already on record."""
    log = AuditLog(CheckpointsFailStore(), key, clock, checkpoints=CheckpointPolicy(1))
    with caplog.at_level(logging.WARNING, logger="custodes.audit.log"):
        entry = log.append(STREAM, "admin", "a", {"n": 1})
    assert log.entries(STREAM) == [entry]
    assert "periodic checkpoint not written: database is gone" in caplog.text
    # An export cannot end without its checkpoint: it fails rather than go out unsigned.
    with pytest.raises(StorageError):
        export_lines(log)


def test_periodic_checkpoints_from_concurrent_replicas(
    tmp_path: Path, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    """Six brokers on one SQLite file, each with the rule, appending at once: one chain, every
    checkpoint true to the entries before it, and an export from any of them verifies."""
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path) for _ in range(6)]
    policy = CheckpointPolicy(every_entries=5)
    logs = [AuditLog(s, key, clock, checkpoints=policy) for s in stores]
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(8):
                logs[t].append(STREAM, "release", f"t{t}", {"thread": t, "i": i})
                if i == 4:
                    export_lines(logs[t])
        except BaseException as e:
            errors.append(e)

    try:
        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        entries = logs[0].entries(STREAM)
        assert sum(e.kind is not AuditKind.CHECKPOINT for e in entries) == 48
        assert sum(e.event.get("reason") == "export" for e in entries) == 6
        lines = export_lines(logs[3])
        report = verify_lines(logs[3], lines)
        assert report.ok and report.complete and report.checkpoints >= 7
    finally:
        for s in stores:
            s.close()


# --- the policy and its configuration -------------------------------------------------------


def test_policy_due() -> None:
    policy = CheckpointPolicy(every_entries=10, every_seconds=60)
    assert policy.due(seq=9, now_ms=0, last_ms=0) is CheckpointReason.ENTRIES
    assert policy.due(seq=10, now_ms=59_999, last_ms=0) is None
    assert policy.due(seq=10, now_ms=60_000, last_ms=0) is CheckpointReason.TIME
    assert CheckpointPolicy().due(seq=9, now_ms=10**12, last_ms=0) is None


@pytest.mark.parametrize(
    ("entries", "seconds"), [(-1, 0), (0, -1), (10**9 + 1, 0), (0, 400 * 24 * 3600), (True, 0)]
)
def test_policy_refuses_bad_values(entries: int, seconds: int) -> None:
    with pytest.raises(ConfigError, match=r"audit\.checkpoint_every_"):
        CheckpointPolicy(entries, seconds)


def test_config_section(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    assert load_config(None).audit.checkpoint_policy() == CheckpointPolicy(1000, 3600)
    path.write_text("[audit]\ncheckpoint_every_entries = 50\ncheckpoint_every_seconds = 0\n")
    assert load_config(path).audit.checkpoint_policy() == CheckpointPolicy(50, 0)
    path.write_text("[audit]\ncheckpoint_every_entries = -5\n")
    with pytest.raises(ConfigError, match=r"audit\.checkpoint_every_entries"):
        load_config(path)
    path.write_text('[audit]\ncheckpoint_every_seconds = "1h"\n')
    with pytest.raises(ConfigError, match=r"audit\.checkpoint_every_seconds"):
        load_config(path)
