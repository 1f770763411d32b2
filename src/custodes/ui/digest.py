"""What the dashboard knows about one audit stream: a verified, incrementally kept summary.

Every page of the dashboard reads the tenant's audit stream (handshakes, releases, denials,
who changed which policy and reference value). Reading and verifying 100,000 entries per page
would take seconds, so each broker process keeps, per stream, a :class:`StreamDigest`: the
entries it has **verified** (hash, signature, link, time order: :func:`verify_chain`, in
batches that start at the last verified entry, so every link is checked) and, from them only,
counters per minute, the TEEs seen, a small record per attestation, release and denial, and
the provenance of policy versions and reference values. A page asks for the entries appended
since its last visit: a few are verified on the spot; a large backlog (a broker restarted
with a long log) is verified by one background thread while pages show how far it got.

Nothing unverified is ever shown as fact: an entry that fails verification stops the digest
there, and every page says "audit chain broken at entry N". The digest is derived data of
this process (replicas each keep their own) and holds no secret: audit events never contain
secret material.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from custodes.audit.entry import AuditEntry, AuditKind
from custodes.audit.log import AuditLog
from custodes.audit.verify import verify_chain
from custodes.types.json import Json, JsonObject

# Verified while the page waits; a longer backlog goes to the background thread.
INLINE_ENTRIES: Final = 2_000
BATCH_ENTRIES: Final = 250
# Records kept for the list views; older ones are summarised in the counters only.
MAX_RECORDS: Final = 250_000
MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class Record:
    """One attestation, release or denial, as the list views show it."""

    seq: int
    time_ms: int
    kind: AuditKind
    tee: str
    result: str  # attestation status, "released" or "denied"
    resource: str
    token_id: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Change:
    """Who made a change, and when (provenance of a policy version or reference value)."""

    actor: str
    time: str
    seq: int


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """How far the stream is verified, and what its last checkpoint covers."""

    verified: int  # entries verified good (0..verified-1)
    head: int | None  # the stream's last seq when last looked at
    checkpoint_seq: int | None
    checkpoint_time: str | None
    checkpoint_reason: str | None
    checkpoints: int
    broken_at: int | None
    broken_reason: str | None
    catching_up: bool

    @property
    def uncovered(self) -> int:
        """Verified entries after the last checkpoint (not yet covered by a signed size)."""
        if self.checkpoint_seq is None:
            return self.verified
        return max(self.verified - self.checkpoint_seq - 1, 0)


@dataclass
class StreamDigest:
    stream: str
    last: AuditEntry | None = None
    head: int | None = None
    broken_at: int | None = None
    broken_reason: str | None = None
    checkpoint: AuditEntry | None = None
    checkpoints: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    # minute (ms // MINUTE_MS) -> [attestations, releases, denials, refused attestations]
    minutes: dict[int, list[int]] = field(default_factory=dict)
    tees: Counter[str] = field(default_factory=Counter)
    tee_last: dict[str, str] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    token_tee: dict[str, str] = field(default_factory=dict)
    last_release: dict[str, str] = field(default_factory=dict)
    resource_puts: Counter[str] = field(default_factory=Counter)
    policy_versions: dict[tuple[str, str, int], Change] = field(default_factory=dict)
    rv_changes: dict[str, Change] = field(default_factory=dict)
    # (kind, policy id) -> [(who and when, version activated)], oldest first
    activations: dict[tuple[str, str], list[tuple[Change, int]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    worker: threading.Thread | None = None

    @property
    def verified(self) -> int:
        return 0 if self.last is None else self.last.seq + 1

    def status(self) -> ChainStatus:
        cp = self.checkpoint
        return ChainStatus(
            verified=self.verified,
            head=self.head,
            checkpoint_seq=None if cp is None else cp.seq,
            checkpoint_time=None if cp is None else cp.time,
            checkpoint_reason=None if cp is None else _str(cp.event.get("reason")),
            checkpoints=self.checkpoints,
            broken_at=self.broken_at,
            broken_reason=self.broken_reason,
            catching_up=self.worker is not None and self.worker.is_alive(),
        )

    # -- verification --

    def pending(self) -> int:
        if self.broken_at is not None or self.head is None:
            return 0
        return max(self.head + 1 - self.verified, 0)

    def advance(self, log: AuditLog, keys: dict[str, ec.EllipticCurvePublicKey], n: int) -> int:
        """Read and verify up to ``n`` entries after the last verified one; the number taken.
        The caller holds :attr:`lock`."""
        if self.broken_at is not None or self.head is None:
            return 0
        start = self.verified
        stop = min(self.head + 1, start + n)
        batch: list[JsonObject] = []
        for seq in range(start, stop):
            entry = log.entry(self.stream, seq)
            if entry is None:  # a gap: verification names it as a missing entry
                break
            batch.append(entry.to_json())
        if not batch:
            if start <= self.head:
                self._broken(start, f"entry {start} is missing from the stored stream")
            return 0
        if self.last is None:
            report = verify_chain(
                batch, keys, start_seq=0, stream=self.stream, require_checkpoint=False
            )
            items = batch
        else:
            # Start at the last verified entry, anchored to its hash: the first new entry's
            # link to it is checked too.
            items = [self.last.to_json(), *batch]
            report = verify_chain(
                items,
                keys,
                start_seq=self.last.seq,
                expected_head=(self.last.seq, self.last.hash),
                stream=self.stream,
                require_checkpoint=False,
            )
        good = report.count - (0 if self.last is None else 1)
        for obj in items[len(items) - len(batch) : len(items) - len(batch) + max(good, 0)]:
            self._take(AuditEntry.from_json(obj))
        if not report.ok:
            bad = report.first_bad_seq if report.first_bad_seq is not None else self.verified
            self._broken(bad, report.reason or "verification failed")
        elif len(batch) < stop - start:
            self._broken(start + len(batch), f"entry {start + len(batch)} is missing")
        return max(good, 0)

    def _broken(self, seq: int, reason: str) -> None:
        self.broken_at = seq
        self.broken_reason = reason

    # -- aggregation (verified entries only) --

    def _take(self, entry: AuditEntry) -> None:
        self.last = entry
        self.kinds[str(entry.kind)] += 1
        event = entry.event
        if entry.kind is AuditKind.CHECKPOINT:
            self.checkpoint = entry
            self.checkpoints += 1
            return
        if entry.kind is AuditKind.ADMIN:
            self._take_admin(entry)
            return
        if entry.kind not in (AuditKind.ATTESTATION, AuditKind.RELEASE, AuditKind.DENIAL):
            return
        minute = self.minutes.setdefault(entry.time_ms // MINUTE_MS, [0, 0, 0, 0])
        token_id = _str(event.get("token_id"))
        if entry.kind is AuditKind.ATTESTATION:
            tee = _str(event.get("tee"))
            result = _str(event.get("status"))
            minute[0] += 1
            if result != "affirming":
                minute[3] += 1
            if tee:
                self.tees[tee] += 1
                self.tee_last[tee] = entry.time
                if token_id:
                    self.token_tee[token_id] = tee
        else:
            tee = self.token_tee.get(token_id, "")
            if entry.kind is AuditKind.RELEASE:
                minute[1] += 1
                result = "released"
                self.last_release[_str(event.get("resource"))] = entry.time
            else:
                minute[2] += 1
                result = "denied"
        self.records.append(
            Record(
                seq=entry.seq,
                time_ms=entry.time_ms,
                kind=entry.kind,
                tee=tee,
                result=result,
                resource=_str(event.get("resource")),
                token_id=token_id,
                correlation_id=_str(event.get("correlation_id")),
            )
        )
        if len(self.records) > MAX_RECORDS:
            del self.records[: len(self.records) - MAX_RECORDS]

    def _take_admin(self, entry: AuditEntry) -> None:
        event, actor = entry.event, entry.actor or "?"
        action = _str(event.get("action"))
        change = Change(actor, entry.time, entry.seq)
        if action == "resource.put":
            self.resource_puts[_str(event.get("resource"))] += 1
        elif action in ("attestation-policy.set", "resource-policy.set"):
            version = event.get("version")
            if isinstance(version, int):
                kind = action.split("-", 1)[0]
                self.policy_versions[(kind, _str(event.get("policy_id")), version)] = change
        elif action in ("attestation_policies.activate", "resource_policies.activate"):
            version = event.get("version")
            if isinstance(version, int):
                kind = action.split("_", 1)[0]
                key = (kind, _str(event.get("policy_id")))
                self.activations.setdefault(key, []).append((change, version))
        elif action == "reference-value.register":
            ids = event.get("ids")
            for name in ids if isinstance(ids, list) else []:
                if isinstance(name, str):
                    self.rv_changes[name] = change


def _str(value: Json) -> str:
    return value if isinstance(value, str) else ""


class Digests:
    """The digests of every stream this process has shown, kept up to date on demand."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._keys = log.public_keys()
        self._digests: dict[str, StreamDigest] = {}
        self._lock = threading.Lock()

    def get(self, stream: str) -> StreamDigest:
        with self._lock:
            return self._digests.setdefault(stream, StreamDigest(stream))

    def refresh(self, stream: str) -> StreamDigest:
        """The stream's digest after verifying what was appended since the last look: inline
        when little, else in the background (the page then says it is catching up)."""
        digest = self.get(stream)
        with digest.lock:
            head = self._log.head(stream)
            digest.head = None if head is None else head[0]
            if digest.pending() <= INLINE_ENTRIES:
                while digest.pending() and digest.advance(self._log, self._keys, BATCH_ENTRIES):
                    pass
                return digest
            if digest.worker is None or not digest.worker.is_alive():
                digest.worker = threading.Thread(
                    target=self._catch_up,
                    args=(digest,),
                    name=f"custodes-ui-digest-{stream}",
                    daemon=True,
                )
                digest.worker.start()
        return digest

    def _catch_up(self, digest: StreamDigest) -> None:
        while True:
            with digest.lock:
                if not digest.pending():
                    return
                if not digest.advance(self._log, self._keys, BATCH_ENTRIES):
                    return

    def wait(self, stream: str, timeout: float) -> None:
        """Wait for a background catch-up of ``stream`` (benchmarks, tests)."""
        worker = self.get(stream).worker
        if worker is not None:
            worker.join(timeout)
