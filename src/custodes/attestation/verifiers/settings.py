"""What a verifier is built from: the per-TEE settings of the broker's configuration (or of
the offline command line), read by each verifier package's ``from_settings``.

Kept apart from :mod:`.registry` so that a verifier package can read its settings without
importing the registry that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from custodes._internal.clock import Clock
from custodes.attestation.verifiers.base import Verifier


@dataclass(frozen=True, slots=True)
class VerifierSettings:
    """Per-TEE verifier settings, filled from the broker's configuration.

    The two URLs are network sources: a verifier built with ``network=False`` ignores them.
    """

    snp_vcek_store_dir: Path | None = None
    snp_kds_url: str | None = None
    tdx_collateral: Path | None = None
    tdx_pccs_url: str | None = None

    @property
    def has_tdx_collateral(self) -> bool:
        """A TDX collateral source is configured (a file, or a PCCS URL)."""
        return self.tdx_collateral is not None or bool(self.tdx_pccs_url)


class VerifierFactory(Protocol):
    """``from_settings`` of a verifier module: the verifier for these settings, on ``clock``;
    with ``network=False`` it contacts no remote service whatever the settings say."""

    def __call__(self, settings: VerifierSettings, clock: Clock, *, network: bool) -> Verifier:
        """The verifier."""
        ...
