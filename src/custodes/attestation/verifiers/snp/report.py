"""The 1184-byte SEV-SNP ATTESTATION_REPORT: one layout table, one parser.

Offsets from the SEV-SNP Firmware ABI specification (AMD #56860, "ATTESTATION_REPORT
Structure"); little-endian integers. The signature covers bytes ``[0x000, 0x2A0)``.
``SnpReport.from_bytes`` is the only way to build a report; it keeps ``raw`` and
``signed_bytes`` so the signature is checked over the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType
from typing import Final, NamedTuple

from custodes.attestation.verifiers.snp.tcb import (
    TURIN_FAMILY,
    Generation,
    TcbVersion,
    generation_from_cpuid,
)
from custodes.errors import MalformedEvidence

REPORT_SIZE: Final = 0x4A0  # 1184
SIGNED_SIZE: Final = 0x2A0
SIGNATURE_COMPONENT_SIZE: Final = 72  # r and s, little-endian, zero-extended from 48 bytes
ECDSA_P384_SHA384: Final = 1  # SIGNATURE_ALGO value


class Span(NamedTuple):
    offset: int
    size: int


# fmt: off
LAYOUT: Final = MappingProxyType({
    "version":            Span(0x000, 4),
    "guest_svn":          Span(0x004, 4),
    "policy":             Span(0x008, 8),
    "family_id":          Span(0x010, 16),
    "image_id":           Span(0x020, 16),
    "vmpl":               Span(0x030, 4),
    "signature_algo":     Span(0x034, 4),
    "current_tcb":        Span(0x038, 8),
    "platform_info":      Span(0x040, 8),
    "key_info":           Span(0x048, 4),   # 0x04C..0x050 reserved
    "report_data":        Span(0x050, 64),
    "measurement":        Span(0x090, 48),
    "host_data":          Span(0x0C0, 32),
    "id_key_digest":      Span(0x0E0, 48),
    "author_key_digest":  Span(0x110, 48),
    "report_id":          Span(0x140, 32),
    "report_id_ma":       Span(0x160, 32),
    "reported_tcb":       Span(0x180, 8),
    "cpuid_fam_id":       Span(0x188, 1),   # version 3+
    "cpuid_mod_id":       Span(0x189, 1),   # version 3+
    "cpuid_step":         Span(0x18A, 1),   # version 3+; 0x18B..0x1A0 reserved
    "chip_id":            Span(0x1A0, 64),
    "committed_tcb":      Span(0x1E0, 8),
    "current_build":      Span(0x1E8, 1),
    "current_minor":      Span(0x1E9, 1),
    "current_major":      Span(0x1EA, 1),   # 0x1EB reserved
    "committed_build":    Span(0x1EC, 1),
    "committed_minor":    Span(0x1ED, 1),
    "committed_major":    Span(0x1EE, 1),   # 0x1EF reserved
    "launch_tcb":         Span(0x1F0, 8),
    "launch_mit_vector":  Span(0x1F8, 8),   # version 5+
    "current_mit_vector": Span(0x200, 8),   # version 5+; 0x208..0x2A0 reserved
    "signature_r":        Span(0x2A0, 72),
    "signature_s":        Span(0x2E8, 72),  # 0x330..0x4A0 reserved
})
# fmt: on


class SigningKey(IntEnum):
    """KEY_INFO.SIGNING_KEY (bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY (u64) and its flags (ABI spec "GUEST_POLICY")."""

    raw: int

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def smt_allowed(self) -> bool:
        return bool(self.raw >> 16 & 1)

    @property
    def migrate_ma(self) -> bool:
        return bool(self.raw >> 18 & 1)

    @property
    def debug_allowed(self) -> bool:
        return bool(self.raw >> 19 & 1)

    @property
    def single_socket(self) -> bool:
        return bool(self.raw >> 20 & 1)

    @property
    def cxl_allowed(self) -> bool:
        return bool(self.raw >> 21 & 1)

    @property
    def mem_aes_256_xts(self) -> bool:
        return bool(self.raw >> 22 & 1)

    @property
    def rapl_disabled(self) -> bool:
        return bool(self.raw >> 23 & 1)

    @property
    def ciphertext_hiding(self) -> bool:
        return bool(self.raw >> 24 & 1)

    @property
    def page_swap_disabled(self) -> bool:
        return bool(self.raw >> 25 & 1)


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """PLATFORM_INFO (u64) and its flags."""

    raw: int

    @property
    def smt_enabled(self) -> bool:
        return bool(self.raw & 1)

    @property
    def tsme_enabled(self) -> bool:
        return bool(self.raw >> 1 & 1)

    @property
    def ecc_enabled(self) -> bool:
        return bool(self.raw >> 2 & 1)

    @property
    def rapl_disabled(self) -> bool:
        return bool(self.raw >> 3 & 1)

    @property
    def ciphertext_hiding_enabled(self) -> bool:
        return bool(self.raw >> 4 & 1)

    @property
    def alias_check_complete(self) -> bool:
        return bool(self.raw >> 5 & 1)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The u32 at 0x048: AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (4:2)."""

    raw: int

    @property
    def author_key_en(self) -> bool:
        return bool(self.raw & 1)

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.raw >> 1 & 1)

    @property
    def signing_key(self) -> int:
        """The raw 3-bit value; compare with :class:`SigningKey`."""
        return (self.raw >> 2) & 0b111


