"""TEE names: the single source of truth for the wire names of upstream's ``Tee`` enum."""

from __future__ import annotations

from enum import StrEnum

from custodes.errors import UnsupportedTee


class Tee(StrEnum):
    AZ_SNP_VTPM = "az-snp-vtpm"
    AZ_TDX_VTPM = "az-tdx-vtpm"
    NVIDIA = "nvidia"
    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"
    CCA = "cca"
    CSV = "csv"
    SE = "se"
    HYGONDCU = "hygondcu"
    TPM = "tpm"
    SAMPLE = "sample"
    SAMPLEDEVICE = "sampledevice"

    @classmethod
    def parse(cls, name: object) -> Tee:
        """The TEE named ``name`` on the wire, or ``UnsupportedTee``."""
        if isinstance(name, str):
            try:
                return cls(name)
            except ValueError:
                pass
        raise UnsupportedTee(f"unknown TEE type {name!r}")

    @property
    def device(self) -> bool:
        """True for device TEEs (GPUs, accelerators): accepted only as additional evidence
        next to a CPU TEE, never as the session's own TEE."""
        return self in (Tee.NVIDIA, Tee.HYGONDCU, Tee.SAMPLEDEVICE)

    @property
    def insecure(self) -> bool:
        """True for the test TEEs that prove nothing."""
        return self in (Tee.SAMPLE, Tee.SAMPLEDEVICE)
