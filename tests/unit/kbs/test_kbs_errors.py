"""Error -> HTTP mapping: every custodes error class, the 500 cases, and the body shape."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from custodes import errors
from custodes.kbs import errors as kerr
from custodes.kbs.errors import ERROR_TYPE_PREFIX, INTERNAL, HttpError, classify, error_body


def _error_classes(*modules: ModuleType) -> list[type[errors.CustodesError]]:
    found: list[type[errors.CustodesError]] = []
    for module in modules:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, errors.CustodesError) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


ALL = _error_classes(errors, kerr)

# The only classes that map to a 5xx: faults of the broker, not of the client.
SERVER_FAULTS = {
    errors.CustodesError: (500, "InternalError"),  # the bare root: no more precise meaning
    errors.ConfigError: (500, "InternalError"),
    errors.StorageError: (503, "StorageUnavailable"),  # a store outage: retry later
    errors.UpstreamError: (500, "InternalError"),
    errors.JweError: (500, "JweError"),
}


def test_every_class_is_found() -> None:
    # Guards the discovery above: a broken walk would make the tests below vacuous.
    assert len(ALL) >= 30
    assert errors.SignatureInvalid in ALL
    assert kerr.RequestTooLarge in ALL


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_status_of_every_custodes_error(cls: type[errors.CustodesError]) -> None:
    mapped = classify(cls("detail"))
    if cls in SERVER_FAULTS:
        assert (mapped.status, mapped.variant) == SERVER_FAULTS[cls]
    else:
        assert 400 <= mapped.status < 500
        assert mapped.variant != "InternalError"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (kerr.RequestTooLarge(), HttpError(413, "PayloadTooLarge")),
        (kerr.EndpointNotFound(), HttpError(404, "PluginNotFound")),
        (kerr.MethodNotAllowed(), HttpError(405, "MethodNotAllowed")),
        (kerr.TokenNotFound(), HttpError(401, "TokenNotFound")),
        (errors.TokenError(), HttpError(401, "TokenVerifierError")),
        (errors.InvalidResourcePath(), HttpError(404, "InvalidRequestPath")),
        (errors.AdminAuthError(), HttpError(401, "AdminAuthAccess")),
        (errors.PolicyDenied(), HttpError(401, "PolicyDeny")),
        (errors.PolicyError(), HttpError(400, "ParsePolicyError")),
        (errors.ReferenceValueError(), HttpError(400, "RvpsError")),
        (errors.NotFound(), HttpError(404, "ResourceNotFound")),
        (errors.SessionError(), HttpError(401, "AttestationError")),
        (errors.MalformedEvidence(), HttpError(401, "AttestationError")),
        (errors.BindingMismatch(), HttpError(401, "AttestationError")),
        (errors.UnsupportedTee(), HttpError(400, "AttestationError")),
        (errors.UnsupportedVersion(), HttpError(400, "AttestationError")),
        (errors.InvalidTeeKey(), HttpError(400, "AttestationError")),
        (errors.MalformedMessage(), HttpError(400, "SerdeError")),
        (errors.ProtocolError(), HttpError(400, "SerdeError")),
        (errors.JweError(), HttpError(500, "JweError")),
    ],
    ids=lambda v: type(v).__name__,
)
def test_specific_mappings(exc: BaseException, expected: HttpError) -> None:
    assert classify(exc) == expected


def test_subclass_defined_elsewhere_inherits_its_parents_mapping() -> None:
    class ReportVersionUnsupported(errors.VerificationError):
        code = "report-version"

    assert classify(ReportVersionUnsupported()) == HttpError(401, "AttestationError")


@pytest.mark.parametrize(
    "exc",
    [ValueError("x"), KeyError("k"), RuntimeError(), OSError(5, "io"), KeyboardInterrupt()],
    ids=lambda v: type(v).__name__,
)
def test_non_custodes_exception_is_internal(exc: BaseException) -> None:
    assert classify(exc) == INTERNAL == HttpError(500, "InternalError")


def test_table_has_no_unreachable_entries() -> None:
    # "Most specific first": an entry after one of its base classes could never match.
    table = kerr._TABLE
    for i, (earlier, _) in enumerate(table):
        for later, _ in table[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} shadowed by {earlier}"


def test_error_body() -> None:
    body = error_body("PolicyDeny", "denied by policy")
    assert body == {
        "type": "https://github.com/confidential-containers/kbs/errors/PolicyDeny",
        "detail": "denied by policy",
    }
    assert body["type"] == ERROR_TYPE_PREFIX + "PolicyDeny"
    assert list(body) == ["type", "detail"]
