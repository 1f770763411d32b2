"""The only place that maps custodes errors to HTTP statuses and ``ErrorInformation``.

Error ``type`` URIs keep upstream's variant names where upstream has one, so that upstream
clients and dashboards keep working. Statuses follow upstream where its clients act on them
(401 means "attestation or authorisation failed, re-attest"), and are more precise where
upstream answers 401 for a client's mistake: a malformed body is 400, an oversized one 413,
an unknown path or resource 404. A 500 is only ever an internal fault, and its detail never
carries internal state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custodes import errors as e
from custodes.kbs.admin_auth import AdminForbidden
from custodes.kbs.policy_selector import UnknownPolicySelector
from custodes.kbs.tenants import TenantExists, TenantSuspended

ERROR_TYPE_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors/"


class RequestTooLarge(e.ProtocolError):
    code = "request-too-large"


class EndpointNotFound(e.CustodesError):
    code = "endpoint-not-found"


class MethodNotAllowed(e.CustodesError):
    code = "method-not-allowed"


class TokenNotFound(e.TokenError):
    code = "token-not-found"


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    variant: str


# Most specific classes first: the first isinstance match wins.
_TABLE: Final[tuple[tuple[type[BaseException], HttpError], ...]] = (
    (RequestTooLarge, HttpError(413, "PayloadTooLarge")),
    (TenantExists, HttpError(409, "Conflict")),
    (TenantSuspended, HttpError(403, "TenantSuspended")),
    (EndpointNotFound, HttpError(404, "PluginNotFound")),
    (MethodNotAllowed, HttpError(405, "MethodNotAllowed")),
    (e.InvalidResourcePath, HttpError(404, "InvalidRequestPath")),
    (TokenNotFound, HttpError(401, "TokenNotFound")),
    (e.TokenError, HttpError(401, "TokenVerifierError")),
    (AdminForbidden, HttpError(403, "AdminAuthAccess")),
    (e.AdminAuthError, HttpError(401, "AdminAuthAccess")),
    (e.PolicyDenied, HttpError(401, "PolicyDeny")),
    (e.PolicyError, HttpError(400, "ParsePolicyError")),
    (e.ReferenceValueError, HttpError(400, "RvpsError")),
    (e.NotFound, HttpError(404, "ResourceNotFound")),
    (e.SessionError, HttpError(401, "AttestationError")),
    (e.EvidenceError, HttpError(401, "AttestationError")),
    (e.UnsupportedVersion, HttpError(400, "AttestationError")),
    (UnknownPolicySelector, HttpError(400, "AttestationError")),
    (e.UnsupportedTee, HttpError(400, "AttestationError")),
    (e.InvalidTeeKey, HttpError(400, "AttestationError")),
    (e.JweError, HttpError(500, "JweError")),
    (e.StorageError, HttpError(503, "StorageUnavailable")),
    (e.MalformedMessage, HttpError(400, "SerdeError")),
    (e.ProtocolError, HttpError(400, "SerdeError")),
)

INTERNAL: Final = HttpError(500, "InternalError")


def classify(exc: BaseException) -> HttpError:
    for cls, mapped in _TABLE:
        if isinstance(exc, cls):
            return mapped
    return INTERNAL


def error_body(variant: str, detail: str) -> dict[str, str]:
    return {"type": ERROR_TYPE_PREFIX + variant, "detail": detail}
