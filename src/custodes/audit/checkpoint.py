"""Signed checkpoints of an audit stream: what lets an export prove it was not cut short.

A hash chain detects every edit, deletion and reordering except one: entries removed from the
end leave a shorter chain that is still valid. Transparency logs answer that with a signed
tree head (Certificate Transparency's STH, the C2SP signed-note checkpoint): the log signs
"origin, size, head hash" and a verifier refuses a log that does not reach it.

Here a checkpoint is **an ordinary chain entry** of kind ``checkpoint`` whose event is::

    {"origin": "acme", "size": 41, "head": "<hash of entry 40>", "reason": "export"}

* ``origin`` is the stream (tenant id) the checkpoint speaks for; ``size`` is the number of
  entries before it (so its own ``seq``), ``head`` the hash of the last of them (its own
  ``prev``; 64 zeros for size 0). The entry's ``time``, ``kid`` and ``sig`` are the
  checkpoint's timestamp, key and ES256 signature: a checkpoint line taken out of an export
  is a self-contained signed statement "stream acme had 41 entries ending in head H at time T".
* Being an entry, it takes its place with the store's create-only insert like any other, so
  concurrent appenders (broker replicas on one PostgreSQL database) need nothing more: a
  checkpoint can only commit to the entries that precede it in the one chain.

The log writes one at the end of every export (``reason: export``) and, when configured,
after every N-th entry (``entries``) or once T seconds have passed (``time``). A verifier
requires the stream to end at a checkpoint.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from custodes.audit.errors import (
    AuditCheckpointForeign,
    AuditCheckpointInvalid,
    AuditCheckpointMismatch,
)
from custodes.errors import ConfigError
from custodes.types.json import JsonObject

CHECKPOINT_MEMBERS: Final = frozenset({"origin", "size", "head", "reason"})
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
# Longer than any deployment would ask for; keeps the arithmetic in range.
MAX_EVERY_SECONDS: Final = 366 * 24 * 3600
MAX_EVERY_ENTRIES: Final = 10**9


class CheckpointReason(StrEnum):
    """Why a checkpoint was written."""

    EXPORT = "export"
    ENTRIES = "entries"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's event: the stream, how many entries precede it, and the last one's hash."""

    origin: str
    size: int
    head: str
    reason: CheckpointReason

    def to_event(self) -> JsonObject:
        return {
            "origin": self.origin,
            "size": self.size,
            "head": self.head,
            "reason": str(self.reason),
        }


def parse_checkpoint(*, seq: int, stream: str, prev: str, event: JsonObject) -> Checkpoint:
    """The checkpoint carried by entry ``seq`` of ``stream`` (whose ``prev`` is given).

    The entry itself (hash, signature, link) is verified by the chain verifier; this checks
    what the checkpoint claims, each in its own error: the shape, the origin, then that size
    and head are those of the entries before it.
    """
    if set(event) != CHECKPOINT_MEMBERS:
        missing = sorted(CHECKPOINT_MEMBERS - set(event))
        extra = sorted(set(event) - CHECKPOINT_MEMBERS)
        raise AuditCheckpointInvalid(
            seq, f"malformed checkpoint: missing members {missing}, unexpected members {extra}"
        )
    origin, size, head, reason = event["origin"], event["size"], event["head"], event["reason"]
    if not isinstance(origin, str):
        raise AuditCheckpointInvalid(seq, "malformed checkpoint: origin is not a string")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise AuditCheckpointInvalid(seq, "malformed checkpoint: size is not an entry count")
    if not isinstance(head, str) or not _HEX64_RE.fullmatch(head):
        raise AuditCheckpointInvalid(
            seq, "malformed checkpoint: head is not 64 lowercase hex digits"
        )
    try:
        why = CheckpointReason(reason)
    except ValueError as e:
        raise AuditCheckpointInvalid(
            seq, f"malformed checkpoint: reason {reason!r:.40} is unknown"
        ) from e
    if origin != stream:  # public names: no timing to hide
        raise AuditCheckpointForeign(
            seq, f"checkpoint of stream {origin!r:.140} inside stream {stream!r}"
        )
    if size != seq:
        raise AuditCheckpointMismatch(
            seq, f"checkpoint claims {size} entries but {seq} entries precede it"
        )
    if not hmac.compare_digest(head, prev):
        raise AuditCheckpointMismatch(
            seq, f"checkpoint head is not the hash of entry {seq - 1} (the entry before it)"
        )
    return Checkpoint(origin=origin, size=size, head=head, reason=why)


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When the log adds a checkpoint on its own, besides the one every export ends with.

    ``every_entries``: after each entry whose ``seq + 1`` is a multiple of it (a rule on the
    position alone, so replicas agree on it without shared state). ``every_seconds``: after an
    entry appended at least that long after this process's previous checkpoint of the stream
    (an idle log gets none: nothing new to commit to). 0 turns a rule off. Either way, one
    extra signature per N entries or per T seconds, never one per entry.
    """

    every_entries: int = 0
    every_seconds: int = 0

    def __post_init__(self) -> None:
        for name, value, most in (
            ("every_entries", self.every_entries, MAX_EVERY_ENTRIES),
            ("every_seconds", self.every_seconds, MAX_EVERY_SECONDS),
        ):
            if isinstance(value, bool) or not 0 <= value <= most:
                raise ConfigError(f"audit.checkpoint_{name} must be an integer from 0 to {most}")

    def due(self, *, seq: int, now_ms: int, last_ms: int) -> CheckpointReason | None:
        """Whether entry ``seq``, just appended at ``now_ms``, is to be followed by a
        checkpoint (``last_ms``: this process's previous checkpoint of the stream)."""
        if self.every_entries and (seq + 1) % self.every_entries == 0:
            return CheckpointReason.ENTRIES
        if self.every_seconds and now_ms - last_ms >= self.every_seconds * 1000:
            return CheckpointReason.TIME
        return None
