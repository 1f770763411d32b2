"""The error hierarchy shared by every component.

Each class carries a stable ``code``; tests assert on the class and code, never on the
message. Only ``custodes.kbs.errors`` maps errors to HTTP statuses and wire error types.
"""

from __future__ import annotations

from typing import ClassVar


class CustodesError(Exception):
    """Root of every error custodes raises on purpose."""

    code: ClassVar[str] = "custodes-error"


class ConfigError(CustodesError):
    """A configuration file or option is invalid."""

    code = "config"


# --- wire protocol -----------------------------------------------------------------------


class ProtocolError(CustodesError):
    """A KBS protocol message is malformed or not acceptable."""

    code = "protocol"


class MalformedMessage(ProtocolError):
    """A message does not parse or lacks a required field."""

    code = "malformed-message"


class UnsupportedVersion(ProtocolError):
    """The client speaks another KBS protocol version."""

    code = "unsupported-version"


class UnsupportedTee(ProtocolError):
    """The TEE type is unknown or not enabled on this broker."""

    code = "unsupported-tee"


class InvalidTeeKey(ProtocolError):
    """The ``tee-pubkey`` JWK is malformed, weak, or uses a refused algorithm."""

    code = "invalid-tee-key"


class JweError(ProtocolError):
    """A JWE cannot be built or opened."""

    code = "jwe"


class InvalidResourcePath(ProtocolError):
    """A resource path or ``kbs://`` URI is malformed."""

    code = "invalid-resource-path"


# --- evidence and attestation ------------------------------------------------------------


class EvidenceError(CustodesError):
    """Evidence could not be used.

    ``step`` names the verifier checklist step that failed (what ``custodes evidence verify``
    reports). A subclass that is its own step names it on its class line
    (``class VmplNotZero(VerificationError, step="vmpl")``); the others inherit their parent's.
    """

    code = "evidence"
    step: ClassVar[str] = "evidence"

    def __init_subclass__(cls, *, step: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if step is not None:
            cls.step = step


class MalformedEvidence(EvidenceError, step="parse"):
    """Evidence bytes or JSON do not parse."""

    code = "malformed-evidence"


class VerificationError(EvidenceError, step="verification"):
    """Evidence parsed but a verification step failed."""

    code = "verification"


class SignatureInvalid(VerificationError, step="signature"):
    code = "signature-invalid"


class ChainInvalid(VerificationError, step="certificate-chain"):
    code = "chain-invalid"


class BindingMismatch(VerificationError, step="report-data"):
    """The evidence is not bound to this session's nonce and key (report data)."""

    code = "binding-mismatch"


class InitDataMismatch(VerificationError, step="init-data"):
    """The evidence's init-data field does not match the init-data digest."""

    code = "init-data-mismatch"


class TcbError(VerificationError, step="tcb"):
    """The TCB reported by the evidence is not acceptable."""

    code = "tcb"


class CollateralError(VerificationError, step="collateral"):
    """Collateral (certificates, CRLs, TCB info) is missing, expired or invalid."""

    code = "collateral"


# --- policy and tokens -------------------------------------------------------------------


class PolicyError(CustodesError):
    """A policy cannot be compiled or evaluated."""

    code = "policy"


class PolicyDenied(CustodesError):
    """A policy evaluated and refused."""

    code = "policy-denied"


class TokenError(CustodesError):
    """An attestation token or admin JWT is missing, forged, expired or not trusted."""

    code = "token"


class ReferenceValueError(CustodesError):
    """A reference-value message is malformed or the value is unknown."""

    code = "reference-value"


# --- server state ------------------------------------------------------------------------


class SessionError(CustodesError):
    """The KBS session is unknown, expired, or its challenge was already used."""

    code = "session"


class NotFound(CustodesError):
    """A stored object does not exist."""

    code = "not-found"


class StorageError(CustodesError):
    """The store failed."""

    code = "storage"


class AdminAuthError(CustodesError):
    """An admin request is not authenticated or not authorised."""

    code = "admin-auth"


class UpstreamError(CustodesError):
    """A remote service (broker, KDS, PCCS) failed or answered unexpectedly."""

    code = "upstream"
