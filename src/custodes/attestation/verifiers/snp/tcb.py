"""SNP processor generations, and the TCB_VERSION structure whose byte layout depends on them
(SEV-SNP Firmware ABI, AMD #56860, "TCB_VERSION"; VCEK spec, AMD #57230; the layout itself is
in :mod:`custodes.protocol.evidence.snp_report`).

The generation comes from the report's CPUID family/model, present from report version 3 on.
"""

from __future__ import annotations

from enum import StrEnum

# The TCB_VERSION layout is the guest's as well (it writes the report's JSON form).
from custodes.protocol.evidence.snp_report import TCB_SIZE, TURIN_FAMILY, TcbVersion

__all__ = ["TCB_SIZE", "TURIN_FAMILY", "Generation", "TcbVersion", "generation_from_cpuid"]

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
