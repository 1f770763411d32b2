"""The az-snp-vtpm and az-tdx-vtpm evidence JSON, versions 0, 1 and 2 (upstream's wire forms).

Version 0 (no ``version`` member; byte strings as JSON arrays of integers, the ``az-cvm-vtpm``
crate's serde form)::

    az-snp-vtpm: {"quote": Q0, "report": [hcl report bytes], "vcek": "<PEM of the VCEK>"}
    az-tdx-vtpm: {"tpm_quote": Q0, "hcl_report": [bytes], "td_quote": [bytes]}
    Q0 = {"signature": [bytes], "message": [bytes], "pcrs": [[32 bytes], ... x24]}

Versions 1 and 2 (identical shapes; version 2 also binds the digest in the HCL ``user-data``)::

    az-snp-vtpm: {"version": 1|2, "tpm_quote": Q1, "hcl_report": b64url, "vcek": b64url DER}
    az-tdx-vtpm: {"version": 1|2, "tpm_quote": Q1, "hcl_report": b64url, "td_quote": b64url}
    Q1 = {"signature": hex, "message": hex, "pcrs": [hex x24]}

``signature`` is the raw RSASSA-PKCS1-v1_5 signature of the AK (not a TPMT_SIGNATURE);
``message`` is the marshalled TPMS_ATTEST. base64url is accepted padded (what upstream's guest
sends) or unpadded, canonical either way; hex in either case.

Upstream tries version 2, then 1, then 0 and ignores unknown members, so it would read
``{"version": 7, ...v0 members...}`` as version 0. Here the ``version`` member decides: absent
means version 0, 1 and 2 are versions 1 and 2, anything else is
:class:`.errors.EvidenceVersionUnsupported`. Other unknown members are ignored, as upstream.

Strict otherwise: exactly 24 PCRs of 32 bytes (the Azure guest always quotes all 24), integers
0..255 in byte arrays (JSON ``true`` is not a byte), one PEM certificate for a v0 VCEK, and
sizes bounded before decoding.

Versions 1 and 2 may also carry ``"cc_eventlog"``: padded standard base64 of a TCG2
crypto-agile event log holding the AA event-log (AAEL) entries the guest extended into vTPM
PCRs (guest-components #1605, trustee #1565). It is optional (absent or ``null``: none) and is
replayed against the quoted PCRs by the vTPM step 6b (``eventlog.py``). Version 0 evidence has
no such member.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from custodes._internal.b64 import b64std_decode, b64url_decode
from custodes.attestation.verifiers.azure.errors import EvidenceVersionUnsupported
from custodes.attestation.verifiers.base import evidence_object
from custodes.attestation.verifiers.tpm.evidence import decode_pcr_bank
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject

PCR_COUNT: Final = 24
PCR_SIZE: Final = 32
VERSIONS: Final = (0, 1, 2)
MAX_EVIDENCE_TEXT: Final = 1024 * 1024
MAX_HCL_REPORT: Final = 16 * 1024
MAX_TD_QUOTE: Final = 96 * 1024  # a quote (~5 KB) in a buffer; tdx/quote.py bounds it further
MAX_CERT: Final = 16 * 1024
MAX_TPM_MESSAGE: Final = 4096
MAX_TPM_SIGNATURE: Final = 512  # RSA-4096
MAX_EVENTLOG: Final = 512 * 1024

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")


# --- field decoders ----------------------------------------------------------------------


def _field(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise MalformedEvidence(f"{where} lacks {key!r}")
    return obj[key]


def _byte_array(value: object, what: str, max_size: int) -> bytes:
    if not isinstance(value, list):
        raise MalformedEvidence(f"{what} is not an array of bytes")
    if len(value) > max_size:
        raise MalformedEvidence(f"{what} is longer than {max_size} bytes")
    # type() is int: JSON true/false would pass an isinstance check. The types are collected
    # and the range checked by bytes() in C, not per element in Python.
    if not set(map(type, value)) <= {int}:
        raise MalformedEvidence(f"{what} is not an array of bytes")
    try:
        return bytes(value)
    except ValueError:  # an integer outside 0..255
        raise MalformedEvidence(f"{what} is not an array of bytes") from None


def _hex(value: object, what: str, max_size: int) -> bytes:
    """Hex digits in pairs (either case) and nothing else, at most ``max_size`` bytes.

    ``bytes.fromhex`` refuses every other character except ASCII whitespace; a whitespace
    character leaves fewer than ``len(value) / 2`` bytes, so the length check refuses it (no
    regex pass over the text first)."""
    if not isinstance(value, str) or len(value) > 2 * max_size:
        raise MalformedEvidence(f"{what} is not hex of at most {max_size} bytes")
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        decoded = None
    if decoded is None or 2 * len(decoded) != len(value):
        raise MalformedEvidence(f"{what} is not hex of at most {max_size} bytes")
    return decoded


def b64url_decode_any_padding(text: str) -> bytes:
    """base64url, padded or not, canonical either way; ``ValueError`` otherwise."""
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding and (padding != -len(body) % 4 or padding > 2):
        raise ValueError("wrong base64url padding")
    return b64url_decode(body)


def b64url_encode_padded(data: bytes) -> str:
    """base64url with padding, as upstream's guest (serde_with ``Base64<UrlSafe>``) writes it."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def _b64url(value: object, what: str, max_size: int) -> bytes:
    if not isinstance(value, str) or len(value) > (max_size + 2) // 3 * 4:
        raise MalformedEvidence(f"{what} is not base64url of at most {max_size} bytes")
    try:
        return b64url_decode_any_padding(value)
    except ValueError as e:
        raise MalformedEvidence(f"{what} is not base64url") from e


