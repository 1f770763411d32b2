"""The TEEs custodes verifies, one line each, and the one factory that builds their verifiers
for the broker (``build_verifiers``) and for offline verification on the command line
(``build_verifier`` with ``network=False``).

A line names the module whose ``from_settings`` (:class:`.settings.VerifierFactory`) builds the
verifier; the module is imported only when a verifier is built, so that reading the table (the
CLI's ``--tee`` choices) loads no verifier, cryptography or HTTP client.

Network access is opt-in: SNP fetches VCEKs from AMD KDS only with ``snp_kds_url`` set, and
TDX reads collateral from a file or, only when ``tdx_pccs_url`` is set, from a PCCS; with
``network=False`` neither URL is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, cast

from custodes._internal.clock import Clock
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.settings import VerifierFactory, VerifierSettings
from custodes.errors import ConfigError
from custodes.types.tee import Tee

__all__ = ["REGISTRY", "Registration", "VerifierSettings", "build_verifier", "build_verifiers"]

_PACKAGE: Final = "custodes.attestation.verifiers"


@dataclass(frozen=True, slots=True)
class Registration:
    """How one TEE's verifier is built, and which settings it reads.

    ``module`` (under ``custodes.attestation.verifiers``) defines ``from_settings``.
    ``tdx_collateral``: the verifier needs a TDX collateral source; the broker enables it only
    when one is configured, and offline verification requires ``--collateral``.
    ``vcek_store``: the verifier reads an offline VCEK store (``--vcek-store``).
    """

    module: str
    tdx_collateral: bool = False
    vcek_store: bool = False

    def factory(self) -> VerifierFactory:
        module = importlib.import_module(f"{_PACKAGE}.{self.module}")
        return cast(VerifierFactory, module.from_settings)


# One line per TEE, in the order the CLI lists them. Adding a TEE: a verifier package with a
# ``from_settings``, an attester module on the guest side, and a line here.
REGISTRY: Final[Mapping[Tee, Registration]] = {
    Tee.SNP: Registration("snp.verifier", vcek_store=True),
    Tee.TDX: Registration("tdx.verifier", tdx_collateral=True),
    Tee.TPM: Registration("tpm.verifier"),
    Tee.AZ_SNP_VTPM: Registration("azure.snp_verifier"),
    Tee.AZ_TDX_VTPM: Registration("azure.tdx_verifier", tdx_collateral=True),
    Tee.NVIDIA: Registration("nvidia.verifier"),
    Tee.SAMPLE: Registration("sample"),
}


def build_verifier(
    tee: Tee, settings: VerifierSettings, clock: Clock, network: bool = False
) -> Verifier:
    """The verifier for ``tee``; with ``network=False`` (the default) every network source
    is off whatever ``settings`` say. ``ConfigError`` for a TEE that is not registered."""
    registration = REGISTRY.get(tee)
    if registration is None:
        raise ConfigError(f"no verifier for {tee}")
    return registration.factory()(settings, clock, network=network)


def build_verifiers(settings: VerifierSettings, clock: Clock) -> dict[Tee, Verifier]:
    """One verifier per TEE this broker can verify, network sources as configured. The sample
    verifier is always built; whether the sample TEE is accepted is the broker's decision
    (``unsafe_allow_sample_tee``). TDX and az-tdx-vtpm are enabled only when a collateral
    source is configured."""
    return {
        tee: build_verifier(tee, settings, clock, network=True)
        for tee, registration in REGISTRY.items()
        if not registration.tdx_collateral or settings.has_tdx_collateral
    }
