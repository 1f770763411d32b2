"""Fuzz every KBS JSON body: the strict body reader, the protocol messages (Request,
Challenge, Attestation with its runtime data, init-data and binding digests,
AttestationResult, ErrorInformation), the ``tee-pubkey`` JWK, the sample TEE's evidence, and
the operator's identity objects."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fuzz_support import (
    FUZZ,
    HOSTILE_JSON,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    dumps,
    json_inputs,
    mutated_json,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64std_encode, b64url_encode
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.sample import SampleVerifier
from custodes.kbs.tenants import Identity
from custodes.protocol.binding import HashAlgorithm
from custodes.protocol.messages import (
    ERROR_TYPE_PREFIX,
    Attestation,
    AttestationResult,
    Challenge,
    ErrorInformation,
    Request,
    parse_json_body,
)
from custodes.protocol.tee_key import TeePublicKey, ec_point_members
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

_DERIVED = json.loads(vector("trustee/derived/kbs_protocol_derived_vectors.json"))
_BINDING = _DERIVED["runtime_data_binding"]
NONCE: str = _BINDING["challenge_nonce"]
EC_JWK: JsonObject = _DERIVED["jwe_ecdh_es_a256kw_p256"]["tee_pubkey_jwk"]
RSA_JWK: JsonObject = _DERIVED["jwe_rsa_oaep_256"]["tee_pubkey_jwk"]
# A fixed P-521 key (its scalar is arbitrary): the other curve a TEE key may use.
P521_JWK: JsonObject = {
    "kty": "EC",
    "alg": "ECDH-ES+A256KW",
    **ec_point_members(ec.derive_private_key(0xC0FFEE, ec.SECP521R1()).public_key()),
}
JWKS = [EC_JWK, RSA_JWK, P521_JWK]
SAMPLE_DIGEST = bytes.fromhex(_BINDING["primary_sha384_hex"])
SAMPLE_EVIDENCE: JsonObject = {"svn": "1", "report_data": b64std_encode(SAMPLE_DIGEST)}

REQUESTS: list[Json] = [
    {"version": "0.4.0", "tee": "sample", "extra-params": ""},
    {
        "version": "0.4.0",
        "tee": "az-snp-vtpm",
        "extra-params": {"supported-hash-algorithms": ["sha384", "sha256", "sm3"]},
    },
]
CHALLENGES: list[Json] = [
    {"nonce": NONCE, "extra-params": ""},
    {"nonce": NONCE, "extra-params": {"selected-hash-algorithm": "sha512"}},
]
ATTESTATIONS: list[Json] = [
    {
        "runtime-data": {"nonce": NONCE, "tee-pubkey": EC_JWK},
        "tee-evidence": {"primary_evidence": SAMPLE_EVIDENCE, "additional_evidence": ""},
    },
    {
        "init-data": {"format": "toml", "body": 'version = "0.1.0"\nalgorithm = "sha384"\n'},
        "runtime-data": {"nonce": NONCE, "tee-pubkey": RSA_JWK},
        "tee-evidence": {
            "primary_evidence": SAMPLE_EVIDENCE,
            "additional_evidence": '{"nvgpu": []}',
        },
    },
]
RESULTS: list[Json] = [{"token": "a.b.c"}]
ERRORS: list[Json] = [{"type": ERROR_TYPE_PREFIX + "TokenNotFound", "detail": "no token"}]
BODIES = [dumps(b) for b in (*REQUESTS, *CHALLENGES, *ATTESTATIONS, *RESULTS, *ERRORS)]
_ID_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
IDENTITIES: list[Json] = [
    {
        "subject": "bank-admin",
        "role": "admin",
        "public_key": _ID_KEY.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
    }
]

# Curve points chosen to be invalid: off the curve, the point at infinity's usual encodings,
# coordinates at or past the field prime, coordinates of the wrong length.
_P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1
_COORDINATES = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.sampled_from(
        [
            bytes(32),
            _P256_PRIME.to_bytes(32, "big"),
            (_P256_PRIME + 1).to_bytes(32, "big"),
            b"\xff" * 32,
            bytes(31),
            bytes(33),
            b"",
        ]
    ),
).map(b64url_encode)
EC_JWKS_OFF_CURVE = st.builds(
    lambda x, y, crv: {**EC_JWK, "x": x, "y": y, "crv": crv},
    _COORDINATES,
    _COORDINATES,
    st.sampled_from(["P-256", "P-384", "P-521", "secp256k1"]),
)


def bodies(seeds: list[Json]) -> st.SearchStrategy[Json]:
    return json_inputs(seeds)


def _attestation(obj: object) -> Attestation:
    att = Attestation.from_json(obj)
    for alg in HashAlgorithm:
        # What /attest derives from the parsed body before it calls a verifier.
        att.runtime_data.digest(att.tee_evidence.additional_evidence, alg)
        att.runtime_data.device_digest(alg)
    return att


def test_seeds_parse() -> None:
    for body in BODIES:
        assert parse_json_body(body) is not None
    assert all(Request.from_json(r).supported_hash_algorithms() is not None for r in REQUESTS)
    assert [Challenge.from_json(c).hash_algorithm() for c in CHALLENGES] == ["sha384", "sha512"]
    assert all(isinstance(_attestation(a), Attestation) for a in ATTESTATIONS)
    assert all(isinstance(TeePublicKey.from_jwk(j), TeePublicKey) for j in JWKS)
    assert all(isinstance(Identity.from_json(i), Identity) for i in IDENTITIES)
    request = VerificationRequest(Tee.SAMPLE, SAMPLE_EVIDENCE, SAMPLE_DIGEST, None)
    assert SampleVerifier().verify(request)[0].claims["svn"] == "1"


@FUZZ
@given(body=byte_inputs(BODIES) | st.sampled_from(HOSTILE_JSON))
def test_fuzz_kbs_json_body(body: bytes) -> None:
    check("kbs.json_body", parse_json_body, body, (dict, list, str, int, float, bool, type(None)))


@FUZZ
@given(obj=bodies(REQUESTS))
def test_fuzz_kbs_request(obj: object) -> None:
    def parse(value: object) -> Request:
        request = Request.from_json(value)
        request.supported_hash_algorithms()
        return request

    check("kbs.request", parse, obj, Request)


@FUZZ
@given(obj=bodies(CHALLENGES))
def test_fuzz_kbs_challenge(obj: object) -> None:
    def parse(value: object) -> Challenge:
        challenge = Challenge.from_json(value)
        challenge.hash_algorithm()
        return challenge

    check("kbs.challenge", parse, obj, Challenge)


@FUZZ
@given(obj=bodies(ATTESTATIONS))
def test_fuzz_kbs_attestation(obj: object) -> None:
    check("kbs.attestation", _attestation, obj, Attestation)


@FUZZ
@given(obj=bodies(RESULTS) | bodies(ERRORS))
def test_fuzz_kbs_result_and_error(obj: object) -> None:
    check("kbs.attestation_result", AttestationResult.from_json, obj, AttestationResult)
    check("kbs.error_information", ErrorInformation.from_json, obj, ErrorInformation)


@FUZZ
@given(jwk=json_inputs(JWKS) | EC_JWKS_OFF_CURVE | mutated_json(JWKS))
def test_fuzz_kbs_tee_pubkey(jwk: object) -> None:
    check("kbs.tee_pubkey", TeePublicKey.from_jwk, jwk, TeePublicKey)


@FUZZ
@given(evidence=json_inputs([SAMPLE_EVIDENCE]))
def test_fuzz_sample_evidence(evidence: Json) -> None:
    request = VerificationRequest(Tee.SAMPLE, evidence, SAMPLE_DIGEST, None)
    check("evidence.sample", SampleVerifier().verify, request, list)


@FUZZ
@given(obj=json_inputs(IDENTITIES))
def test_fuzz_operator_identity(obj: object) -> None:
    check("kbs.identity", Identity.from_json, obj, Identity)
