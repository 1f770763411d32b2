"""SNP processor generations and the TCB_VERSION structure.

``TCB_VERSION`` is a 64-bit value whose byte layout depends on the processor generation
(SEV-SNP Firmware ABI, AMD #56860, "TCB_VERSION"; VCEK spec, AMD #57230):

* Milan, Genoa: byte 0 bootloader, 1 tee, 2-5 reserved, 6 snp, 7 microcode;
* Turin: byte 0 fmc, 1 bootloader, 2 tee, 3 snp, 4-6 reserved, 7 microcode.

The generation comes from the report's CPUID family/model, present from report version 3 on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from custodes.errors import MalformedEvidence

TCB_SIZE = 8
TURIN_FAMILY = 0x1A
_ZEN3_4_FAMILY = 0x19


class Generation(StrEnum):
    """An SNP processor generation; the value is AMD KDS's product name."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


def generation_from_cpuid(family: int, model: int) -> Generation | None:
    """The generation of a CPUID family/model, or ``None`` when it is not a known SNP part.

    Ranges as upstream's verifier: family 0x19 models 0x00-0x0F Milan, 0x10-0x1F and
    0xA0-0xAF Genoa (Genoa, Bergamo, Siena); family 0x1A models 0x00-0x11 Turin.
    """
    if family == _ZEN3_4_FAMILY:
        if model <= 0x0F:
            return Generation.MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return Generation.GENOA
    elif family == TURIN_FAMILY and model <= 0x11:
        return Generation.TURIN
    return None


@dataclass(frozen=True, slots=True)
class TcbVersion:
    """One decoded TCB_VERSION. ``fmc`` is set for Turin only; ``raw`` keeps the 8 bytes."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None
    raw: bytes

    @classmethod
    def from_bytes(cls, data: bytes, *, turin: bool) -> TcbVersion:
        if len(data) != TCB_SIZE:
            raise MalformedEvidence(f"TCB_VERSION is {len(data)} bytes, expected {TCB_SIZE}")
        raw = bytes(data)
        if turin:
            return cls(
                bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0], raw=raw
            )
        return cls(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7], fmc=None, raw=raw)

    @classmethod
    def from_parts(
        cls, *, bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None = None
    ) -> TcbVersion:
        """Encode SPL values; a non-``None`` ``fmc`` selects the Turin layout."""
        for name, value in (
            ("bootloader", bootloader),
            ("tee", tee),
            ("snp", snp),
            ("microcode", microcode),
            ("fmc", 0 if fmc is None else fmc),
        ):
            if not 0 <= value <= 0xFF:
                raise ValueError(f"TCB {name} SPL {value} does not fit a byte")
        raw = bytearray(TCB_SIZE)
        if fmc is None:
            raw[0], raw[1], raw[6], raw[7] = bootloader, tee, snp, microcode
        else:
            raw[0], raw[1], raw[2], raw[3], raw[7] = fmc, bootloader, tee, snp, microcode
        return cls(
            bootloader=bootloader, tee=tee, snp=snp, microcode=microcode, fmc=fmc, raw=bytes(raw)
        )

    @property
    def spl_values(self) -> dict[str, int]:
        """The SPLs named as AMD's KDS names them, in KDS query order (fmc first on Turin)."""
        spl = {} if self.fmc is None else {"fmcSPL": self.fmc}
        spl.update(blSPL=self.bootloader, teeSPL=self.tee, snpSPL=self.snp, ucodeSPL=self.microcode)
        return spl
