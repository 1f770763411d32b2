"""Configuration of the Azure verifiers.

``az-snp-vtpm`` evidence always carries its VCEK, so it needs only the clock (VCEK, ASK and ARK
validity windows). ``az-tdx-vtpm`` needs DCAP collateral for the TD quote, from a file or a
PCS/PCCS (exactly as the ``tdx`` verifier, see ``tdx/collateral.py``); without it every
az-tdx-vtpm evidence is refused (:class:`.errors.TdQuoteUnverified`), since an unverified TD
quote proves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.verifiers.tdx import Fetcher, TdxVerifierConfig
from custodes.attestation.verifiers.tdx.collateral import TcbUpdate


@dataclass(frozen=True, slots=True)
class AzureVerifierConfig:
    """``tdx_collateral_path`` or ``tdx_pccs_url`` (with ``tdx_fetcher``) enables az-tdx-vtpm.

    ``tdx_root_ca_der`` replaces Intel's SGX Root CA (synthetic test PKIs only).
    """

    clock: Clock = field(default_factory=SystemClock)
    tdx_collateral_path: Path | None = None
    tdx_pccs_url: str | None = None
    tdx_fetcher: Fetcher | None = None
    tdx_tcb_update: TcbUpdate = "early"
    tdx_root_ca_der: bytes | None = None

    @property
    def tdx_enabled(self) -> bool:
        return self.tdx_collateral_path is not None or self.tdx_pccs_url is not None

    def tdx_config(self) -> TdxVerifierConfig:
        """The ``tdx`` verifier's configuration for the TD quote (same clock)."""
        return TdxVerifierConfig(
            collateral_path=self.tdx_collateral_path,
            pccs_url=self.tdx_pccs_url,
            fetcher=self.tdx_fetcher,
            clock=self.clock,
            tcb_update=self.tdx_tcb_update,
            root_ca_der=self.tdx_root_ca_der,
        )
