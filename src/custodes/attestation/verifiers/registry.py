"""The verifiers a broker enables, by TEE.

Network access is opt-in: SNP fetches VCEKs from AMD KDS only with ``snp_kds_url`` set, and
TDX reads collateral from a file or, only when ``tdx_pccs_url`` is set, from a PCCS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from custodes._internal.clock import Clock
from custodes.attestation.verifiers.azure import (
    AzSnpVtpmVerifier,
    AzTdxVtpmVerifier,
    AzureVerifierConfig,
)
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp.collateral import Fetcher
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tdx.collateral import httpx_fetcher
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.types.tee import Tee

FETCH_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    """Per-TEE verifier settings, filled from the broker's configuration."""

    snp_vcek_store_dir: Path | None = None
    snp_kds_url: str | None = None
    tdx_collateral: Path | None = None
    tdx_pccs_url: str | None = None


def _kds_fetcher(client: httpx.Client) -> Fetcher:
    def fetch(url: str) -> bytes:
        response = client.get(url, timeout=FETCH_TIMEOUT_SECONDS)
        response.raise_for_status()
        return bytes(response.content)

    return fetch


def build_verifiers(settings: VerifierSettings, clock: Clock) -> dict[Tee, Verifier]:
    """One verifier per TEE this broker can verify. The sample verifier is always built;
    whether the sample TEE is accepted is the broker's decision (``unsafe_allow_sample_tee``).
    TDX and az-tdx-vtpm are enabled only when a collateral source is configured."""
    verifiers: dict[Tee, Verifier] = {Tee.SAMPLE: SampleVerifier(), Tee.TPM: TpmVerifier()}
    snp = SnpVerifierConfig(vcek_store_dir=settings.snp_vcek_store_dir, clock=clock)
    if settings.snp_kds_url:
        fetch = _kds_fetcher(httpx.Client())
        snp = SnpVerifierConfig(
            vcek_store_dir=settings.snp_vcek_store_dir,
            kds_fetcher=fetch,
            kds_base_url=settings.snp_kds_url,
            clock=clock,
        )
    verifiers[Tee.SNP] = SnpVerifier(snp)
    verifiers[Tee.AZ_SNP_VTPM] = AzSnpVtpmVerifier(AzureVerifierConfig(clock=clock))
    # Device evidence only (additional_evidence next to a CPU TEE); fully offline.
    verifiers[Tee.NVIDIA] = NvidiaVerifier(NvidiaVerifierConfig(clock=clock))
    if settings.tdx_collateral is not None or settings.tdx_pccs_url:
        fetcher = httpx_fetcher(httpx.Client()) if settings.tdx_pccs_url else None
        verifiers[Tee.TDX] = TdxVerifier(
            TdxVerifierConfig(
                collateral_path=settings.tdx_collateral,
                pccs_url=settings.tdx_pccs_url,
                fetcher=fetcher,
                clock=clock,
            )
        )
        verifiers[Tee.AZ_TDX_VTPM] = AzTdxVtpmVerifier(
            AzureVerifierConfig(
                clock=clock,
                tdx_collateral_path=settings.tdx_collateral,
                tdx_pccs_url=settings.tdx_pccs_url,
                tdx_fetcher=fetcher,
            )
        )
    return verifiers