def _pem_certificate(value: object) -> bytes:
    """The DER of the one certificate in a PEM string (the v0 ``vcek``)."""
    if not isinstance(value, str) or len(value) > 2 * MAX_CERT:
        raise MalformedEvidence("vcek is not a PEM certificate")
    match = _PEM.fullmatch(value.strip())
    if match is None:
        raise MalformedEvidence("vcek is not exactly one PEM certificate")
    try:
        return b64std_decode("".join(match.group(1).split()))
    except ValueError as e:
        raise MalformedEvidence("vcek PEM is not base64") from e


def _eventlog(obj: Mapping[str, object]) -> bytes | None:
    """The optional ``cc_eventlog`` of version 1 and 2 evidence (padded standard base64)."""
    value = obj.get("cc_eventlog")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > (MAX_EVENTLOG + 2) // 3 * 4:
        raise MalformedEvidence(f"cc_eventlog is not base64 of at most {MAX_EVENTLOG} bytes")
    try:
        return b64std_decode(value)
    except ValueError as e:
        raise MalformedEvidence("cc_eventlog is not padded standard base64") from e


def _version(obj: Mapping[str, object]) -> int:
    if "version" not in obj:
        return 0
    version = obj["version"]
    if type(version) is not int or version not in (1, 2):
        raise EvidenceVersionUnsupported(f"evidence version {version!r} is not 1 or 2")
    return version


# --- the vTPM quote ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VtpmQuote:
    """The vTPM quote: raw AK signature, marshalled TPMS_ATTEST, the 24 SHA-256 PCR values.

    The PCR values are only what the guest claims until their digest matches the signed quote.
    """

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.pcrs) != PCR_COUNT or set(map(len, self.pcrs)) != {PCR_SIZE}:
            raise MalformedEvidence(f"the vTPM quote needs {PCR_COUNT} PCRs of {PCR_SIZE} bytes")

    @classmethod
    def from_json(cls, value: object, *, version: int) -> VtpmQuote:
        where = "tpm_quote" if version else "quote"
        if not isinstance(value, Mapping):
            raise MalformedEvidence(f"{where} is not an object")
        pcrs = _field(value, "pcrs", where)
        if not isinstance(pcrs, list) or len(pcrs) != PCR_COUNT:
            raise MalformedEvidence(f"{where}.pcrs is not an array of {PCR_COUNT} PCRs")
        if version == 0:
            return cls(
                signature=_byte_array(
                    _field(value, "signature", where), "signature", MAX_TPM_SIGNATURE
                ),
                message=_byte_array(_field(value, "message", where), "message", MAX_TPM_MESSAGE),
                pcrs=tuple(_byte_array(p, f"PCR {i}", PCR_SIZE) for i, p in enumerate(pcrs)),
            )
        signature = _hex(_field(value, "signature", where), "signature", MAX_TPM_SIGNATURE)
        message = _hex(_field(value, "message", where), "message", MAX_TPM_MESSAGE)
        # The whole bank in one pass when it is well formed; else entry by entry, which names
        # the bad PCR (and refuses exactly what the one-pass decoder does not accept).
        bank = decode_pcr_bank(pcrs)
        if bank is None:
            bank = tuple(_hex(p, f"PCR {i}", PCR_SIZE) for i, p in enumerate(pcrs))
        return cls(signature=signature, message=message, pcrs=bank)

    def to_json(self, *, version: int) -> JsonObject:
        if version == 0:
            return {
                "signature": list(self.signature),
                "message": list(self.message),
                "pcrs": [list(p) for p in self.pcrs],
            }
        return {
            "signature": self.signature.hex(),
            "message": self.message.hex(),
            "pcrs": [p.hex() for p in self.pcrs],
        }


