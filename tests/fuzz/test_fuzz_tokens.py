"""Fuzz the token readers: compact JWS (admin JWTs and EAR tokens share it), EAR verification,
and admin authentication from an ``Authorization`` header.

Two kinds of input: tokens as text (mutated real tokens, random text), which mostly stop at
the shape and signature checks, and tokens *signed by a trusted key* over mutated headers and
claims, which reach the checks that run only after the signature verified."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fuzz_support import FUZZ, KEEP_FAILURES_READABLE, check, mutated_json, text_inputs
from hypothesis import given
from hypothesis import strategies as st

from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import sign_compact, verify_compact
from custodes.attestation.ear import EarSigner, EarVerifier
from custodes.kbs.admin_auth import (
    AdminAuthenticator,
    AdminIdentity,
    Origins,
    RegisteredKey,
    ReplayGuard,
    Role,
)
from custodes.storage.memory import MemoryStore
from custodes.types.json import Json, JsonObject

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

NOW = 1_700_000_000
CLOCK = FrozenClock(NOW)
# Fixed keys (arbitrary scalars/seeds) so every run draws the same tokens.
EAR_KEY = ec.derive_private_key(0xE4, ec.SECP256R1())
ADMIN_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
ES256_ADMIN_KEY = ec.derive_private_key(0xAD, ec.SECP256R1())


def _signing_input(header: Json, claims: Json) -> str:
    return (
        b64url_encode(json.dumps(header).encode())
        + "."
        + b64url_encode(json.dumps(claims).encode())
    )


def sign_es256(header: Json, claims: Json, key: ec.EllipticCurvePrivateKey) -> str:
    """A compact ES256 JWS over any JSON values, with a deterministic (RFC 6979) signature."""
    signing_input = _signing_input(header, claims)
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return signing_input + "." + b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def sign_eddsa(header: Json, claims: Json, key: ed25519.Ed25519PrivateKey) -> str:
    """A compact EdDSA JWS over any JSON values, whatever the header says."""
    signing_input = _signing_input(header, claims)
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode()))


_EAR_HEADER, _EAR_CLAIMS = (
    {"alg": "ES256", "typ": "JWT"},
    {
        **EarSigner(EAR_KEY, clock=CLOCK).sign(
            {"cpu0": {"ear.status": "affirming", "ear.trustworthiness-vector": {"hardware": 2}}}
        )[1],
        "jti": "fixed",
        "custodes.tenant": "default",
    },
)
EAR_HEADERS: list[Json] = [
    _EAR_HEADER,
    {**_EAR_HEADER, "jwk": EarSigner(EAR_KEY, clock=CLOCK).public_jwk()},
]
EAR_TOKEN = sign_es256(_EAR_HEADER, _EAR_CLAIMS, EAR_KEY)
ADMIN_AUD = "https://broker.example"
ADMIN_CLAIMS: JsonObject = {
    "sub": "admin",
    "aud": ADMIN_AUD,
    "iat": NOW,
    "exp": NOW + 300,
    "jti": "seed",
}
ADMIN_HEADERS: list[Json] = [{"alg": "EdDSA", "typ": "JWT"}, {"alg": "ES256", "typ": "JWT"}]
ADMIN_TOKEN = sign_compact({"alg": "EdDSA", "typ": "JWT"}, ADMIN_CLAIMS, ADMIN_KEY)

EAR_VERIFIER = EarVerifier([EAR_KEY.public_key()], clock=CLOCK)


def admin_authenticator() -> AdminAuthenticator:
    """The default tenant of https://broker.example, with a fresh replay memory."""
    return AdminAuthenticator(
        [
            RegisteredKey(ADMIN_KEY.public_key(), "admin", Role.ADMIN),
            RegisteredKey(ES256_ADMIN_KEY.public_key(), "admin-p256", Role.ADMIN),
        ],
        audiences=Origins([ADMIN_AUD]).for_tenant("default", "default"),
        replay=ReplayGuard(MemoryStore(), "admin_jti", CLOCK),
        clock=CLOCK,
        leeway_seconds=60,
    )


# Replays of a valid token are refused (AdminAuthError), like any other bad token.
ADMIN = admin_authenticator()
VERIFY_KEYS: list[ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey] = [
    EAR_KEY.public_key(),
    ADMIN_KEY.public_key(),
]
TOKENS = [EAR_TOKEN, ADMIN_TOKEN, "e30.e30.", "a.b.c"]


@st.composite
def signed_ear(draw: st.DrawFn) -> str:
    header = draw(st.sampled_from(EAR_HEADERS) | mutated_json(EAR_HEADERS))
    claims = draw(st.sampled_from([_EAR_CLAIMS]) | mutated_json([_EAR_CLAIMS]))
    return sign_es256(header, claims, EAR_KEY)


@st.composite
def signed_admin(draw: st.DrawFn) -> str:
    header = draw(mutated_json(ADMIN_HEADERS) | st.sampled_from(ADMIN_HEADERS))
    claims = draw(mutated_json([ADMIN_CLAIMS]))
    if isinstance(header, dict) and header.get("alg") == "ES256":
        return sign_es256(header, claims, ES256_ADMIN_KEY)
    return sign_eddsa(header, claims, ADMIN_KEY)


def test_seeds_verify() -> None:
    assert EAR_VERIFIER.verify(EAR_TOKEN)["jti"] == "fixed"
    assert admin_authenticator().authenticate(f"Bearer {ADMIN_TOKEN}") == AdminIdentity("admin")
    keys = VERIFY_KEYS
    assert verify_compact(EAR_TOKEN, keys)[1]["jti"] == "fixed"


@FUZZ
@given(token=text_inputs(TOKENS))
def test_fuzz_jws_compact(token: str) -> None:
    keys = VERIFY_KEYS
    check("jws.compact", lambda t: verify_compact(t, keys), token, tuple)


@FUZZ
@given(token=text_inputs([EAR_TOKEN]) | signed_ear())
def test_fuzz_ear_verify(token: str) -> None:
    check("ear.verify", EAR_VERIFIER.verify, token, dict)


@FUZZ
@given(
    authorization=text_inputs([f"Bearer {ADMIN_TOKEN}"])
    | signed_admin().map(lambda t: f"Bearer {t}")
)
def test_fuzz_admin_jwt(authorization: str) -> None:
    check("admin.jwt", ADMIN.authenticate, authorization, AdminIdentity)
