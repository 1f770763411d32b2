"""The audit log: one append-only, hash-chained, signed stream of entries per tenant.

Entries (their format, hash and signature) are :mod:`.entry`'s; verifying a chain is
:mod:`.verify`'s; this module keeps the streams in a :class:`~custodes.storage.base.Store`.

Storage: entry ``seq`` of stream ``s`` is the JCS bytes of the whole entry under namespace
``audit/<s>``, key ``seq`` as 12 digits (so key order is chain order). Each process has one
writer per stream (:class:`_StreamWriter`) that keeps the head in memory and commits the
entries of concurrent callers together (group commit: one transaction, one fsync, on a
:class:`~custodes.storage.batch.BatchStore`); a caller returns once its entry is durable.
Rows are create-only, so two writers (worker processes, or replicas on one database) can
never both write the same ``seq``: the loser re-reads the head, re-seals its batch and
retries with backoff, a bounded number of times. Two helper namespaces are derived data,
never trusted by verification: ``audit-head`` (key ``s``: a hint of the last ``seq``, so a
re-read of the head does not list the stream) and ``audit-index/<s>`` (key: a denial's
``correlation_id``, value: its ``seq``).

Events must never contain secret material (see :mod:`.entry`). Every export ends with a
signed checkpoint (:mod:`.checkpoint`), so that entries cut from its end are detected.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Final

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import Clock
from custodes.audit.checkpoint import Checkpoint, CheckpointPolicy, CheckpointReason
from custodes.audit.entry import (
    CORRELATION_ID_FIELD,
    GENESIS_PREV,
    SEQ_DIGITS,
    AuditEntry,
    AuditKind,
    _Content,
    _content,
    _json_string,
    _require_p256,
    _seal,
    _valid_cid,
    check_stream,
    key_id,
)
from custodes.audit.errors import AuditAppendConflict, AuditEntryMalformed, AuditEventInvalid
from custodes.audit.group_commit import GroupCommit
from custodes.audit.verify import VerifyReport, verify_stream
from custodes.errors import StorageError
from custodes.storage.base import Store
from custodes.storage.batch import Batch, Row, batch_store
from custodes.types.json import JsonObject

logger = logging.getLogger(__name__)

NS_AUDIT_PREFIX: Final = "audit/"
NS_INDEX_PREFIX: Final = "audit-index/"
NS_HEAD: Final = "audit-head"

MAX_APPEND_ATTEMPTS: Final = 64


# --- store keys ----------------------------------------------------------------------------


def _seq_key(seq: int) -> str:
    return f"{seq:0{SEQ_DIGITS}d}"


def _key_seq(key: str) -> int:
    if len(key) != SEQ_DIGITS or not key.isascii() or not key.isdigit():
        raise AuditEntryMalformed(0, f"audit store key {key!r} is not a sequence number")
    return int(key)


# --- the writer -----------------------------------------------------------------------------

_Maker = Callable[[AuditEntry | None], _Content | None]
"""What a caller appends, given the head it goes after (``None``: nothing to add)."""

# Backoff after a lost race (another process or replica appended first): exponential from
# 0.5 ms, capped at 20 ms, with full jitter, so that replicas that collided do not collide
# again in lockstep. Each retry re-signs the whole pending batch after the new head.
_BACKOFF_BASE_S: Final = 0.0005
_BACKOFF_CAP_S: Final = 0.02


def _backoff(attempt: int) -> float:
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * float(1 << min(attempt, 16)))
    return ceiling * secrets.randbelow(1001) / 1000


class _PartlyWritten(Exception):
    """Internal: a store without batches failed after the first ``written`` entries."""

    def __init__(self, written: int, error: StorageError) -> None:
        super().__init__(str(error))
        self.written = written
        self.error = error


@dataclass(frozen=True, slots=True)
class _Planned:
    entry: AuditEntry
    raw: bytes
    owner: int | None
    """Index of the caller the entry answers; ``None`` for a periodic checkpoint."""


@dataclass(slots=True)
class _Plan:
    outcomes: list[AuditEntry | BaseException | None]
    entries: list[_Planned] = field(default_factory=list)


class _StreamWriter:
    """The one writer of a stream in this process (group commit).

    Keeps the chain head in memory: an append reads nothing. The head is reloaded from the
    store only when it is unknown (first use, or a write whose outcome is unknown) or when a
    commit lost a race: another process or replica appended first; the pending batch is then
    re-sealed after the new head and retried with backoff. A caller returns only once its
    entry is committed, i.e. durable (the store's commit is).
    """

    def __init__(self, log: AuditLog, stream: str) -> None:
        self._log = log
        self._stream = stream
        self._head: AuditEntry | None = None
        self._loaded = False
        self._group: GroupCommit[_Maker, AuditEntry | None] = GroupCommit(self._commit)

    def submit(self, make: _Maker) -> AuditEntry | None:
        return self._group.submit(make)

    @property
    def commits(self) -> int:
        return self._group.commits

    def _commit(self, makers: Sequence[_Maker]) -> list[AuditEntry | BaseException | None]:
        log, stream = self._log, self._stream
        outcomes: list[AuditEntry | BaseException | None] = [None] * len(makers)
        pending = list(range(len(makers)))
        for attempt in range(MAX_APPEND_ATTEMPTS):
            if not self._loaded:
                self._head = log._head_entry(stream)
                self._loaded = True
            plan = log._plan(stream, self._head, [makers[i] for i in pending])
            if not plan.entries:
                for slot, i in enumerate(pending):
                    outcomes[i] = plan.outcomes[slot]
                return outcomes
            failure: StorageError | None = None
            try:
                written = log._write(stream, plan.entries)
            except _PartlyWritten as e:
                written, failure = e.written, e.error
            except BaseException:
                self._loaded = False  # the outcome is unknown: read the head next time
                raise
            if written:
                self._head = plan.entries[written - 1].entry
                for planned in plan.entries[:written]:
                    if planned.entry.kind is AuditKind.CHECKPOINT:
                        log._checkpoint_ms[stream] = planned.entry.time_ms
            if written == len(plan.entries):
                for slot, i in enumerate(pending):
                    outcomes[i] = plan.outcomes[slot]
                return outcomes
            # Lost a race at entry ``written``: callers before it are done (the entries they
            # got are stored), the others are sealed again after the new head.
            owners = (p.owner for p in plan.entries[written:] if p.owner is not None)
            first_open = next(owners, len(pending))  # a lost periodic checkpoint owns none
            for slot in range(first_open):
                outcomes[pending[slot]] = plan.outcomes[slot]
            pending = pending[first_open:]
            self._loaded = False
            if failure is not None:
                # Entries before the failure are on record: their callers succeed (failing
                # them would refuse actions already recorded); the others fail.
                if plan.entries[written].owner is None:
                    logger.warning(
                        "audit stream %s: periodic checkpoint not written: %s", stream, failure
                    )
                for i in pending:
                    outcomes[i] = failure
                return outcomes
            if not pending:
                return outcomes
            time.sleep(_backoff(attempt))
        raise AuditAppendConflict(
            f"audit stream {stream!r}: no free sequence number after {MAX_APPEND_ATTEMPTS} attempts"
        )


# --- the log --------------------------------------------------------------------------------


class AuditLog:
    """Appends to and reads the audit streams kept in a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        signing_key: ec.EllipticCurvePrivateKey,
        clock: Clock,
        *,
        checkpoints: CheckpointPolicy | None = None,
    ) -> None:
        _require_p256(signing_key, "the audit signing key")
        self._store = store
        self._key = signing_key
        self._clock = clock
        self._policy = checkpoints if checkpoints is not None else CheckpointPolicy()
        self.kid = key_id(signing_key.public_key())
        self._kid_json = _json_string(self.kid)
        self._batches = batch_store(store)
        # One writer per stream: this process's appenders of a stream share its commits.
        self._writers: dict[str, _StreamWriter] = {}
        self._writers_lock = threading.Lock()
        # This process's latest checkpoint time per stream (ms), for the time rule only.
        self._checkpoint_ms: dict[str, int] = {}

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        """The key map :func:`verify_chain` needs for entries written by this log."""
        return {self.kid: self._key.public_key()}

    # -- writing --

    def append(
        self, stream: str, kind: AuditKind | str, actor: str | None, event: JsonObject
    ) -> AuditEntry:
        """Append one entry; returns it, with its ``seq`` and ``hash``, once it is durable.

        ``event`` must be a JSON object (at most 64 KiB canonical) and must never contain
        secret material. A string ``correlation_id`` in it is indexed for
        :meth:`get_by_correlation_id`. Checkpoints are not appended here (:meth:`checkpoint`).
        Blocks the calling thread until the entry is committed; entries appended meanwhile by
        other threads share that commit (see :class:`_StreamWriter`).
        """
        check_stream(stream)
        if kind == AuditKind.CHECKPOINT:
            raise AuditEventInvalid("checkpoints are written by the audit log itself")
        # Checked and encoded here, in the caller's thread: a bad event fails its caller only.
        content = _content(kind, actor, event)
        entry = self._writer(stream).submit(lambda _head: content)
        if entry is None:  # pragma: no cover - the maker above always gives content
            raise AuditEventInvalid("nothing to append")
        return entry

    def checkpoint(
        self,
        stream: str,
        *,
        reason: CheckpointReason = CheckpointReason.EXPORT,
        actor: str | None = None,
    ) -> AuditEntry:
        """Append a signed checkpoint committing to every entry before it; returns it."""
        check_stream(stream)
        entry = self._writer(stream).submit(self._checkpoint_maker(stream, reason, actor))
        if entry is None:  # pragma: no cover - only periodic checkpoints are ever skipped
            raise AuditEventInvalid("no checkpoint was written")
        return entry

    def _checkpoint_maker(self, stream: str, reason: CheckpointReason, actor: str | None) -> _Maker:
        def make(head: AuditEntry | None) -> _Content | None:
            # A periodic checkpoint right after another one (a replica was faster) adds
            # nothing; an export's always gets its own, stamped with the export's time.
            if reason is not CheckpointReason.EXPORT and (
                head is None or head.kind is AuditKind.CHECKPOINT
            ):
                return None
            event = Checkpoint(
                origin=stream,
                size=0 if head is None else head.seq + 1,
                head=GENESIS_PREV if head is None else head.hash,
                reason=reason,
            ).to_event()
            return _content(AuditKind.CHECKPOINT, actor, event)

        return make

    def _writer(self, stream: str) -> _StreamWriter:
        with self._writers_lock:
            writer = self._writers.get(stream)
            if writer is None:
                writer = self._writers[stream] = _StreamWriter(self, stream)
            return writer

    def _plan(self, stream: str, head: AuditEntry | None, makers: Sequence[_Maker]) -> _Plan:
        """Seal the entries of ``makers`` after ``head``, with the periodic checkpoints that
        fall due among them. An entry that cannot be made fails its own caller only."""
        plan = _Plan(outcomes=[None] * len(makers))
        now_ms = int(self._clock.now() * 1000)
        last_ms = self._checkpoint_ms.setdefault(stream, now_ms)

        def add(content: _Content, owner: int | None) -> AuditEntry:
            nonlocal head
            entry, raw = _seal(
                content,
                seq=0 if head is None else head.seq + 1,
                # Never before the previous entry, whatever this clock says.
                time_ms=now_ms if head is None else max(now_ms, head.time_ms),
                stream=stream,
                prev=GENESIS_PREV if head is None else head.hash,
                kid=self.kid,
                kid_json=self._kid_json,
                signing_key=self._key,
            )
            plan.entries.append(_Planned(entry, raw, owner))
            head = entry
            return entry

        for index, make in enumerate(makers):
            try:
                content = make(head)
                if content is None:
                    continue
                entry = add(content, index)
            except AuditEventInvalid as e:  # e.g. a full stream: this caller's alone
                plan.outcomes[index] = e
                continue
            plan.outcomes[index] = entry
            if entry.kind is AuditKind.CHECKPOINT:
                last_ms = entry.time_ms
                continue
            reason = self._policy.due(seq=entry.seq, now_ms=now_ms, last_ms=last_ms)
            if reason is None:
                continue
            try:
                checkpoint = self._checkpoint_maker(stream, reason, None)(head)
                if checkpoint is not None:
                    last_ms = add(checkpoint, None).time_ms
            except AuditEventInvalid as e:
                # The entry itself is recorded: failing its caller would refuse an action
                # that is on record. The next rule, or the next export, writes the checkpoint.
                logger.warning("audit stream %s: periodic checkpoint not written: %s", stream, e)
        return plan

    def _write(self, stream: str, entries: Sequence[_Planned]) -> int:
        """Store ``entries`` (in chain order); how many of the first ones were stored. With a
        batch store that is all or none, in one transaction; otherwise one insert each."""
        ns = NS_AUDIT_PREFIX + stream
        now = self._clock.now()
        if self._batches is not None:
            index: dict[str, Row] = {}
            for planned in entries:
                cid = planned.entry.event.get(CORRELATION_ID_FIELD)
                if isinstance(cid, str) and cid not in index:
                    seq_text = str(planned.entry.seq).encode("ascii")
                    index[cid] = Row(NS_INDEX_PREFIX + stream, cid, seq_text)
            last = entries[-1].entry
            batch = Batch(
                inserts=tuple(Row(ns, _seq_key(p.entry.seq), p.raw) for p in entries),
                # Derived data, in the same commit: it costs nothing more there.
                upserts=(Row(NS_HEAD, stream, str(last.seq).encode("ascii")),),
                if_absent=tuple(index.values()),
            )
            return len(entries) if self._batches.write_batch(batch, now=now) else 0
        for written, planned in enumerate(entries):
            try:
                stored = self._store.insert(ns, _seq_key(planned.entry.seq), planned.raw, now=now)
            except StorageError as e:
                if written == 0:
                    raise
                raise _PartlyWritten(written, e) from e
            if not stored:
                return written
            self._after_append(planned.entry)
        return len(entries)

    def _after_append(self, entry: AuditEntry) -> None:
        # Derived data (stores without batches): a crash before these writes leaves a stale
        # hint (an append probes past it) or a missing index entry (rebuild_index restores it).
        self._store.set(NS_HEAD, entry.stream, str(entry.seq).encode("ascii"))
        cid = entry.event.get(CORRELATION_ID_FIELD)
        if isinstance(cid, str):
            self._store.insert(
                NS_INDEX_PREFIX + entry.stream,
                cid,
                str(entry.seq).encode("ascii"),
                now=self._clock.now(),
            )

    def _read(self, stream: str, seq: int) -> AuditEntry | None:
        raw = self._store.get(NS_AUDIT_PREFIX + stream, _seq_key(seq), now=self._clock.now())
        return None if raw is None else AuditEntry.from_bytes(raw, seq_hint=seq)

    def _head_entry(self, stream: str) -> AuditEntry | None:
        now = self._clock.now()
        ns = NS_AUDIT_PREFIX + stream
        seq: int | None = None
        hint = self._store.get(NS_HEAD, stream, now=now)
        if hint is not None and hint.isdigit() and len(hint) <= SEQ_DIGITS:
            seq = int(hint)
            if self._store.get(ns, _seq_key(seq), now=now) is None:
                seq = None
        if seq is None:
            keys = self._store.list(ns, now=now)
            if not keys:
                return None
            seq = _key_seq(keys[-1])
        # The hint may lag (a crash, a slower replica): walk forward to the real head.
        while self._store.get(ns, _seq_key(seq + 1), now=now) is not None:
            seq += 1
        return self._read(stream, seq)

    # -- reading --

    def head(self, stream: str) -> tuple[int, str] | None:
        """``(seq, hash)`` of the last entry: the anchor to record for later verification."""
        entry = self._head_entry(check_stream(stream))
        return None if entry is None else (entry.seq, entry.hash)

    def entry(self, stream: str, seq: int) -> AuditEntry | None:
        """Entry ``seq`` as stored (parsed, not verified), by key: no listing of the stream
        (the dashboard reads new entries one by one after the head it last saw)."""
        return self._read(check_stream(stream), seq)

    def _raw(self, stream: str, since_seq: int, limit: int | None) -> Iterator[tuple[int, bytes]]:
        ns = NS_AUDIT_PREFIX + check_stream(stream)
        now = self._clock.now()
        start = _seq_key(max(since_seq, 0))
        taken = 0
        for key in self._store.list(ns, now=now):
            if key < start:
                continue
            if limit is not None and taken >= limit:
                return
            raw = self._store.get(ns, key, now=now)
            if raw is not None:
                taken += 1
                yield _key_seq(key), raw

    def entries(
        self, stream: str, *, since_seq: int = 0, limit: int | None = None
    ) -> list[AuditEntry]:
        """Stored entries in key order (parsed, not verified)."""
        return [
            AuditEntry.from_bytes(raw, seq_hint=seq)
            for seq, raw in self._raw(stream, since_seq, limit)
        ]

    def find(
        self,
        stream: str,
        predicate: Callable[[AuditEntry], bool],
        *,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries for which ``predicate`` holds, in chain order (a scan of the stream)."""
        found: list[AuditEntry] = []
        for entry in self.entries(stream):
            if predicate(entry):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def get_by_correlation_id(self, stream: str, correlation_id: str) -> AuditEntry | None:
        """The entry whose event carries this ``correlation_id``, through the index."""
        check_stream(stream)
        if not _valid_cid(correlation_id):
            return None
        raw = self._store.get(NS_INDEX_PREFIX + stream, correlation_id, now=self._clock.now())
        if raw is None or not raw.isdigit() or len(raw) > SEQ_DIGITS:
            return None
        entry = self._read(stream, int(raw))
        # The index is derived data: trust only an entry that carries the id itself.
        if entry is None or entry.event.get(CORRELATION_ID_FIELD) != correlation_id:
            return None
        return entry

    def rebuild_index(self, stream: str) -> int:
        """Re-add missing correlation-id index entries (after a crash); the number added."""
        added = 0
        for entry in self.entries(stream):
            cid = entry.event.get(CORRELATION_ID_FIELD)
            if isinstance(cid, str) and self._store.insert(
                NS_INDEX_PREFIX + stream,
                cid,
                str(entry.seq).encode("ascii"),
                now=self._clock.now(),
            ):
                added += 1
        return added

    def export(
        self,
        stream: str,
        fp: IO[bytes],
        *,
        since_seq: int = 0,
        checkpoint: bool = True,
        actor: str | None = None,
    ) -> int:
        """Write the stream as JSON Lines, the stored bytes verbatim; the number of lines.

        With ``checkpoint`` (the default) a checkpoint is appended first (``actor``: who
        exports) and the export stops at it, whatever other appenders add meanwhile, so the
        file ends with a signature over its own size and head.
        """
        end: int | None = None
        if checkpoint:
            end = self.checkpoint(stream, reason=CheckpointReason.EXPORT, actor=actor).seq
        count = 0
        for seq, raw in self._raw(stream, since_seq, None):
            if end is not None and seq > end:
                break
            fp.write(raw + b"\n")
            count += 1
        return count

    def verify_stream(
        self,
        stream: str,
        public_keys: Mapping[str, ec.EllipticCurvePublicKey] | None = None,
        *,
        expected_head: tuple[int, str] | None = None,
        require_checkpoint: bool = False,
    ) -> VerifyReport:
        """Verify the stored chain (this log's key unless ``public_keys`` is given), as
        :func:`~custodes.audit.verify.verify_stream`: by default the end of a live stream
        need not be a checkpoint."""
        keys = self.public_keys() if public_keys is None else public_keys
        return verify_stream(
            (raw for _, raw in self._raw(stream, 0, None)),
            keys,
            stream=stream,
            expected_head=expected_head,
            require_checkpoint=require_checkpoint,
        )
