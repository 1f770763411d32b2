"""Measured-boot event logs: the TCG2 crypto-agile CC event log (CCEL, with AA event-log
entries appended), parsed and replayed. Shared by the ``tdx`` and ``az-tdx-vtpm`` verifiers."""

from __future__ import annotations

from custodes.attestation.eventlog.ccel import (
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    ALG_SHA512,
    ALG_SM3_256,
    CcEventLog,
    EventDetails,
    EventDigest,
    EventLogEntry,
)

__all__ = [
    "ALG_SHA1",
    "ALG_SHA256",
    "ALG_SHA384",
    "ALG_SHA512",
    "ALG_SM3_256",
    "CcEventLog",
    "EventDetails",
    "EventDigest",
    "EventLogEntry",
]
