"""Admin bearer-JWT authentication: accepted tokens and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import PrivateKey, sign_compact
from custodes.errors import AdminAuthError
from custodes.kbs.admin_auth import AdminAuthenticator, AdminIdentity
from custodes.kbs.keys import AdminPublicKey
from custodes.types.json import JsonObject

NOW = 1_700_000_000
LEEWAY = 60
MAX_LIFETIME = 3600


@pytest.fixture(scope="module")
def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _auth(*keys: AdminPublicKey) -> AdminAuthenticator:
    return AdminAuthenticator(
        keys,
        clock=FrozenClock(NOW),
        leeway_seconds=LEEWAY,
        max_lifetime_seconds=MAX_LIFETIME,
    )


def _token(key: PrivateKey, claims: JsonObject) -> str:
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    return sign_compact({"alg": alg, "typ": "JWT"}, claims, key)


def _bearer(key: PrivateKey, claims: JsonObject) -> str:
    return "Bearer " + _token(key, claims)


def _seg(obj: object) -> str:
    return b64url_encode(json.dumps(obj).encode())


GOOD: JsonObject = {"sub": "alice", "iat": NOW, "exp": NOW + 600}


# --- accepted ----------------------------------------------------------------------------


def test_eddsa_accepted(ed: ed25519.Ed25519PrivateKey) -> None:
    assert _auth(ed.public_key()).authenticate(_bearer(ed, GOOD)) == AdminIdentity("alice")


def test_es256_accepted(p256: ec.EllipticCurvePrivateKey) -> None:
    assert _auth(p256.public_key()).authenticate(_bearer(p256, GOOD)) == AdminIdentity("alice")


def test_any_configured_key_is_accepted(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    auth = _auth(ed.public_key(), p256.public_key())
    assert auth.authenticate(_bearer(ed, GOOD)).subject == "alice"
    assert auth.authenticate(_bearer(p256, GOOD)).subject == "alice"


def test_scheme_is_case_insensitive(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    assert auth.authenticate("bearer " + _token(ed, GOOD)).subject == "alice"
    assert auth.authenticate("BEARER " + _token(ed, GOOD)).subject == "alice"


def test_sub_defaults_to_admin(ed: ed25519.Ed25519PrivateKey) -> None:
    claims: JsonObject = {"exp": NOW + 60}
    assert _auth(ed.public_key()).authenticate(_bearer(ed, claims)).subject == "admin"


def test_nbf_in_the_past_or_within_leeway(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    for nbf in (NOW - 100, NOW, NOW + LEEWAY):
        assert auth.authenticate(_bearer(ed, {**GOOD, "nbf": nbf})).subject == "alice"


# --- refusals: the header and the signature ----------------------------------------------


def test_no_keys_configured(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError):
        _auth().authenticate(_bearer(ed, GOOD))


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(ed: ed25519.Ed25519PrivateKey, header: str | None) -> None:
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(header)


@pytest.mark.parametrize("scheme", ["Basic", "Token", "Bearer:", "JWT"])
def test_wrong_scheme(ed: ed25519.Ed25519PrivateKey, scheme: str) -> None:
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(f"{scheme} {_token(ed, GOOD)}")


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer x", "Bearer a.b.c"])
def test_not_a_token(ed: ed25519.Ed25519PrivateKey, value: str) -> None:
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(value)


def test_raw_token_without_scheme(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(_token(ed, GOOD))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none(ed: ed25519.Ed25519PrivateKey, alg: str) -> None:
    token = f"{_seg({'alg': alg, 'typ': 'JWT'})}.{_seg(GOOD)}."
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate("Bearer " + token)


@pytest.mark.parametrize("which", ["ed25519", "p256"])
def test_hs256_with_the_public_key_as_secret(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey, which: str
) -> None:
    public: AdminPublicKey = ed.public_key() if which == "ed25519" else p256.public_key()
    for encoding in (serialization.Encoding.PEM, serialization.Encoding.DER):
        secret = public.public_bytes(encoding, serialization.PublicFormat.SubjectPublicKeyInfo)
        signing_input = f"{_seg({'alg': 'HS256', 'typ': 'JWT'})}.{_seg(GOOD)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + b64url_encode(mac)
        with pytest.raises(AdminAuthError):
            _auth(public).authenticate("Bearer " + token)


def test_signed_by_another_key(ed: ed25519.Ed25519PrivateKey) -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(_bearer(other, GOOD))


def test_signed_by_another_p256_key(p256: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(AdminAuthError):
        _auth(p256.public_key()).authenticate(_bearer(other, GOOD))


def test_es256_header_with_an_ed25519_key(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    # A valid ES256 token, but the only configured key is Ed25519.
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(_bearer(p256, GOOD))


def test_eddsa_header_with_a_p256_key(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(AdminAuthError):
        _auth(p256.public_key()).authenticate(_bearer(ed, GOOD))


def test_tampered_payload(ed: ed25519.Ed25519PrivateKey) -> None:
    header, _, signature = _token(ed, GOOD).split(".")
    forged = f"{header}.{_seg({**GOOD, 'sub': 'mallory'})}.{signature}"
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate("Bearer " + forged)


# --- refusals: the claims ----------------------------------------------------------------


def test_missing_exp(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError, match="exp"):
        _auth(ed.public_key()).authenticate(_bearer(ed, {"sub": "alice", "iat": NOW}))


@pytest.mark.parametrize("exp", [str(NOW + 60), NOW + 60.5, True, None, [NOW + 60]])
def test_non_int_exp(ed: ed25519.Ed25519PrivateKey, exp: object) -> None:
    claims: JsonObject = {"sub": "alice", "exp": exp}
    with pytest.raises(AdminAuthError, match="exp"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims))


def test_expired_leeway_boundary(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    # Still accepted one second before exp + leeway; refused from exp + leeway on.
    last_good = {"sub": "alice", "exp": NOW - LEEWAY + 1}
    assert auth.authenticate(_bearer(ed, last_good)).subject == "alice"
    for exp in (NOW - LEEWAY, NOW - LEEWAY - 1, NOW - 10_000):
        with pytest.raises(AdminAuthError, match="expired"):
            auth.authenticate(_bearer(ed, {"sub": "alice", "exp": exp}))


def test_iat_in_the_future(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    ok = {"iat": NOW + LEEWAY, "exp": NOW + LEEWAY + 60}
    assert auth.authenticate(_bearer(ed, ok)).subject == "admin"
    with pytest.raises(AdminAuthError, match="future"):
        auth.authenticate(_bearer(ed, {"iat": NOW + LEEWAY + 1, "exp": NOW + LEEWAY + 60}))


@pytest.mark.parametrize("iat", [str(NOW), float(NOW), True])
def test_non_int_iat(ed: ed25519.Ed25519PrivateKey, iat: object) -> None:
    claims: JsonObject = {"iat": iat, "exp": NOW + 60}
    with pytest.raises(AdminAuthError, match="iat"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims))


def test_lifetime_over_the_max_with_iat(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    at_max = {"iat": NOW - 10, "exp": NOW - 10 + MAX_LIFETIME}
    assert auth.authenticate(_bearer(ed, at_max)).subject == "admin"
    with pytest.raises(AdminAuthError, match="lifetime"):
        auth.authenticate(_bearer(ed, {"iat": NOW - 10, "exp": NOW - 10 + MAX_LIFETIME + 1}))


def test_lifetime_over_the_max_without_iat(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    assert auth.authenticate(_bearer(ed, {"exp": NOW + MAX_LIFETIME})).subject == "admin"
    with pytest.raises(AdminAuthError, match="lifetime"):
        auth.authenticate(_bearer(ed, {"exp": NOW + MAX_LIFETIME + 1}))


def test_nbf_in_the_future(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError, match="not yet valid"):
        _auth(ed.public_key()).authenticate(_bearer(ed, {**GOOD, "nbf": NOW + LEEWAY + 1}))


@pytest.mark.parametrize("nbf", [str(NOW), float(NOW), True, False])
def test_non_int_nbf(ed: ed25519.Ed25519PrivateKey, nbf: object) -> None:
    claims: JsonObject = {**GOOD, "nbf": nbf}
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims))


@pytest.mark.parametrize("sub", [1, None, True, ["alice"], {"name": "alice"}])
def test_non_string_sub(ed: ed25519.Ed25519PrivateKey, sub: object) -> None:
    claims: JsonObject = {**GOOD, "sub": sub}
    with pytest.raises(AdminAuthError, match="sub"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims))
