"""The 1184-byte SEV-SNP ATTESTATION_REPORT: one parser over the layout table.

The layout (offsets from the SEV-SNP Firmware ABI specification, AMD #56860) is the guest's as
well, so it lives on the ground floor: :mod:`custodes.protocol.evidence.snp_report`.
``SnpReport.from_bytes`` is the only way to build a report; it keeps ``raw`` and
``signed_bytes`` so the signature is checked over the original bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from custodes.attestation.verifiers.flags import Flag
from custodes.attestation.verifiers.snp.tcb import Generation, generation_from_cpuid
from custodes.protocol.evidence.snp_report import (
    LAYOUT,
    REPORT_SIZE,
    SIGNATURE_COMPONENT_SIZE,
    SIGNED_SIZE,
    ReportBytes,
    Span,
    TcbVersion,
)

__all__ = [
    "ECDSA_P384_SHA384",
    "LAYOUT",
    "REPORT_SIZE",
    "SIGNATURE_COMPONENT_SIZE",
    "SIGNED_SIZE",
    "GuestPolicy",
    "KeyInfo",
    "PlatformInfo",
    "SigningKey",
    "SnpReport",
    "Span",
]

ECDSA_P384_SHA384: Final = 1  # SIGNATURE_ALGO value


class SigningKey(IntEnum):
    """KEY_INFO.SIGNING_KEY (bits 4:2): which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The guest POLICY (u64) and its flags (ABI spec "GUEST_POLICY")."""

    raw: int

    smt_allowed = Flag(16)
    migrate_ma = Flag(18)
    debug_allowed = Flag(19)
    single_socket = Flag(20)
    cxl_allowed = Flag(21)
    mem_aes_256_xts = Flag(22)
    rapl_disabled = Flag(23)
    ciphertext_hiding = Flag(24)
    page_swap_disabled = Flag(25)

    @property
    def abi_minor(self) -> int:
        return self.raw & 0xFF

    @property
    def abi_major(self) -> int:
        return (self.raw >> 8) & 0xFF


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """PLATFORM_INFO (u64) and its flags."""

    raw: int

    smt_enabled = Flag(0)
    tsme_enabled = Flag(1)
    ecc_enabled = Flag(2)
    rapl_disabled = Flag(3)
    ciphertext_hiding_enabled = Flag(4)
    alias_check_complete = Flag(5)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The u32 at 0x048: AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (4:2)."""

    raw: int

    author_key_en = Flag(0)
    mask_chip_key = Flag(1)

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
        report = ReportBytes.of(bytes(data))
        raw, field, uint, tcb = report.raw, report.field, report.uint, report.tcb
        version = report.version
        has_cpuid = version >= 3
        family = uint("cpuid_fam_id") if has_cpuid else None

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
