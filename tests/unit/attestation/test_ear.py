"""EAR: AR4SI tiers, trust-claim validation, signing and verification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwcrypto import jwk, jwt

from custodes._internal.b64 import b64url_decode
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import sign_compact
from custodes.attestation.ear import (
    DEFAULT_PROFILE,
    INSECURE_CLAIM,
    TRUST_CLAIM_NAMES,
    Ar4siStatus,
    EarSigner,
    EarVerifier,
    appraisal_status,
    generate_signing_key,
    tier_of,
    validate_trust_claims,
    worst_status,
)
from custodes.errors import ConfigError, PolicyError, TokenError

T0 = 1_760_000_000.0
APPRAISAL = {
    "ear.status": "affirming",
    "ear.trustworthiness-vector": dict.fromkeys(TRUST_CLAIM_NAMES, 0) | {"hardware": 2},
    "ear.appraisal-policy-id": "default",
    "ear.veraison.annotated-evidence": {"sample": {"svn": "1"}},
}


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def _signer(key: ec.EllipticCurvePrivateKey, clock: FrozenClock, **kw: object) -> EarSigner:
    return EarSigner(key, clock=clock, **kw)  # type: ignore[arg-type]


# --- tiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (-128, Ar4siStatus.CONTRAINDICATED),
        (-97, Ar4siStatus.CONTRAINDICATED),
        (-96, Ar4siStatus.WARNING),
        (-33, Ar4siStatus.WARNING),
        (-32, Ar4siStatus.AFFIRMING),
        (-2, Ar4siStatus.AFFIRMING),
        (-1, Ar4siStatus.NONE),
        (0, Ar4siStatus.NONE),
        (1, Ar4siStatus.NONE),
        (2, Ar4siStatus.AFFIRMING),
        (31, Ar4siStatus.AFFIRMING),
        (32, Ar4siStatus.WARNING),
        (95, Ar4siStatus.WARNING),
        (96, Ar4siStatus.CONTRAINDICATED),
        (127, Ar4siStatus.CONTRAINDICATED),
    ],
)
def test_tier_boundaries(value: int, tier: Ar4siStatus) -> None:
    assert tier_of(value) is tier


def test_appraisal_status_is_the_worst_tier() -> None:
    assert appraisal_status({}) is Ar4siStatus.NONE
    assert appraisal_status({"a": 0, "b": 1}) is Ar4siStatus.NONE
    assert appraisal_status({"a": 0, "b": 2}) is Ar4siStatus.AFFIRMING
    assert appraisal_status({"a": 3, "b": 32, "c": 0}) is Ar4siStatus.WARNING
    assert appraisal_status({"a": 2, "b": 33, "c": 97}) is Ar4siStatus.CONTRAINDICATED
    assert worst_status([]) is Ar4siStatus.NONE
    assert worst_status([Ar4siStatus.WARNING, Ar4siStatus.AFFIRMING]) is Ar4siStatus.WARNING


# --- trust-claim validation ----------------------------------------------------------------


def test_validate_fills_all_eight_claims() -> None:
    vector = validate_trust_claims({"hardware": 2, "executables": -3})
    assert list(vector) == list(TRUST_CLAIM_NAMES)
    assert vector["hardware"] == 2 and vector["executables"] == -3 and vector["file-system"] == 0


@pytest.mark.parametrize(
    "obj",
    [
        {"hardware": 2, "firmware": 3},  # unknown name
        {"hardware": "2"},  # not an int
        {"hardware": 2.5},
        {"hardware": True},  # bool is not an int here
        {"hardware": None},
        {"hardware": 128},  # out of range
        {"hardware": -129},
        {"hardware": 0, "executables": 0},  # nothing asserted
        {},
        [["hardware", 2]],  # not an object
        None,
    ],
)
def test_validate_refuses(obj: object) -> None:
    with pytest.raises(PolicyError):
        validate_trust_claims(obj)


# --- signer --------------------------------------------------------------------------------


def test_signer_refuses_non_p256_keys(clock: FrozenClock) -> None:
    with pytest.raises(ConfigError):
        EarSigner(ec.generate_private_key(ec.SECP384R1()), clock=clock)
    with pytest.raises(ConfigError):
        EarSigner(ed25519.Ed25519PrivateKey.generate(), clock=clock)  # type: ignore[arg-type]


def test_signer_refuses_bad_ttl(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    for ttl in (0, -1):
        with pytest.raises(ConfigError):
            EarSigner(key, clock=clock, ttl_seconds=ttl)


def test_signer_refuses_empty_submods(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    with pytest.raises(TokenError):
        _signer(key, clock).sign({})


def test_token_shape(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    signer = _signer(key, clock, ttl_seconds=120, issuer="broker-1")
    token, claims = signer.sign({"cpu0": APPRAISAL})
    header = json.loads(b64url_decode(token.split(".")[0]))
    assert header == {"alg": "ES256", "typ": "JWT", "jwk": signer.public_jwk()}
    jwk_ = signer.public_jwk()
    assert set(jwk_) == {"kty", "crv", "alg", "x", "y"}
    assert (jwk_["kty"], jwk_["crv"], jwk_["alg"]) == ("EC", "P-256", "ES256")
    assert len(b64url_decode(jwk_["x"])) == 32 and len(b64url_decode(jwk_["y"])) == 32
    assert claims["iat"] == int(T0) and claims["exp"] == int(T0) + 120
    assert claims["iss"] == "broker-1"
    assert claims["eat_profile"] == DEFAULT_PROFILE
    assert claims["submods"] == {"cpu0": APPRAISAL}
    assert isinstance(claims["jti"], str) and len(b64url_decode(claims["jti"])) == 16
    assert INSECURE_CLAIM not in claims
    assert json.loads(b64url_decode(token.split(".")[1])) == claims


def test_token_has_upstream_claims(
    vectors: Path, key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    example = json.loads(
        (vectors / "trustee/attestation-service/docs/example.token.json").read_text()
    )
    _, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    assert set(example) <= set(claims)
    assert set(example["ear.verifier-id"]) == set(claims["ear.verifier-id"])
    assert set(example["submods"]["cpu0"]) == set(APPRAISAL)
    assert claims["eat_profile"] == example["eat_profile"]


def test_jti_is_unique(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    signer = _signer(key, clock)
    assert signer.sign({"cpu0": APPRAISAL})[1]["jti"] != signer.sign({"cpu0": APPRAISAL})[1]["jti"]


def test_insecure_notices_are_in_every_token(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    signer = _signer(key, clock, insecure_notices=["sample TEE enabled"])
    token, claims = signer.sign({"cpu0": APPRAISAL})
    assert claims[INSECURE_CLAIM] == ["sample TEE enabled"]
    verified = EarVerifier([key.public_key()], clock=clock).verify(token)
    assert verified[INSECURE_CLAIM] == ["sample TEE enabled"]


def test_jwcrypto_accepts_our_ear(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    token, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    parsed = jwt.JWT(jwt=token, key=jwk.JWK.from_pem(pem), algs=["ES256"], check_claims=False)
    assert json.loads(parsed.claims) == claims


# --- verifier ------------------------------------------------------------------------------


def test_round_trip(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    token, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    assert EarVerifier([key.public_key()], clock=clock).verify(token) == claims


def test_verifier_needs_p256_keys(clock: FrozenClock) -> None:
    with pytest.raises(ConfigError):
        EarVerifier([], clock=clock)
    with pytest.raises(ConfigError):
        EarVerifier([ec.generate_private_key(ec.SECP384R1()).public_key()], clock=clock)


def test_expiry_with_leeway(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    token, _ = _signer(key, clock, ttl_seconds=300).sign({"cpu0": APPRAISAL})
    verifier = EarVerifier([key.public_key()], clock=clock, leeway_seconds=60)
    clock.advance(300 + 60 - 1)
    assert verifier.verify(token)["submods"]
    clock.advance(1)
    with pytest.raises(TokenError):
        verifier.verify(token)


def test_future_iat_refused(key: ec.EllipticCurvePrivateKey) -> None:
    issuer_clock = FrozenClock(T0 + 61)
    token, _ = EarSigner(key, clock=issuer_clock).sign({"cpu0": APPRAISAL})
    verifier_clock = FrozenClock(T0)
    with pytest.raises(TokenError):
        EarVerifier([key.public_key()], clock=verifier_clock, leeway_seconds=60).verify(token)
    # Within the leeway it is accepted.
    token, _ = EarSigner(key, clock=FrozenClock(T0 + 60)).sign({"cpu0": APPRAISAL})
    assert EarVerifier([key.public_key()], clock=verifier_clock).verify(token)


def test_untrusted_signer_refused(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    # An attacker's token carries the attacker's key in its header: never trusted by itself.
    attacker = generate_signing_key()
    token, _ = _signer(attacker, clock).sign({"cpu0": APPRAISAL})
    with pytest.raises(TokenError):
        EarVerifier([key.public_key()], clock=clock).verify(token)


def test_header_jwk_must_be_the_signing_key(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock
) -> None:
    other = generate_signing_key()
    trusted_both = EarVerifier([key.public_key(), other.public_key()], clock=clock)
    _, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    # Signed by `key` but naming `other` (also trusted) in the header.
    header = {"alg": "ES256", "typ": "JWT", "jwk": _signer(other, clock).public_jwk()}
    with pytest.raises(TokenError):
        trusted_both.verify(sign_compact(header, claims, key))
    # A header jwk that is not an object, or names another algorithm.
    for bad in ("jwk", {**_signer(key, clock).public_jwk(), "alg": "ES384"}):
        token = sign_compact({"alg": "ES256", "jwk": bad}, claims, key)
        with pytest.raises(TokenError):
            trusted_both.verify(token)
    # No jwk at all is fine: the trusted key list decides.
    assert trusted_both.verify(sign_compact({"alg": "ES256"}, claims, key)) == claims


def test_alg_confusion_refused(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    _, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    ed = ed25519.Ed25519PrivateKey.generate()
    token = sign_compact({"alg": "EdDSA"}, claims, ed)
    with pytest.raises(TokenError):
        EarVerifier([key.public_key()], clock=clock).verify(token)


@pytest.mark.parametrize(
    "change",
    [
        {"exp": None},
        {"exp": "1760000300"},
        {"exp": True},
        {"iat": None},
        {"iat": 1.5},
        {"submods": None},
        {"submods": {}},
        {"submods": []},
        {"submods": {"cpu0": "affirming"}},
    ],
)
def test_claim_shape_refused(
    key: ec.EllipticCurvePrivateKey, clock: FrozenClock, change: dict[str, object]
) -> None:
    _, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    for name, value in change.items():
        if value is None:
            del claims[name]
        else:
            claims[name] = value
    token = sign_compact({"alg": "ES256"}, claims, key)
    with pytest.raises(TokenError):
        EarVerifier([key.public_key()], clock=clock).verify(token)


def test_tampered_token_refused(key: ec.EllipticCurvePrivateKey, clock: FrozenClock) -> None:
    token, claims = _signer(key, clock).sign({"cpu0": APPRAISAL})
    h, _, s = token.split(".")
    forged = dict(claims)
    forged["submods"] = {"cpu0": {**APPRAISAL, "ear.status": "affirming", "x": 1}}
    tampered = sign_compact({"alg": "ES256"}, forged, generate_signing_key()).split(".")[1]
    with pytest.raises(TokenError):
        EarVerifier([key.public_key()], clock=clock).verify(f"{h}.{tampered}.{s}")
