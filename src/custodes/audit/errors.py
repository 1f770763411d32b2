"""Errors of the audit log: refused appends, and one class per way a chain can be broken.

Verification does not raise to its caller (it returns a report naming the first bad entry);
each step of the checklist raises its own :class:`AuditChainError` subclass internally and the
report carries that instance, so callers and tests can tell *why* by class, not by message.
"""

from __future__ import annotations

from custodes.errors import CustodesError, StorageError


class AuditError(CustodesError):
    """Base of the audit log's errors."""

    code = "audit"


class AuditStreamInvalid(AuditError):
    """A stream name that is not a tenant id or the broker stream."""

    code = "audit-stream-invalid"


class AuditEventInvalid(AuditError):
    """An append whose kind, actor or event cannot be recorded (not JSON, too large, ...)."""

    code = "audit-event-invalid"


class AuditAppendConflict(StorageError):
    """Other appenders kept winning the next sequence number; nothing was written."""

    code = "audit-append-conflict"


class AuditChainError(AuditError):
    """The chain is broken at entry ``seq``; the message says why."""

    code = "audit-chain"

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class AuditEntryMalformed(AuditChainError):
    """Not an audit entry: bad JSON, missing or extra fields, wrong types."""

    code = "audit-entry-malformed"


class AuditWrongStream(AuditChainError):
    """An entry of another stream inside this one."""

    code = "audit-wrong-stream"


class AuditEntryMissing(AuditChainError):
    """A gap in the sequence numbers that no later entry fills: entries were deleted."""

    code = "audit-entry-missing"


class AuditEntryReordered(AuditChainError):
    """An entry out of its place (the expected one comes later) or a repeated entry."""

    code = "audit-entry-reordered"


class AuditEntryEdited(AuditChainError):
    """The recomputed hash differs from the recorded one: the content was changed."""

    code = "audit-entry-edited"


class AuditUnknownKey(AuditChainError):
    """The entry names a signing key that is not among the trusted ones."""

    code = "audit-unknown-key"


class AuditSignatureInvalid(AuditChainError):
    """The signature does not verify over the entry's hash."""

    code = "audit-signature-invalid"


class AuditChainForked(AuditChainError):
    """An authentic entry whose ``prev`` is not the hash of the entry before it."""

    code = "audit-chain-forked"


class AuditTimeReversed(AuditChainError):
    """An entry earlier in time than the one before it."""

    code = "audit-time-reversed"


class AuditTruncated(AuditChainError):
    """Entries up to the anchor are missing at the end of the log."""

    code = "audit-truncated"


class AuditAnchorMismatch(AuditChainError):
    """The entry at the anchor's sequence number does not have the anchor's hash, or the
    anchor lies before the first entry given."""

    code = "audit-anchor-mismatch"


class AuditEmpty(AuditChainError):
    """No entries at all: an empty stream proves nothing, not even that the log was empty."""

    code = "audit-empty"


class AuditTailUncovered(AuditChainError):
    """The stream does not end at a checkpoint: entries cut from its end would go unnoticed."""

    code = "audit-tail-uncovered"


class AuditCheckpointInvalid(AuditChainError):
    """A checkpoint entry whose event is not a checkpoint (members, types)."""

    code = "audit-checkpoint-invalid"


class AuditCheckpointForeign(AuditChainError):
    """A checkpoint whose origin names another stream (tenant) than the one it is in."""

    code = "audit-checkpoint-foreign"


class AuditCheckpointMismatch(AuditChainError):
    """A checkpoint whose size or head is not that of the entries before it."""

    code = "audit-checkpoint-mismatch"
