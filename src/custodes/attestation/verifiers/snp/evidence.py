"""SNP evidence as upstream's guest sends it, and its re-encoding to the 1184-byte report.

Accepted form (the only one upstream's guest sends; guest-components ``snp`` attester and
trustee ``SnpEvidence``)::

    {"attestation_report": <sev crate AttestationReport serde form>,
     "cert_chain": null | [{"cert_type": "VCEK" | "VLEK" | "ASK" | "ARK" | "CRL" | "Empty"
                                        | {"OTHER": "<uuid>"}, "data": [<DER bytes as ints>]}]}

The report object carries decoded fields (integers, byte arrays as lists of ints, TCBs as
``{fmc, bootloader, tee, snp, microcode}``). It is re-encoded into the binary report with the
layout shared with the guest (:mod:`custodes.protocol.evidence.snp_report`; reserved bytes
zero, as the ``sev`` crate does) and parsed by ``SnpReport.from_bytes``, so the signature is
checked over exactly the bytes the firmware signed.
A raw-bytes form is not accepted: upstream's guest never sends one. ``evidence`` may be the
parsed JSON object or its text. An empty ``cert_chain`` counts as absent (as upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.verifiers.base import evidence_object
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.errors import MalformedEvidence
from custodes.protocol.evidence.snp_report import (
    byte_array,
    encode_report,
    json_object,
    report_to_json,
)
from custodes.types.json import JsonObject

__all__ = ["CertTableEntry", "SnpEvidence", "encode_report", "report_to_json"]

# DoS bounds: a real cert table has at most a handful of entries of ~1.4 KiB each.
MAX_CERT_ENTRIES: Final = 16
MAX_CERT_SIZE: Final = 16 * 1024
MAX_EVIDENCE_TEXT: Final = 256 * 1024

CERT_TYPES: Final = frozenset({"ARK", "ASK", "ASVK", "VCEK", "VLEK", "CRL", "Empty"})


@dataclass(frozen=True, slots=True)
class CertTableEntry:
    """One entry of the extended-report certificate table."""

    cert_type: str  # one of CERT_TYPES, or "OTHER"
    data: bytes
    guid: str | None = None  # for "OTHER" entries


@dataclass(frozen=True, slots=True)
class SnpEvidence:
    report: SnpReport
    cert_chain: tuple[CertTableEntry, ...] | None

    @classmethod
    def from_json(cls, evidence: object) -> SnpEvidence:
        """Parse upstream's evidence JSON (object or text); ``MalformedEvidence`` otherwise."""
        obj = evidence_object(evidence, "SNP", max_size=MAX_EVIDENCE_TEXT)
        if "attestation_report" not in obj:
            raise MalformedEvidence("SNP evidence has no attestation_report")
        report = SnpReport.from_bytes(encode_report(obj["attestation_report"]))
        return cls(report=report, cert_chain=_cert_chain(obj.get("cert_chain")))

    def to_json(self) -> JsonObject:
        """Upstream's JSON form of this evidence."""
        chain = (
            None
            if self.cert_chain is None
            else [
                {
                    "cert_type": e.cert_type if e.guid is None else {"OTHER": e.guid},
                    "data": list(e.data),
                }
                for e in self.cert_chain
            ]
        )
        return {"attestation_report": report_to_json(self.report.raw), "cert_chain": chain}

    def entries(self, cert_type: str) -> list[bytes]:
        """The DER data of every chain entry of ``cert_type``."""
        return [e.data for e in self.cert_chain or () if e.cert_type == cert_type]


def _cert_chain(value: object) -> tuple[CertTableEntry, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise MalformedEvidence("cert_chain is not an array")
    if len(value) > MAX_CERT_ENTRIES:
        raise MalformedEvidence(f"cert_chain has more than {MAX_CERT_ENTRIES} entries")
    entries = []
    for item in value:
        entry = json_object(item, "cert_chain entry")
        cert_type = entry.get("cert_type")
        guid = None
        if (
            isinstance(cert_type, Mapping)
            and set(cert_type) == {"OTHER"}
            and isinstance(cert_type["OTHER"], str)
        ):
            guid, cert_type = cert_type["OTHER"], "OTHER"
        elif not isinstance(cert_type, str) or cert_type not in CERT_TYPES:
            raise MalformedEvidence(f"unknown cert_type {cert_type!r}")
        data = entry.get("data")
        if not isinstance(data, list) or len(data) > MAX_CERT_SIZE:
            raise MalformedEvidence("cert_chain data is not a byte array of bounded size")
        entries.append(
            CertTableEntry(str(cert_type), byte_array(data, len(data), "cert_chain data"), guid)
        )
    return tuple(entries) or None
