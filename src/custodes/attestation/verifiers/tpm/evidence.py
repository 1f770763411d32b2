"""The ``tpm`` evidence JSON, exactly as upstream's guest attester sends it.

::

    {"ak_public": "<std base64 of the AK's DER SubjectPublicKeyInfo>",
     "tpm_quote": {"signature": "<std base64 of the marshalled TPMT_SIGNATURE>",
                   "message":   "<std base64 of the marshalled TPMS_ATTEST>",
                   "pcrs":      ["<64 hex digits: SHA-256 bank PCR i>", ... 24 entries]}}

Unknown keys are ignored, as upstream's serde does (older guests also sent ``report_data``).
Everything else is strict: padded canonical base64, exactly 24 PCRs of exactly 32 bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject

PCR_COUNT = 24
PCR_SIZE = 32
_PCR_HEX = re.compile(r"[0-9a-fA-F]{64}")


def _field(obj: Mapping[str, object], key: str, where: str) -> object:
    if key not in obj:
        raise MalformedEvidence(f"tpm evidence: {where} lacks {key!r}")
    return obj[key]


def _b64(obj: Mapping[str, object], key: str, where: str) -> bytes:
    value = _field(obj, key, where)
    if not isinstance(value, str):
        raise MalformedEvidence(f"tpm evidence: {where}.{key} is not a string")
    try:
        return b64std_decode(value)
    except ValueError as e:
        raise MalformedEvidence(f"tpm evidence: {where}.{key} is not standard base64") from e


def _pcrs(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise MalformedEvidence("tpm evidence: tpm_quote.pcrs is not a list")
    if len(value) != PCR_COUNT:
        raise MalformedEvidence(f"tpm evidence: {len(value)} PCRs, expected {PCR_COUNT}")
    pcrs = []
    for index, item in enumerate(value):
        # fullmatch on a str: bytes.fromhex alone would also accept spaces.
        if not isinstance(item, str) or not _PCR_HEX.fullmatch(item):
            raise MalformedEvidence(f"tpm evidence: PCR {index} is not {2 * PCR_SIZE} hex digits")
        pcrs.append(bytes.fromhex(item))
    return tuple(pcrs)


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """``tpm_quote``: the marshalled quote, its signature and the SHA-256 bank PCR values.

    The PCR values are only what the guest claims; they are trusted once their digest matches
    the signed quote, and only for the PCRs the quote selects.
    """

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if len(self.pcrs) != PCR_COUNT or any(len(p) != PCR_SIZE for p in self.pcrs):
            raise MalformedEvidence(f"tpm evidence: expected {PCR_COUNT} PCRs of {PCR_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class TpmEvidence:
    """The decoded evidence; ``ak_public`` is DER bytes (not yet parsed as a key)."""

    ak_public: bytes
    quote: TpmQuote

    @classmethod
    def from_json(cls, value: object) -> TpmEvidence:
        """Decode the evidence from a JSON object, or from its JSON text."""
        if isinstance(value, str | bytes | bytearray):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as e:
                raise MalformedEvidence("tpm evidence is not JSON") from e
        if not isinstance(value, Mapping):
            raise MalformedEvidence("tpm evidence is not a JSON object")
        quote = _field(value, "tpm_quote", "evidence")
        if not isinstance(quote, Mapping):
            raise MalformedEvidence("tpm evidence: tpm_quote is not an object")
        return cls(
            ak_public=_b64(value, "ak_public", "evidence"),
            quote=TpmQuote(
                signature=_b64(quote, "signature", "tpm_quote"),
                message=_b64(quote, "message", "tpm_quote"),
                pcrs=_pcrs(_field(quote, "pcrs", "tpm_quote")),
            ),
        )

    def to_json(self) -> JsonObject:
        """The wire JSON (lower-case hex PCRs), the inverse of :meth:`from_json`."""
        return {
            "ak_public": b64std_encode(self.ak_public),
            "tpm_quote": {
                "signature": b64std_encode(self.quote.signature),
                "message": b64std_encode(self.quote.message),
                "pcrs": [pcr.hex() for pcr in self.quote.pcrs],
            },
        }
