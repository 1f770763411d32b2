"""The typed view of EAR claims (custodes.attestation.ear.EarClaims): what it reads from a
token custodes issues and from upstream's example token, and one refusal per malformed shape,
each with its precise message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import FrozenClock
from custodes._internal.jws import sign_compact
from custodes.attestation.ear import (
    TRUST_CLAIM_NAMES,
    Ar4siStatus,
    EarClaims,
    EarSigner,
    EarVerifier,
    MalformedEarClaims,
    Submodule,
    generate_signing_key,
)
from custodes.errors import TokenError
from custodes.types.json import JsonObject

T0 = 1_760_000_000.0
TEE_PUBKEY = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "eA", "y": "eQ"}
EVIDENCE: JsonObject = {
    "sample": {"svn": "1"},
    "runtime_data_claims": {"nonce": "bm9uY2U", "tee-pubkey": TEE_PUBKEY},
}
CPU = {
    "ear.status": "affirming",
    "ear.trustworthiness-vector": dict.fromkeys(TRUST_CLAIM_NAMES, 0) | {"hardware": 2},
    "ear.appraisal-policy-id": "default",
    "ear.veraison.annotated-evidence": EVIDENCE,
    "ear.trustee.identifiers": {"validated": {}},
}
GPU = {
    "ear.status": "warning",
    "ear.trustworthiness-vector": dict.fromkeys(TRUST_CLAIM_NAMES, 0) | {"hardware": 32},
}


def _claims(**submods: Any) -> JsonObject:
    return {"iat": int(T0), "jti": "abc", "submods": submods or {"cpu0": CPU, "gpu0": GPU}}


def test_reads_every_appraisal() -> None:
    ear = EarClaims.parse(_claims())
    assert list(ear.submodules) == ["cpu0", "gpu0"]
    cpu, gpu = ear.submodules["cpu0"], ear.submodules["gpu0"]
    assert cpu.status is Ar4siStatus.AFFIRMING and gpu.status is Ar4siStatus.WARNING
    assert cpu.vector is not None and cpu.vector["hardware"] == 2
    assert cpu.policy_id == "default" and gpu.policy_id is None
    assert cpu.annotated_evidence == EVIDENCE and gpu.annotated_evidence is None
    assert dict(cpu.extensions) == {"ear.trustee.identifiers": {"validated": {}}}
    assert ear.status is Ar4siStatus.WARNING
    assert ear.token_id == "abc"
    assert ear.tee_pubkey() == TEE_PUBKEY
    assert ear.annotated_evidence() == {"cpu0": EVIDENCE}
    assert ear.trust_vectors() == {
        "cpu0": CPU["ear.trustworthiness-vector"],
        "gpu0": GPU["ear.trustworthiness-vector"],
    }


def test_an_appraisal_without_vector_or_key() -> None:
    # EAR makes the vector optional; a token without a CPU appraisal names no TEE key.
    ear = EarClaims.parse(_claims(gpu0={"ear.status": "none"}))
    assert ear.submodules["gpu0"].vector is None
    assert ear.trust_vectors() == {"gpu0": None}
    assert ear.tee_pubkey() is None
    assert ear.status is Ar4siStatus.NONE


def test_to_json_gives_back_the_appraisal() -> None:
    for appraisal in (CPU, GPU, {"ear.status": "contraindicated"}):
        submodule = Submodule.parse("x", appraisal)
        assert submodule.to_json() == appraisal
        # In the order a token carries them: the EAR claims, then the extensions.
        assert list(submodule.to_json()) == [k for k in CPU if k in appraisal]


def test_the_view_is_read_only() -> None:
    ear = EarClaims.parse(_claims())
    with pytest.raises(TypeError):
        ear.submodules["x"] = ear.submodules["cpu0"]  # type: ignore[index]
    vector = ear.submodules["cpu0"].vector
    assert vector is not None
    with pytest.raises(TypeError):
        vector["hardware"] = 3  # type: ignore[index]


def test_upstream_example_token_parses(vectors: Path) -> None:
    example = json.loads(
        (vectors / "trustee/attestation-service/docs/example.token.json").read_text()
    )
    ear = EarClaims.parse(example)
    cpu = ear.submodules["cpu0"]
    assert cpu.status is Ar4siStatus.CONTRAINDICATED
    assert cpu.vector is not None and cpu.vector["hardware"] == 97
    assert cpu.policy_id == "default"
    assert cpu.annotated_evidence is not None and "sgx" in cpu.annotated_evidence


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ([], "EAR claims are not an object"),
        ({"iat": 1}, "EAR claims carry no appraisals (submods)"),
        ({"submods": None}, "EAR claims carry no appraisals (submods)"),
        ({"submods": {}}, "EAR claims carry no appraisals (submods)"),
        ({"submods": [CPU]}, "EAR claims carry no appraisals (submods)"),
        ({"submods": {"cpu0": "affirming"}}, "EAR appraisal cpu0 is not an object"),
        ({"submods": {"cpu0": {}}}, "cpu0: ear.status is missing or not an AR4SI tier"),
        (
            {"submods": {"cpu0": {**CPU, "ear.status": "fine"}}},
            "cpu0: ear.status is missing or not an AR4SI tier",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.status": ["affirming"]}}},
            "cpu0: ear.status is missing or not an AR4SI tier",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.trustworthiness-vector": [2]}}},
            "cpu0: ear.trustworthiness-vector is not an object",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.trustworthiness-vector": {"firmware": 2}}}},
            "cpu0: unknown trust claims ['firmware']",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.trustworthiness-vector": {"hardware": 128}}}},
            "cpu0: trust claim 'hardware' is not an integer in -128..127",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.trustworthiness-vector": {"hardware": True}}}},
            "cpu0: trust claim 'hardware' is not an integer in -128..127",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.trustworthiness-vector": {"hardware": "2"}}}},
            "cpu0: trust claim 'hardware' is not an integer in -128..127",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.veraison.annotated-evidence": "x"}}},
            "cpu0: ear.veraison.annotated-evidence is not an object",
        ),
        (
            {"submods": {"cpu0": {**CPU, "ear.appraisal-policy-id": 1}}},
            "cpu0: ear.appraisal-policy-id is not a string",
        ),
    ],
)
def test_malformed_claims_refused(claims: Any, message: str) -> None:
    with pytest.raises(MalformedEarClaims) as caught:
        EarClaims.parse(claims)
    assert str(caught.value).startswith("EAR ") and message in str(caught.value)
    assert isinstance(caught.value, TokenError)  # one error family for every token problem


def test_verifier_gives_the_typed_view() -> None:
    key = generate_signing_key()
    clock = FrozenClock(T0)
    token, claims = EarSigner(key, clock=clock).sign({"cpu0": CPU})
    verifier = EarVerifier([key.public_key()], clock=clock)
    ear = verifier.verify_ear(token)
    assert ear.raw == claims == verifier.verify(token)
    assert ear.submodules["cpu0"] == Submodule.parse("cpu0", CPU)


def test_verifier_refuses_a_signed_token_with_a_malformed_appraisal() -> None:
    # Signed by a trusted key, yet its appraisal is not EAR's shape: fail closed.
    key: ec.EllipticCurvePrivateKey = generate_signing_key()
    clock = FrozenClock(T0)
    _, claims = EarSigner(key, clock=clock).sign({"cpu0": CPU})
    claims["submods"] = {"cpu0": {**CPU, "ear.status": "trusted"}}
    token = sign_compact({"alg": "ES256"}, claims, key)
    with pytest.raises(MalformedEarClaims, match=r"cpu0: ear\.status"):
        EarVerifier([key.public_key()], clock=clock).verify(token)
