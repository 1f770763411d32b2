"""SNP evidence as upstream's guest sends it, and its re-encoding to the 1184-byte report.

Accepted form (the only one upstream's guest sends; guest-components ``snp`` attester and
trustee ``SnpEvidence``)::

    {"attestation_report": <sev crate AttestationReport serde form>,
     "cert_chain": null | [{"cert_type": "VCEK" | "VLEK" | "ASK" | "ARK" | "CRL" | "Empty"
                                        | {"OTHER": "<uuid>"}, "data": [<DER bytes as ints>]}]}

The report object carries decoded fields (integers, byte arrays as lists of ints, TCBs as
``{fmc, bootloader, tee, snp, microcode}``). It is re-encoded into the binary report with the
layout table of ``report.py`` (reserved bytes zero, as the ``sev`` crate does) and parsed by
``SnpReport.from_bytes``, so the signature is checked over exactly the bytes the firmware signed.
A raw-bytes form is not accepted: upstream's guest never sends one. ``evidence`` may be the
parsed JSON object or its text. An empty ``cert_chain`` counts as absent (as upstream).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes.attestation.verifiers.snp.report import LAYOUT, REPORT_SIZE, SnpReport
from custodes.attestation.verifiers.snp.tcb import TURIN_FAMILY, TcbVersion
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject

# DoS bounds: a real cert table has at most a handful of entries of ~1.4 KiB each.
MAX_CERT_ENTRIES: Final = 16
MAX_CERT_SIZE: Final = 16 * 1024
MAX_EVIDENCE_TEXT: Final = 256 * 1024

CERT_TYPES: Final = frozenset({"ARK", "ASK", "ASVK", "VCEK", "VLEK", "CRL", "Empty"})

# serde key -> (layout name, bits) for plain integer fields.
_INTS: Final = (
    ("version", "version", 32),
    ("guest_svn", "guest_svn", 32),
    ("policy", "policy", 64),
    ("vmpl", "vmpl", 32),
    ("sig_algo", "signature_algo", 32),
    ("plat_info", "platform_info", 64),
    ("key_info", "key_info", 32),
)
_OPTIONAL_INTS: Final = (
    ("cpuid_fam_id", "cpuid_fam_id", 8),
    ("cpuid_mod_id", "cpuid_mod_id", 8),
    ("cpuid_step", "cpuid_step", 8),
    ("launch_mit_vector", "launch_mit_vector", 64),
    ("current_mit_vector", "current_mit_vector", 64),
)
_ARRAYS: Final = (
    "family_id",
    "image_id",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "chip_id",
)
_TCBS: Final = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_VERSIONS: Final = ("current", "committed")


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
        obj = _as_object(evidence)
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
        return {"attestation_report": report_to_json(self.report), "cert_chain": chain}

    def entries(self, cert_type: str) -> list[bytes]:
        """The DER data of every chain entry of ``cert_type``."""
        return [e.data for e in self.cert_chain or () if e.cert_type == cert_type]


def _as_object(evidence: object) -> Mapping[str, object]:
    if isinstance(evidence, bytes | str):
        if len(evidence) > MAX_EVIDENCE_TEXT:
            raise MalformedEvidence("SNP evidence is too large")
        try:
            evidence = json.loads(evidence)
        except (ValueError, RecursionError) as e:
            raise MalformedEvidence("SNP evidence is not JSON") from e
    if not isinstance(evidence, Mapping):
        raise MalformedEvidence("SNP evidence is not a JSON object")
    return evidence


def _uint(obj: Mapping[str, object], key: str, bits: int) -> int:
    value = obj.get(key)
    # bool is an int subclass; JSON true/false is not a number here.
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise MalformedEvidence(f"SNP report field {key!r} is not a u{bits}")
    return value


def _byte_array(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise MalformedEvidence(f"{what} is not an array of {size} bytes")
    try:
        return bytes(value)  # rejects non-integers and values outside 0..255
    except (TypeError, ValueError) as e:
        raise MalformedEvidence(f"{what} is not an array of {size} bytes") from e


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise MalformedEvidence(f"{what} is not a JSON object")
    return value


def _tcb(value: object, key: str, turin: bool) -> bytes:
    obj = _mapping(value, f"SNP report field {key!r}")
    fmc = obj.get("fmc")
    if turin and fmc is None:
        raise MalformedEvidence(f"{key}: a Turin report's TCB has an fmc SPL")
    if not turin and fmc is not None:
        raise MalformedEvidence(f"{key}: only Turin TCBs have an fmc SPL")
    return TcbVersion.from_parts(
        bootloader=_uint(obj, "bootloader", 8),
        tee=_uint(obj, "tee", 8),
        snp=_uint(obj, "snp", 8),
        microcode=_uint(obj, "microcode", 8),
        fmc=None if fmc is None else _uint(obj, "fmc", 8),
    ).raw


def encode_report(value: object) -> bytes:
    """The 1184-byte binary report for a ``sev`` crate serde ``AttestationReport``."""
    obj = _mapping(value, "attestation_report")
    raw = bytearray(REPORT_SIZE)

    def put(name: str, data: bytes) -> None:
        offset, size = LAYOUT[name]
        raw[offset : offset + size] = data

    for key, name, bits in _INTS:
        put(name, _uint(obj, key, bits).to_bytes(bits // 8, "little"))
    for key, name, bits in _OPTIONAL_INTS:
        if obj.get(key) is not None:
            put(name, _uint(obj, key, bits).to_bytes(bits // 8, "little"))
    for key in _ARRAYS:
        put(key, _byte_array(obj.get(key), LAYOUT[key].size, f"SNP report field {key!r}"))

    # Turin moved the SPL bytes; the serde TCB says so with a non-null fmc (checked in _tcb).
    turin = _uint(obj, "version", 32) >= 3 and obj.get("cpuid_fam_id") == TURIN_FAMILY
    for key in _TCBS:
        put(key, _tcb(obj.get(key), key, turin))
    for key in _VERSIONS:
        version = _mapping(obj.get(key), f"SNP report field {key!r}")
        for part in ("build", "minor", "major"):
            put(f"{key}_{part}", _uint(version, part, 8).to_bytes(1, "little"))

    signature = _mapping(obj.get("signature"), "SNP report signature")
    for part in ("r", "s"):
        name = f"signature_{part}"
        put(name, _byte_array(signature.get(part), LAYOUT[name].size, f"signature {part}"))
    return bytes(raw)


def report_to_json(report: SnpReport) -> JsonObject:
    """The ``sev`` crate serde form of ``report`` (inverse of :func:`encode_report`)."""

    def tcb(t: TcbVersion) -> JsonObject:
        return {
            "fmc": t.fmc,
            "bootloader": t.bootloader,
            "tee": t.tee,
            "snp": t.snp,
            "microcode": t.microcode,
        }

    return {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy.raw,
        "family_id": list(report.family_id),
        "image_id": list(report.image_id),
        "vmpl": report.vmpl,
        "sig_algo": report.signature_algo,
        "current_tcb": tcb(report.current_tcb),
        "plat_info": report.platform_info.raw,
        "key_info": report.key_info.raw,
        "report_data": list(report.report_data),
        "measurement": list(report.measurement),
        "host_data": list(report.host_data),
        "id_key_digest": list(report.id_key_digest),
        "author_key_digest": list(report.author_key_digest),
        "report_id": list(report.report_id),
        "report_id_ma": list(report.report_id_ma),
        "reported_tcb": tcb(report.reported_tcb),
        "cpuid_fam_id": report.cpuid_fam_id,
        "cpuid_mod_id": report.cpuid_mod_id,
        "cpuid_step": report.cpuid_step,
        "chip_id": list(report.chip_id),
        "committed_tcb": tcb(report.committed_tcb),
        "current": {
            "major": report.current_major,
            "minor": report.current_minor,
            "build": report.current_build,
        },
        "committed": {
            "major": report.committed_major,
            "minor": report.committed_minor,
            "build": report.committed_build,
        },
        "launch_tcb": tcb(report.launch_tcb),
        "launch_mit_vector": report.launch_mit_vector,
        "current_mit_vector": report.current_mit_vector,
        "signature": {"r": list(report.signature_r), "s": list(report.signature_s)},
    }


def _cert_chain(value: object) -> tuple[CertTableEntry, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise MalformedEvidence("cert_chain is not an array")
    if len(value) > MAX_CERT_ENTRIES:
        raise MalformedEvidence(f"cert_chain has more than {MAX_CERT_ENTRIES} entries")
    entries = []
    for item in value:
        entry = _mapping(item, "cert_chain entry")
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
            CertTableEntry(str(cert_type), _byte_array(data, len(data), "cert_chain data"), guid)
        )
    return tuple(entries) or None
