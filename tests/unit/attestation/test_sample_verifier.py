"""The sample verifier: exact report-data binding and strict evidence shape."""

from __future__ import annotations

import base64
import hashlib

import pytest

from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.errors import BindingMismatch, MalformedEvidence
from custodes.guest.attester.sample import SampleAttester
from custodes.types.tee import Tee

DIGEST = hashlib.sha384(b"runtime data").digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _verify(
    evidence: object, digest: bytes = DIGEST, init: bytes | None = None
) -> list[VerifiedClaims]:
    request = VerificationRequest(
        tee=Tee.SAMPLE, evidence=evidence, report_data=digest, init_data_digest=init
    )
    return SampleVerifier().verify(request)


def test_claims_as_upstream() -> None:
    (verified,) = _verify({"svn": "1", "report_data": _b64(DIGEST)})
    assert verified.tee_class is TeeClass.CPU
    assert verified.claims == {
        "svn": "1",
        "report_data": _b64(DIGEST),
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": False,
    }


def test_init_data_claim() -> None:
    init = hashlib.sha256(b"init").digest()
    (verified,) = _verify({"svn": "1", "report_data": _b64(DIGEST)}, init=init)
    assert verified.claims["init_data"] == _b64(init)


def test_attester_evidence_verifies() -> None:
    evidence = SampleAttester().evidence(DIGEST)
    assert evidence == {"svn": "1", "report_data": _b64(DIGEST)}
    assert SampleAttester.tee is Tee.SAMPLE and SampleVerifier.tee is Tee.SAMPLE
    (verified,) = _verify(evidence)
    assert verified.claims["svn"] == "1"


@pytest.mark.parametrize(
    "sent",
    [
        DIGEST + b"\x00",  # one byte too many
        DIGEST[:-1],  # one byte short
        DIGEST.ljust(64, b"\x00"),  # zero-padded to a 64-byte report field
        bytes([DIGEST[0] ^ 1]) + DIGEST[1:],  # one bit off
        hashlib.sha384(b"another session").digest(),
        b"",
    ],
)
def test_binding_mismatch(sent: bytes) -> None:
    with pytest.raises(BindingMismatch):
        _verify({"svn": "1", "report_data": _b64(sent)})


@pytest.mark.parametrize(
    "evidence",
    [
        None,
        "svn=1",
        ["1", "cmVwb3J0"],
        {"svn": "1"},
        {"report_data": _b64(DIGEST)},
        {"svn": 1, "report_data": _b64(DIGEST)},
        {"svn": "1", "report_data": list(DIGEST)},
        {"svn": "1", "report_data": _b64(DIGEST), "debug": True},
        {"svn": "1", "report_data": base64.urlsafe_b64encode(b"\xfb\xff" * 24).decode()},
        {"svn": "1", "report_data": _b64(DIGEST).rstrip("=") + "A"},
        {"svn": "1", "report_data": _b64(DIGEST) + "\n"},
        {"svn": "1", "report_data": "%%%%"},
    ],
)
def test_malformed_evidence(evidence: object) -> None:
    with pytest.raises(MalformedEvidence):
        _verify(evidence)