@dataclass(frozen=True, slots=True)
class SnpReport:
    """A parsed ATTESTATION_REPORT. Not verified: see ``SnpVerifier``."""

    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: TcbVersion
    platform_info: PlatformInfo
    key_info: KeyInfo
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: TcbVersion
    cpuid_fam_id: int | None
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: TcbVersion
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: TcbVersion
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes
    signature_s: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> SnpReport:
        """Parse exactly ``REPORT_SIZE`` bytes; anything else is ``MalformedEvidence``."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("an SNP report is bytes")
        raw = bytes(data)
        if len(raw) != REPORT_SIZE:
            raise MalformedEvidence(f"SNP report is {len(raw)} bytes, expected {REPORT_SIZE}")

        def field(name: str) -> bytes:
            offset, size = LAYOUT[name]
            return raw[offset : offset + size]

        def uint(name: str) -> int:
            return int.from_bytes(field(name), "little")

        version = uint("version")
        has_cpuid = version >= 3
        family = uint("cpuid_fam_id") if has_cpuid else None
        # Turin moved the SPL bytes (tcb.py); only a v3+ report can say it is Turin.
        turin = family == TURIN_FAMILY

        def tcb(name: str) -> TcbVersion:
            return TcbVersion.from_bytes(field(name), turin=turin)

        has_mit = version >= 5
        return cls(
            raw=raw,
            version=version,
            guest_svn=uint("guest_svn"),
            policy=GuestPolicy(uint("policy")),
            family_id=field("family_id"),
            image_id=field("image_id"),
            vmpl=uint("vmpl"),
            signature_algo=uint("signature_algo"),
            current_tcb=tcb("current_tcb"),
            platform_info=PlatformInfo(uint("platform_info")),
            key_info=KeyInfo(uint("key_info")),
            report_data=field("report_data"),
            measurement=field("measurement"),
            host_data=field("host_data"),
            id_key_digest=field("id_key_digest"),
            author_key_digest=field("author_key_digest"),
            report_id=field("report_id"),
            report_id_ma=field("report_id_ma"),
            reported_tcb=tcb("reported_tcb"),
            cpuid_fam_id=family,
            cpuid_mod_id=uint("cpuid_mod_id") if has_cpuid else None,
            cpuid_step=uint("cpuid_step") if has_cpuid else None,
            chip_id=field("chip_id"),
            committed_tcb=tcb("committed_tcb"),
            current_build=uint("current_build"),
            current_minor=uint("current_minor"),
            current_major=uint("current_major"),
            committed_build=uint("committed_build"),
            committed_minor=uint("committed_minor"),
            committed_major=uint("committed_major"),
            launch_tcb=tcb("launch_tcb"),
            launch_mit_vector=uint("launch_mit_vector") if has_mit else None,
            current_mit_vector=uint("current_mit_vector") if has_mit else None,
            signature_r=field("signature_r"),
            signature_s=field("signature_s"),
        )

    @property
    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: ``raw[0:0x2A0]``."""
        return self.raw[:SIGNED_SIZE]

    @property
    def generation(self) -> Generation | None:
        """The processor generation from CPUID (v3+); ``None`` when absent or unknown."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return generation_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def cpuid_known(self) -> bool:
        """True when the report carries a non-zero CPUID family/model (v3+ firmware)."""
        return bool(self.cpuid_fam_id or self.cpuid_mod_id)

    @property
    def signature_ints(self) -> tuple[int, int]:
        """(r, s) as integers, decoded from their little-endian fields."""
        return int.from_bytes(self.signature_r, "little"), int.from_bytes(
            self.signature_s, "little"
        )
