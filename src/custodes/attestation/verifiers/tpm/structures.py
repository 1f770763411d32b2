"""TPM 2.0 wire structures a quote verifier reads: TPMS_ATTEST, TPMT_SIGNATURE, TPML_PCR_SELECTION.

Marshalling follows TPM 2.0 Library Part 2 (big-endian integers, ``TPM2B`` = ``u16`` size then
that many bytes). Each parser consumes its input exactly (trailing bytes are an error), bounds every
``TPM2B`` by its spec buffer size, and raises only
:class:`~custodes.errors.MalformedEvidence`. Parsing checks layout, not meaning: whether the magic
is ``TPM_GENERATED_VALUE``, whether the type is a quote and whether the scheme is acceptable are
verification steps of :mod:`.verifier`.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Any, Final

from custodes.errors import MalformedEvidence

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

TPM_ALG_SHA1 = 0x0004
TPM_ALG_HMAC = 0x0005
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_SM3_256 = 0x0012
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDAA = 0x001A
TPM_ALG_SM2 = 0x001B
TPM_ALG_ECSCHNORR = 0x001C

# Digest sizes of the hashes a TPMT_HA can carry (needed to parse an HMAC signature).
_DIGEST_SIZES = {
    TPM_ALG_SHA1: 20,
    TPM_ALG_SHA256: 32,
    TPM_ALG_SHA384: 48,
    TPM_ALG_SHA512: 64,
    TPM_ALG_SM3_256: 32,
}
_RSA_SCHEMES = frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS})
_ECC_SCHEMES = frozenset({TPM_ALG_ECDSA, TPM_ALG_ECDAA, TPM_ALG_SM2, TPM_ALG_ECSCHNORR})

# TPM2B buffer bounds (Part 2), for a TPM implementing hashes up to SHA-512 and RSA-4096.
_MAX_DIGEST = 64  # sizeof(TPMU_HA)
_MAX_HA = 2 + _MAX_DIGEST  # sizeof(TPMT_HA): bound of TPM2B_DATA and TPM2B_NAME
_MAX_RSA_KEY_BYTES = 512
_MAX_ECC_KEY_BYTES = 66  # P-521
_MAX_PCR_BANKS = 16  # HASH_COUNT is far lower on real TPMs; this only caps the loop
_PCR_SELECT_MAX = 32  # 256 PCRs; TPMs implement 24
_MAX_CACHED_SELECTIONS: Final = 256  # distinct PCR bitmaps whose index tuples are kept

_ATTEST_HEAD: Final = struct.Struct(">IH")  # magic, type
_ATTEST_CLOCK: Final = struct.Struct(">QIIBQ")  # clockInfo (clock, resets, restarts, safe), fw
_PCR_BANK_HEAD: Final = struct.Struct(">HB")  # hash, sizeofSelect


class _Reader:
    """A cursor over bytes whose every read either succeeds or raises MalformedEvidence."""

    __slots__ = ("_data", "_offset", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._offset = 0
        self._what = what

    def take(self, n: int) -> bytes:
        end = self._offset + n
        if end > len(self._data):
            raise MalformedEvidence(f"{self._what}: truncated at byte {self._offset}")
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        """Several fixed-size fields at once (one bounds check)."""
        return layout.unpack(self.take(layout.size))

    def tpm2b(self, max_size: int, field: str) -> bytes:
        # u16() then take(), inlined: a quote has four of these on the verifier's hot path.
        data, offset = self._data, self._offset
        start = offset + 2
        if start > len(data):
            raise MalformedEvidence(f"{self._what}: truncated at byte {offset}")
        size = data[offset] << 8 | data[offset + 1]
        if size > max_size:
            raise MalformedEvidence(f"{self._what}: {field} size {size} exceeds {max_size}")
        end = start + size
        if end > len(data):
            raise MalformedEvidence(f"{self._what}: truncated at byte {start}")
        self._offset = end
        return data[start:end]

    def rest(self) -> bytes:
        return self.take(len(self._data) - self._offset)

    def finish(self) -> None:
        if self._offset != len(self._data):
            extra = len(self._data) - self._offset
            raise MalformedEvidence(f"{self._what}: {extra} trailing bytes")


@dataclass(frozen=True, slots=True)
class TpmsPcrSelection:
    """TPMS_PCR_SELECTION: one bank and the bitmap of its selected PCRs."""

    hash_alg: int
    select: bytes

    @property
    def indices(self) -> tuple[int, ...]:
        """Selected PCR indices in ascending order (bit ``i`` of byte ``j`` is PCR ``8j+i``)."""
        return _selected_indices(self.select)


@functools.lru_cache(maxsize=_MAX_CACHED_SELECTIONS)
def _selected_indices(select: bytes) -> tuple[int, ...]:
    # Cached: a verifier sees the same few bitmaps (at most 32 bytes each) again and again.
    return tuple(8 * j + i for j, octet in enumerate(select) for i in range(8) if octet >> i & 1)


@dataclass(frozen=True, slots=True)
class TpmlPcrSelection:
    """TPML_PCR_SELECTION, in marshalled order (the order the TPM hashes the PCRs in)."""

    selections: tuple[TpmsPcrSelection, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmlPcrSelection:
        reader = _Reader(data, "TPML_PCR_SELECTION")
        parsed = cls._read(reader)
        reader.finish()
        return parsed

    @classmethod
    def _read(cls, reader: _Reader) -> TpmlPcrSelection:
        count = reader.u32()
        if count > _MAX_PCR_BANKS:
            raise MalformedEvidence(f"TPML_PCR_SELECTION: {count} banks")
        selections = []
        for _ in range(count):
            hash_alg, size = reader.unpack(_PCR_BANK_HEAD)
            if size > _PCR_SELECT_MAX:
                raise MalformedEvidence(f"TPML_PCR_SELECTION: sizeofSelect {size}")
            selections.append(TpmsPcrSelection(hash_alg, reader.take(size)))
        return cls(tuple(selections))


@dataclass(frozen=True, slots=True)
class TpmsQuoteInfo:
    """TPMS_QUOTE_INFO: the PCRs quoted and the digest of their values."""

    pcr_select: TpmlPcrSelection
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class TpmsClockInfo:
    """TPMS_CLOCK_INFO."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class TpmsAttest:
    """TPMS_ATTEST, as signed by the attestation key.

    ``quote`` is the parsed TPMS_QUOTE_INFO when ``type`` is ``TPM_ST_ATTEST_QUOTE``; for any
    other type the union is left unparsed in ``other_attested`` (a quote verifier refuses it).
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: TpmsClockInfo
    firmware_version: int
    quote: TpmsQuoteInfo | None
    other_attested: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmsAttest:
        reader = _Reader(data, "TPMS_ATTEST")
        magic, attest_type = reader.unpack(_ATTEST_HEAD)
        qualified_signer = reader.tpm2b(_MAX_HA, "qualifiedSigner")
        extra_data = reader.tpm2b(_MAX_HA, "extraData")
        clock, reset_count, restart_count, safe, firmware_version = reader.unpack(_ATTEST_CLOCK)
        if safe not in (0, 1):
            raise MalformedEvidence(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
        quote: TpmsQuoteInfo | None = None
        other = b""
        if attest_type == TPM_ST_ATTEST_QUOTE:
            pcr_select = TpmlPcrSelection._read(reader)
            quote = TpmsQuoteInfo(pcr_select, reader.tpm2b(_MAX_DIGEST, "pcrDigest"))
        else:
            other = reader.rest()
        reader.finish()
        return cls(
            magic=magic,
            type=attest_type,
            qualified_signer=qualified_signer,
            extra_data=extra_data,
            clock_info=TpmsClockInfo(clock, reset_count, restart_count, bool(safe)),
            firmware_version=firmware_version,
            quote=quote,
            other_attested=other,
        )


@dataclass(frozen=True, slots=True)
class TpmsSignatureRsa:
    """TPMS_SIGNATURE_RSA (RSASSA or RSAPSS)."""

    hash_alg: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class TpmsSignatureEcc:
    """TPMS_SIGNATURE_ECC (ECDSA, ECDAA, SM2, ECSCHNORR): big-endian ``r`` and ``s``."""

    hash_alg: int
    r: bytes
    s: bytes


@dataclass(frozen=True, slots=True)
class TpmtHa:
    """TPMT_HA of an HMAC signature."""

    hash_alg: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class TpmtSignature:
    """TPMT_SIGNATURE. ``detail`` is ``None`` only for ``TPM_ALG_NULL``."""

    sig_alg: int
    detail: TpmsSignatureRsa | TpmsSignatureEcc | TpmtHa | None

    @property
    def hash_alg(self) -> int:
        return TPM_ALG_NULL if self.detail is None else self.detail.hash_alg

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmtSignature:
        reader = _Reader(data, "TPMT_SIGNATURE")
        sig_alg = reader.u16()
        detail: TpmsSignatureRsa | TpmsSignatureEcc | TpmtHa | None
        if sig_alg in _RSA_SCHEMES:
            detail = TpmsSignatureRsa(reader.u16(), reader.tpm2b(_MAX_RSA_KEY_BYTES, "sig"))
        elif sig_alg in _ECC_SCHEMES:
            hash_alg = reader.u16()
            r = reader.tpm2b(_MAX_ECC_KEY_BYTES, "signatureR")
            s = reader.tpm2b(_MAX_ECC_KEY_BYTES, "signatureS")
            detail = TpmsSignatureEcc(hash_alg, r, s)
        elif sig_alg == TPM_ALG_HMAC:
            hash_alg = reader.u16()
            size = _DIGEST_SIZES.get(hash_alg)
            if size is None:
                raise MalformedEvidence(f"TPMT_SIGNATURE: unknown HMAC hash {hash_alg:#06x}")
            detail = TpmtHa(hash_alg, reader.take(size))
        elif sig_alg == TPM_ALG_NULL:
            detail = None
        else:
            raise MalformedEvidence(f"TPMT_SIGNATURE: unknown sigAlg {sig_alg:#06x}")
        reader.finish()
        return cls(sig_alg, detail)
