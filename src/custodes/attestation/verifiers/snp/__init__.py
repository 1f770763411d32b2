"""AMD SEV-SNP (``snp``) evidence: report parsing, AMD certificate chain, verification.

``SnpVerifier(SnpVerifierConfig(...)).verify(request)`` is the entry point; the checklist is in
``verifier.py``. Pinned AMD CA certificates are package data in ``roots/``.
"""

from __future__ import annotations

from custodes.attestation.verifiers.snp.certs import AmdRoots, pinned_roots
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion
from custodes.attestation.verifiers.snp.verifier import SnpVerifier, SnpVerifierConfig, snp_claims

__all__ = [
    "AmdRoots",
    "Generation",
    "SnpEvidence",
    "SnpReport",
    "SnpVerifier",
    "SnpVerifierConfig",
    "TcbVersion",
    "pinned_roots",
    "snp_claims",
]
