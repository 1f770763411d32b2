"""The TDX evidence JSON as the guest's attester sends it (upstream's ``TdxEvidence``):

``{"cc_eventlog": "<std base64>" | null, "quote": "<std base64 TD quote>"}``

``cc_eventlog`` is the CCEL ACPI table data with the AA event log appended (optional; ``null``,
absent or ``""`` all mean "no event log", as upstream). Other members are ignored, as upstream's
deserialiser does, so evidence from older guests that also sent ``aa_eventlog`` still parses.
Both values are strict padded standard base64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custodes._internal.b64 import b64std_decode
from custodes.attestation.verifiers.base import evidence_object
from custodes.errors import MalformedEvidence

MAX_EVENTLOG_SIZE: Final = 16 * 1024 * 1024  # the CCEL area is 64 KiB to 1 MiB in practice


@dataclass(frozen=True, slots=True)
class TdxEvidence:
    quote: bytes
    cc_eventlog: bytes | None

    @classmethod
    def from_json(cls, evidence: object) -> TdxEvidence:
        """Parse the evidence object (or its JSON text)."""
        evidence = evidence_object(evidence, "TDX")
        quote_b64 = evidence.get("quote")
        if not isinstance(quote_b64, str) or not quote_b64:
            raise MalformedEvidence("TDX evidence lacks the quote")
        log_b64 = evidence.get("cc_eventlog")
        if log_b64 is not None and not isinstance(log_b64, str):
            raise MalformedEvidence("TDX evidence cc_eventlog must be a string or null")
        try:
            quote = b64std_decode(quote_b64)
            log = b64std_decode(log_b64) if log_b64 else None
        except ValueError:
            raise MalformedEvidence("TDX evidence is not padded standard base64") from None
        if log is not None and len(log) > MAX_EVENTLOG_SIZE:
            raise MalformedEvidence("TDX event log too large")
        return cls(quote=quote, cc_eventlog=log)
