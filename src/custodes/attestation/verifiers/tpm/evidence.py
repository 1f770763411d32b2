"""The ``tpm`` evidence JSON, exactly as upstream's guest attester sends it.

::

    {"ak_public": "<std base64 of the AK's DER SubjectPublicKeyInfo>",
     "tpm_quote": {"signature": "<std base64 of the marshalled TPMT_SIGNATURE>",
                   "message":   "<std base64 of the marshalled TPMS_ATTEST>",
                   "pcrs":      ["<64 hex digits: SHA-256 bank PCR i>", ... 24 entries]}}

Unknown keys are ignored, as upstream's serde does (older guests also sent ``report_data``).
custodes guests may add ``"uefi_eventlog": "<std base64 of the TCG2 firmware event log>"``
(``/sys/kernel/security/tpm0/binary_bios_measurements``); it is optional, so evidence without it
is upstream's, and upstream's verifier ignores it.
Everything else is strict: padded canonical base64, exactly 24 PCRs of exactly 32 bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, cast

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.verifiers.base import evidence_object
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject

PCR_COUNT = 24
EVENTLOG_KEY: Final = "uefi_eventlog"
PCR_SIZE = 32
_PCR_HEX = re.compile(r"[0-9a-fA-F]{64}")
_PCR_BANK: Final = struct.Struct(f"{PCR_SIZE}s" * PCR_COUNT)  # 24 PCR values back to back


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


def decode_pcr_bank(values: Sequence[object]) -> tuple[bytes, ...] | None:
    """The 24 PCR values when ``values`` is exactly 24 strings of exactly 64 hex digits (either
    case); ``None`` for anything else, so that the caller can find and name the bad entry.

    One pass for the whole bank instead of a regex per entry: the strings are joined and
    decoded by ``bytes.fromhex``, which refuses any non-hex character except ASCII whitespace;
    whitespace takes the place of a digit, so with 24 x 64 characters in all it leaves fewer
    than 24 x 32 bytes, which is refused too.
    """
    if len(values) != PCR_COUNT:
        return None
    # type() rather than isinstance: a str subclass takes the per-entry path, which accepts it.
    if set(map(type, values)) != {str}:
        return None
    texts = cast("Sequence[str]", values)  # all str: checked just above
    if set(map(len, texts)) != {2 * PCR_SIZE}:
        return None
    try:
        bank = bytes.fromhex("".join(texts))
    except ValueError:
        return None
    if len(bank) != PCR_COUNT * PCR_SIZE:
        return None
    pcrs: tuple[bytes, ...] = _PCR_BANK.unpack(bank)
    return pcrs


def _pcrs(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise MalformedEvidence("tpm evidence: tpm_quote.pcrs is not a list")
    if len(value) != PCR_COUNT:
        raise MalformedEvidence(f"tpm evidence: {len(value)} PCRs, expected {PCR_COUNT}")
    fast = decode_pcr_bank(value)
    if fast is not None:
        return fast
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
        if len(self.pcrs) != PCR_COUNT or set(map(len, self.pcrs)) != {PCR_SIZE}:
            raise MalformedEvidence(f"tpm evidence: expected {PCR_COUNT} PCRs of {PCR_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class TpmEvidence:
    """The decoded evidence; ``ak_public`` is DER bytes (not yet parsed as a key)."""

    ak_public: bytes
    quote: TpmQuote
    eventlog: bytes | None = None  # the UEFI (TCG2) event log, when the guest sent one

    @classmethod
    def from_json(cls, value: object) -> TpmEvidence:
        """Decode the evidence from a JSON object, or from its JSON text."""
        value = evidence_object(value, "tpm")
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
            eventlog=_b64(value, EVENTLOG_KEY, "evidence") if EVENTLOG_KEY in value else None,
        )

    def to_json(self) -> JsonObject:
        """The wire JSON (lower-case hex PCRs), the inverse of :meth:`from_json`."""
        out: JsonObject = {
            "ak_public": b64std_encode(self.ak_public),
            "tpm_quote": {
                "signature": b64std_encode(self.quote.signature),
                "message": b64std_encode(self.quote.message),
                "pcrs": [pcr.hex() for pcr in self.quote.pcrs],
            },
        }
        if self.eventlog is not None:
            out[EVENTLOG_KEY] = b64std_encode(self.eventlog)
        return out
