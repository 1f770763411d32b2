"""Intel TDX verifier (``tdx``): DCAP quote v4/v5 verification with dcap-qvl, REPORTDATA and
MRCONFIGID binding, CC event log replay into RTMR0..3, and upstream's claims.

See :mod:`.verifier` for the checklist, :mod:`.quote` for the quote layout (and the rule for
trailing zero padding), :mod:`.collateral` for the collateral sources, :mod:`.claims` for the
claim names.
"""

from __future__ import annotations

from custodes.attestation.verifiers.tdx.collateral import (
    Collateral,
    Fetcher,
    PcsResponse,
    httpx_fetcher,
)
from custodes.attestation.verifiers.tdx.errors import (
    RtmrReplayMismatch,
    TcbRevoked,
    UnsupportedQuote,
)
from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.attestation.verifiers.tdx.verifier import TdxVerifier, TdxVerifierConfig

__all__ = [
    "Collateral",
    "Fetcher",
    "PcsResponse",
    "RtmrReplayMismatch",
    "TcbRevoked",
    "TdxEvidence",
    "TdxQuote",
    "TdxVerifier",
    "TdxVerifierConfig",
    "UnsupportedQuote",
    "httpx_fetcher",
]
