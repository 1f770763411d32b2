"""Errors specific to the TDX verifier, one per checklist step that has no shared class.

The shared classes are used where they already say exactly what failed:
:class:`~custodes.errors.MalformedEvidence` (step 1, and an undecodable event log in step 6),
:class:`~custodes.errors.CollateralError` and :class:`~custodes.errors.SignatureInvalid` /
:class:`~custodes.errors.ChainInvalid` (step 2), :class:`~custodes.errors.TcbError` (step 3),
:class:`~custodes.errors.BindingMismatch` (step 4), :class:`~custodes.errors.InitDataMismatch`
(step 5).
"""

from __future__ import annotations

from custodes.errors import MalformedEvidence, TcbError, VerificationError


class UnsupportedQuote(MalformedEvidence):
    """Step 1: a well-formed quote of a kind this verifier does not accept (not a TDX quote,
    not version 4/5, not an ECDSA-P256 attestation key, an unknown v5 body type, or
    certification data other than the QE report with an embedded PCK chain)."""

    code = "tdx-unsupported-quote"


class TcbRevoked(TcbError):
    """Step 3: the platform's TCB (or the QE's) is revoked; refused whatever the policy says."""

    code = "tdx-tcb-revoked"


class RtmrReplayMismatch(VerificationError, step="event-log"):
    """Step 6: replaying the event log does not give the quote's RTMR0..3."""

    code = "tdx-rtmr-replay-mismatch"
