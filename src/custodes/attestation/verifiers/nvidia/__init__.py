"""NVIDIA GPU (``nvidia``) evidence: SPDM report parsing, device certificate chain, local
verification of Hopper GPUs.

``NvidiaVerifier(NvidiaVerifierConfig(...)).verify(request)`` is the entry point; the
checklist is in ``verifier.py``. The pinned NVIDIA device root is package data in ``roots/``,
next to the pinned RIM signing root that ``rim.py`` (reference integrity manifests, checked
offline) uses.
"""

from __future__ import annotations

from custodes.attestation.verifiers.nvidia.certs import pinned_root
from custodes.attestation.verifiers.nvidia.evidence import DeviceEvidence, parse_evidence
from custodes.attestation.verifiers.nvidia.spdm import HopperReport
from custodes.attestation.verifiers.nvidia.verifier import (
    NvidiaVerifier,
    NvidiaVerifierConfig,
    gpu_claims,
)

__all__ = [
    "DeviceEvidence",
    "HopperReport",
    "NvidiaVerifier",
    "NvidiaVerifierConfig",
    "gpu_claims",
    "parse_evidence",
    "pinned_root",
]
