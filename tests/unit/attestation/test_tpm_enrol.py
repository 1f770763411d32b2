"""The enrolment service, step by step, with a real swtpm doing the guest's part and a real
SQLite store: every step refuses on its own, the challenge is single-use and expires, and only
the secret the TPM recovered enrols the AK."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_PUBLIC  # type: ignore[import-untyped]

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import FrozenClock
from custodes.attestation.tpm_enrol import (
    ALLOWED_EKS,
    TRUSTED_AKS,
    ActivateRequest,
    EnrolChallenge,
    EnrolRequest,
    TpmEnrolment,
)
from custodes.attestation.verifiers.tpm.ekcert import ek_fingerprint
from custodes.attestation.verifiers.tpm.errors import (
    ActivationFailed,
    AkPublicKeyInvalid,
    AkUnfit,
    EkCertificateInvalid,
    EkNotAllowed,
)
from custodes.errors import MalformedMessage
from custodes.guest.attester.tpm import TpmAttester
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.sqlite import SqliteStore
from swtpm import Swtpm, TestCa, ek_public_key, running_swtpm

TTL = 300


@pytest.fixture(scope="module")
def tpm() -> Iterator[Swtpm]:
    with running_swtpm() as running:
        yield running


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa.create()


@pytest.fixture(scope="module")
def ek_der(tpm: Swtpm, ca: TestCa) -> bytes:
    cert = ca.issue_ek(ek_public_key(tpm, "rsa"))
    return cert.public_bytes(serialization.Encoding.DER)


class Env:
    def __init__(self, tmp_path: Path, ca: TestCa, tpm: Swtpm, ek_der: bytes) -> None:
        self.store = SqliteStore(tmp_path / "store.db")
        self.clock = FrozenClock(time.time())
        self.rvps = ReferenceValueProvider(self.store, self.clock)
        self.service = TpmEnrolment(
            store=self.store,
            clock=self.clock,
            namespace="tpm_enrolment",
            rvps=self.rvps,
            anchors=lambda: (ca.certificate,),
            ttl_seconds=TTL,
        )
        self.tcti = tpm.tcti
        self.attester = TpmAttester(tpm.tcti)
        self.ek_der = ek_der
        self.ek_fingerprint = ek_fingerprint(ek_public_key(tpm, "rsa"))  # type: ignore[arg-type]

    def approve(self, value: Any = None) -> None:
        self.rvps.register(_message({ALLOWED_EKS: value or [self.ek_fingerprint]}))

    def challenge(self, ak_public: bytes | None = None) -> EnrolChallenge:
        ak = ak_public if ak_public is not None else self.attester.ak_public_area()
        return self.service.challenge(EnrolRequest(self.ek_der, ak))

    def secret(self, challenge: EnrolChallenge) -> bytes:
        return self.attester.activate_credential(
            challenge.credential_blob, challenge.encrypted_secret
        )

    def trusted_aks(self) -> Any:
        return self.rvps.query(TRUSTED_AKS)


def _message(values: dict[str, Any]) -> dict[str, Any]:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload}


@pytest.fixture
def env(tmp_path: Path, ca: TestCa, tpm: Swtpm, ek_der: bytes) -> Iterator[Env]:
    e = Env(tmp_path, ca, tpm, ek_der)
    yield e
    e.store.close()


def test_the_recovered_secret_enrols_the_ak(env: Env) -> None:
    env.approve()
    challenge = env.challenge()
    assert len(challenge.id) == 32 and challenge.expires_in == TTL
    enrolled = env.service.activate(ActivateRequest(challenge.id, env.secret(challenge)))
    ak = b64std_encode(env.attester.ak_public_der())
    assert enrolled.ak_public == ak and enrolled.added
    assert enrolled.ek_fingerprint == env.ek_fingerprint
    assert env.trusted_aks() == [ak]
    # The stored challenge held a digest of the secret, never the secret; it is gone now.
    assert env.store.list("tpm_enrolment", now=env.clock.now()) == []


def test_the_stored_challenge_holds_no_secret(env: Env) -> None:
    env.approve()
    challenge = env.challenge()
    secret = env.secret(challenge)
    raw = env.store.get("tpm_enrolment", challenge.id, now=env.clock.now())
    assert raw is not None and secret not in raw and secret.hex().encode() not in raw
    assert b64std_encode(secret).encode() not in raw


def test_a_wrong_secret_is_refused_and_burns_the_challenge(env: Env) -> None:
    env.approve()
    challenge = env.challenge()
    with pytest.raises(ActivationFailed, match="not resident in the TPM"):
        env.service.activate(ActivateRequest(challenge.id, bytes(32)))
    with pytest.raises(ActivationFailed, match="no such enrolment challenge"):
        env.service.activate(ActivateRequest(challenge.id, env.secret(challenge)))
    assert env.trusted_aks() is None


def test_a_challenge_is_used_once(env: Env) -> None:
    env.approve()
    challenge = env.challenge()
    request = ActivateRequest(challenge.id, env.secret(challenge))
    env.service.activate(request)
    with pytest.raises(ActivationFailed, match="no such enrolment challenge"):
        env.service.activate(request)


def test_a_challenge_expires(env: Env) -> None:
    env.approve()
    challenge = env.challenge()
    secret = env.secret(challenge)
    env.clock.advance(TTL + 1)
    with pytest.raises(ActivationFailed, match="expired"):
        env.service.activate(ActivateRequest(challenge.id, secret))


def test_an_unknown_challenge(env: Env) -> None:
    with pytest.raises(ActivationFailed, match="no such enrolment challenge"):
        env.service.activate(ActivateRequest("0" * 32, bytes(32)))


@pytest.mark.parametrize("allowed", [None, ["00" * 32], "not-a-list"])
def test_an_unapproved_ek_is_refused(env: Env, allowed: Any) -> None:
    if allowed is not None:
        env.approve(allowed)
    with pytest.raises(EkNotAllowed, match=env.ek_fingerprint):
        env.challenge()


def test_the_ek_certificate_is_checked_first(env: Env) -> None:
    env.approve()
    with pytest.raises(EkCertificateInvalid):
        env.service.challenge(EnrolRequest(b"junk", env.attester.ak_public_area()))


def _created_public(
    tpm_env: Env, template: str, attributes: str, name_alg: str = "sha256"
) -> bytes:
    """The TPMT_PUBLIC of a key the TPM really creates from ``template``."""
    ectx = ESAPI(tpm_env.tcti)
    try:
        public = TPM2B_PUBLIC.parse(template, objectAttributes=attributes, nameAlg=name_alg)
        handle, created, _, _, _ = ectx.create_primary(None, public, ESYS_TR.ENDORSEMENT)
        ectx.flush_context(handle)
        return bytes(created.publicArea.marshal())
    finally:
        ectx.close()


@pytest.mark.parametrize(
    ("template", "attributes", "name_alg", "why"),
    [
        (
            "rsa2048:rsassa-sha256:null",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
            "sha256",
            "lacks RESTRICTED",
        ),
        (
            "rsa2048:rsassa-sha256:null",
            "sensitivedataorigin|userwithauth|restricted|sign",
            "sha256",
            "lacks FIXED_PARENT, FIXED_TPM",
        ),
        (
            "rsa2048:null:null",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|sign",
            "sha256",
            "lacks RESTRICTED",
        ),
        (
            "rsa2048:rsassa-sha256:null",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
            "sha1",
            "nameAlg",
        ),
    ],
)
def test_an_unfit_ak_is_refused(
    env: Env, template: str, attributes: str, name_alg: str, why: str
) -> None:
    env.approve()
    with pytest.raises(AkUnfit, match=why):
        env.challenge(_created_public(env, template, attributes, name_alg))


def test_a_weak_ak_is_refused_by_the_quote_verifiers_rule(env: Env) -> None:
    env.approve()
    weak = _created_public(
        env,
        "rsa1024:rsassa-sha256:null",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    with pytest.raises(AkPublicKeyInvalid, match="1024 bits"):
        env.challenge(weak)


def test_enrolment_keeps_the_admins_aks(env: Env) -> None:
    env.approve()
    env.rvps.register(_message({TRUSTED_AKS: ["hand-listed"]}))
    challenge = env.challenge()
    env.service.activate(ActivateRequest(challenge.id, env.secret(challenge)))
    ak = b64std_encode(env.attester.ak_public_der())
    assert env.trusted_aks() == ["hand-listed", ak]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "exactly"),
        ({"ek_certificate": "AA=="}, "exactly"),
        ({"ek_certificate": "AA==", "ak_public": "AA==", "x": 1}, "exactly"),
        ({"ek_certificate": 1, "ak_public": "AA=="}, "standard base64"),
        ({"ek_certificate": "AA", "ak_public": "AA=="}, "padded standard base64"),
        ({"ek_certificate": "A" * 20000, "ak_public": "AA=="}, "at most 8192 bytes"),
    ],
)
def test_enrol_request_parsing(body: Any, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        EnrolRequest.from_json(body)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"id": "0" * 32}, "exactly"),
        ({"id": "0" * 31, "secret": b64std_encode(bytes(32))}, "hex digits"),
        ({"id": "G" * 32, "secret": b64std_encode(bytes(32))}, "hex digits"),
        ({"id": 7, "secret": b64std_encode(bytes(32))}, "hex digits"),
        ({"id": "0" * 32, "secret": b64std_encode(bytes(31))}, "exactly 32 bytes"),
        ({"id": "0" * 32, "secret": b64std_encode(bytes(48))}, "at most 32 bytes"),
    ],
)
def test_activate_request_parsing(body: Any, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why):
        ActivateRequest.from_json(body)


def test_messages_round_trip() -> None:
    request = EnrolRequest(b"cert", b"ak")
    assert EnrolRequest.from_json(request.to_json()) == request
    activate = ActivateRequest("ab" * 16, bytes(range(32)))
    assert ActivateRequest.from_json(activate.to_json()) == activate
    challenge = EnrolChallenge("cd" * 16, b"blob", b"secret", 300)
    assert EnrolChallenge.from_json(challenge.to_json()) == challenge
    with pytest.raises(MalformedMessage):
        EnrolChallenge.from_json({**challenge.to_json(), "expires_in": "300"})