# --- the two evidence kinds --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AzSnpEvidence:
    """az-snp-vtpm evidence: the vTPM quote, the HCL report bytes, the VCEK (DER)."""

    version: int
    tpm_quote: VtpmQuote
    hcl_report: bytes
    vcek: bytes
    cc_eventlog: bytes | None = None

    @classmethod
    def from_json(cls, evidence: object) -> AzSnpEvidence:
        obj = evidence_object(evidence, "az-snp-vtpm", max_size=MAX_EVIDENCE_TEXT)
        version = _version(obj)
        if version == 0:
            return cls(
                version=0,
                tpm_quote=VtpmQuote.from_json(_field(obj, "quote", "evidence"), version=0),
                hcl_report=_byte_array(_field(obj, "report", "evidence"), "report", MAX_HCL_REPORT),
                vcek=_pem_certificate(_field(obj, "vcek", "evidence")),
            )
        return cls(
            version=version,
            tpm_quote=VtpmQuote.from_json(_field(obj, "tpm_quote", "evidence"), version=version),
            hcl_report=_b64url(_field(obj, "hcl_report", "evidence"), "hcl_report", MAX_HCL_REPORT),
            vcek=_b64url(_field(obj, "vcek", "evidence"), "vcek", MAX_CERT),
            cc_eventlog=_eventlog(obj),
        )

    def to_json(self) -> JsonObject:
        """The wire form of this evidence's version (the inverse of :meth:`from_json`)."""
        if self.version == 0:
            body = base64.b64encode(self.vcek).decode("ascii")
            lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
            return {
                "quote": self.tpm_quote.to_json(version=0),
                "report": list(self.hcl_report),
                "vcek": f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n",
            }
        return {
            "version": self.version,
            "tpm_quote": self.tpm_quote.to_json(version=self.version),
            "hcl_report": b64url_encode_padded(self.hcl_report),
            "vcek": b64url_encode_padded(self.vcek),
            **_eventlog_json(self.cc_eventlog),
        }


@dataclass(frozen=True, slots=True)
class AzTdxEvidence:
    """az-tdx-vtpm evidence: the vTPM quote, the HCL report bytes, the TD quote bytes."""

    version: int
    tpm_quote: VtpmQuote
    hcl_report: bytes
    td_quote: bytes
    cc_eventlog: bytes | None = None

    @classmethod
    def from_json(cls, evidence: object) -> AzTdxEvidence:
        obj = evidence_object(evidence, "az-tdx-vtpm", max_size=MAX_EVIDENCE_TEXT)
        version = _version(obj)
        quote = VtpmQuote.from_json(_field(obj, "tpm_quote", "evidence"), version=version)
        hcl, td = _field(obj, "hcl_report", "evidence"), _field(obj, "td_quote", "evidence")
        if version == 0:
            return cls(
                version=0,
                tpm_quote=quote,
                hcl_report=_byte_array(hcl, "hcl_report", MAX_HCL_REPORT),
                td_quote=_byte_array(td, "td_quote", MAX_TD_QUOTE),
            )
        return cls(
            version=version,
            tpm_quote=quote,
            hcl_report=_b64url(hcl, "hcl_report", MAX_HCL_REPORT),
            td_quote=_b64url(td, "td_quote", MAX_TD_QUOTE),
            cc_eventlog=_eventlog(obj),
        )

    def to_json(self) -> JsonObject:
        """The wire form of this evidence's version (the inverse of :meth:`from_json`)."""
        if self.version == 0:
            return {
                "tpm_quote": self.tpm_quote.to_json(version=0),
                "hcl_report": list(self.hcl_report),
                "td_quote": list(self.td_quote),
            }
        return {
            "version": self.version,
            "tpm_quote": self.tpm_quote.to_json(version=self.version),
            "hcl_report": b64url_encode_padded(self.hcl_report),
            "td_quote": b64url_encode_padded(self.td_quote),
            **_eventlog_json(self.cc_eventlog),
        }


def _eventlog_json(log: bytes | None) -> JsonObject:
    return {} if log is None else {"cc_eventlog": base64.b64encode(log).decode("ascii")}
