"""Admin bearer-JWT authentication: accepted tokens and every refusal."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import PrivateKey, sign_compact
from custodes.errors import AdminAuthError
from custodes.kbs.admin_auth import (
    AdminAuthenticator,
    AdminIdentity,
    Origins,
    RegisteredKey,
    ReplayGuard,
    Role,
)
from custodes.kbs.keys import AdminPublicKey
from custodes.storage.memory import MemoryStore
from custodes.types.json import JsonObject

NOW = 1_700_000_000
LEEWAY = 60
MAX_LIFETIME = 3600
BROKER = "https://broker.example"
AUD = "https://broker.example:443/tenants/bank"


@pytest.fixture(scope="module")
def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _auth(*keys: AdminPublicKey, subjects: tuple[str, ...] = ()) -> AdminAuthenticator:
    """The bank tenant's authenticator on https://broker.example: the first key is alice's
    (unless ``subjects`` says otherwise), the others key1, key2, ..."""
    names = subjects or ("alice", *(f"key{i}" for i in range(1, len(keys))))[: len(keys)]
    clock = FrozenClock(NOW)
    return AdminAuthenticator(
        [RegisteredKey(k, n, Role.ADMIN) for k, n in zip(keys, names, strict=True)],
        audiences=Origins([BROKER]).for_tenant("bank", "default"),
        replay=ReplayGuard(MemoryStore(), "admin_jti", clock),
        clock=clock,
        leeway_seconds=LEEWAY,
        max_lifetime_seconds=MAX_LIFETIME,
    )


def claims(**changes: object) -> JsonObject:
    """Good claims for alice at the bank tenant (a fresh jti each time); a change to
    ``None`` removes the claim."""
    base: JsonObject = {
        "sub": "alice",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 600,
        "jti": secrets.token_hex(16),
    }
    for name, value in changes.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def _token(key: PrivateKey, claims: JsonObject) -> str:
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    return sign_compact({"alg": alg, "typ": "JWT"}, claims, key)


def _bearer(key: PrivateKey, claims: JsonObject) -> str:
    return "Bearer " + _token(key, claims)


def _seg(obj: object) -> str:
    return b64url_encode(json.dumps(obj).encode())


GOOD: JsonObject = claims()


# --- accepted ----------------------------------------------------------------------------


def test_eddsa_accepted(ed: ed25519.Ed25519PrivateKey) -> None:
    assert _auth(ed.public_key()).authenticate(_bearer(ed, GOOD)) == AdminIdentity("alice")


def test_es256_accepted(p256: ec.EllipticCurvePrivateKey) -> None:
    assert _auth(p256.public_key()).authenticate(_bearer(p256, GOOD)) == AdminIdentity("alice")


def test_each_key_authenticates_its_own_subject(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    auth = _auth(ed.public_key(), p256.public_key(), subjects=("alice", "bob"))
    assert auth.authenticate(_bearer(ed, claims())).subject == "alice"
    assert auth.authenticate(_bearer(p256, claims(sub="bob"))).subject == "bob"


def test_scheme_is_case_insensitive(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    assert auth.authenticate("bearer " + _token(ed, claims())).subject == "alice"
    assert auth.authenticate("BEARER " + _token(ed, claims())).subject == "alice"


def test_sub_defaults_to_the_keys_subject(ed: ed25519.Ed25519PrivateKey) -> None:
    assert _auth(ed.public_key()).authenticate(_bearer(ed, claims(sub=None))).subject == "alice"


def test_nbf_in_the_past_or_within_leeway(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    for nbf in (NOW - 100, NOW, NOW + LEEWAY):
        assert auth.authenticate(_bearer(ed, claims(nbf=nbf))).subject == "alice"


@pytest.mark.parametrize(
    "aud",
    [
        AUD,
        "https://broker.example/tenants/bank",
        "HTTPS://Broker.Example/tenants/bank/",
        "https://broker.example:443/tenants/bank",
    ],
)
def test_audience_is_compared_normalized(ed: ed25519.Ed25519PrivateKey, aud: str) -> None:
    assert _auth(ed.public_key()).authenticate(_bearer(ed, claims(aud=aud))).subject == "alice"


def test_one_key_under_two_subjects_is_chosen_by_sub(ed: ed25519.Ed25519PrivateKey) -> None:
    key = ed.public_key()
    auth = _auth(key, key, subjects=("alice", "alice-readonly"))
    assert auth.authenticate(_bearer(ed, claims(sub="alice-readonly"))).subject == "alice-readonly"
    with pytest.raises(AdminAuthError, match="'sub' is required"):
        auth.authenticate(_bearer(ed, claims(sub=None)))


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
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(exp=None)))


@pytest.mark.parametrize("exp", [str(NOW + 60), NOW + 60.5, True, [NOW + 60]])
def test_non_int_exp(ed: ed25519.Ed25519PrivateKey, exp: object) -> None:
    with pytest.raises(AdminAuthError, match="exp"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(exp=exp)))


def test_expired_leeway_boundary(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    # Still accepted one second before exp + leeway; refused from exp + leeway on.
    last_good = claims(iat=NOW - 600, exp=NOW - LEEWAY + 1)
    assert auth.authenticate(_bearer(ed, last_good)).subject == "alice"
    for exp in (NOW - LEEWAY, NOW - LEEWAY - 1, NOW - 10_000):
        with pytest.raises(AdminAuthError, match="expired"):
            auth.authenticate(_bearer(ed, claims(iat=exp - 60, exp=exp)))


def test_iat_in_the_future(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    ok = claims(iat=NOW + LEEWAY, exp=NOW + LEEWAY + 60)
    assert auth.authenticate(_bearer(ed, ok)).subject == "alice"
    with pytest.raises(AdminAuthError, match="future"):
        auth.authenticate(_bearer(ed, claims(iat=NOW + LEEWAY + 1, exp=NOW + LEEWAY + 60)))


@pytest.mark.parametrize("iat", [str(NOW), float(NOW), True])
def test_non_int_iat(ed: ed25519.Ed25519PrivateKey, iat: object) -> None:
    with pytest.raises(AdminAuthError, match="iat"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(iat=iat)))


def test_lifetime_over_the_max_with_iat(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    at_max = claims(iat=NOW - 10, exp=NOW - 10 + MAX_LIFETIME)
    assert auth.authenticate(_bearer(ed, at_max)).subject == "alice"
    with pytest.raises(AdminAuthError, match="lifetime"):
        auth.authenticate(_bearer(ed, claims(iat=NOW - 10, exp=NOW - 10 + MAX_LIFETIME + 1)))


def test_lifetime_over_the_max_without_iat(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    assert auth.authenticate(_bearer(ed, claims(iat=None, exp=NOW + MAX_LIFETIME))).subject
    with pytest.raises(AdminAuthError, match="lifetime"):
        auth.authenticate(_bearer(ed, claims(iat=None, exp=NOW + MAX_LIFETIME + 1)))


def test_nbf_in_the_future(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError, match="not yet valid"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(nbf=NOW + LEEWAY + 1)))


@pytest.mark.parametrize("nbf", [str(NOW), float(NOW), True, False])
def test_non_int_nbf(ed: ed25519.Ed25519PrivateKey, nbf: object) -> None:
    with pytest.raises(AdminAuthError):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(nbf=nbf)))


@pytest.mark.parametrize("sub", [1, True, ["alice"], {"name": "alice"}, "a" * 300])
def test_non_string_sub(ed: ed25519.Ed25519PrivateKey, sub: object) -> None:
    with pytest.raises(AdminAuthError, match="sub"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(sub=sub)))


# --- refusals: subject binding, audience, replay -------------------------------------------


def test_a_key_cannot_speak_for_another_subject(
    ed: ed25519.Ed25519PrivateKey, p256: ec.EllipticCurvePrivateKey
) -> None:
    """Two admins of one tenant: bob's key signing sub=alice is refused, so bob cannot write
    alice's name into the audit log."""
    auth = _auth(ed.public_key(), p256.public_key(), subjects=("alice", "bob"))
    with pytest.raises(AdminAuthError, match="not the key's registered subject"):
        auth.authenticate(_bearer(p256, claims(sub="alice")))
    with pytest.raises(AdminAuthError, match="not the key's registered subject"):
        auth.authenticate(_bearer(ed, claims(sub="admin")))


def test_missing_aud(ed: ed25519.Ed25519PrivateKey) -> None:
    with pytest.raises(AdminAuthError, match="'aud' claim missing"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(aud=None)))


@pytest.mark.parametrize(
    "aud",
    [
        "https://other-broker.example/tenants/bank",  # another broker
        "https://broker.example/tenants/insurer",  # another tenant of this broker
        "https://broker.example",  # this broker's default tenant
        "https://broker.example/operator",  # the operator API
        "https://broker.example:8443/tenants/bank",  # another port
        "http://broker.example/tenants/bank",  # another scheme
        "https://broker.example/tenants/bank/kbs/v0",  # not a base URL
        "https://broker.example/tenants/ban",  # a prefix, never a prefix match
    ],
)
def test_wrong_aud(ed: ed25519.Ed25519PrivateKey, aud: str) -> None:
    with pytest.raises(AdminAuthError, match="is not this broker and tenant"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(aud=aud)))


@pytest.mark.parametrize("aud", [[AUD], 1, "not a url", "ftp://broker.example", f"{AUD}?x=1"])
def test_malformed_aud(ed: ed25519.Ed25519PrivateKey, aud: object) -> None:
    with pytest.raises(AdminAuthError, match="'aud'"):
        _auth(ed.public_key()).authenticate(_bearer(ed, claims(aud=aud)))


def test_no_audience_known_refuses_everything(ed: ed25519.Ed25519PrivateKey) -> None:
    clock = FrozenClock(NOW)
    auth = AdminAuthenticator(
        [RegisteredKey(ed.public_key(), "alice", Role.ADMIN)],
        audiences=Origins([]).for_tenant("bank", "default"),
        replay=ReplayGuard(MemoryStore(), "admin_jti", clock),
        clock=clock,
    )
    with pytest.raises(AdminAuthError, match=r"server\.public_urls"):
        auth.authenticate(_bearer(ed, claims()))


def test_bound_loopback_origins() -> None:
    origins = Origins([])
    origins.listening_at("http://0.0.0.0:8080")
    assert set(origins.for_tenant("bank", "default")()) == {
        "http://127.0.0.1:8080/tenants/bank",
        "http://localhost:8080/tenants/bank",
        "http://[::1]:8080/tenants/bank",
    }
    configured = Origins(["https://Broker.example/"])
    configured.listening_at("http://127.0.0.1:8080")
    assert configured.for_operator()() == {"https://broker.example:443/operator"}


def test_replayed_jti(ed: ed25519.Ed25519PrivateKey) -> None:
    auth = _auth(ed.public_key())
    token = _bearer(ed, claims())
    assert auth.authenticate(token).subject == "alice"
    with pytest.raises(AdminAuthError, match="already used"):
        auth.authenticate(token)
    # The same jti in another token of the same subject is the same replay.
    with pytest.raises(AdminAuthError, match="already used"):
        auth.authenticate(_bearer(ed, {**claims(), "jti": json.loads(_payload(token))["jti"]}))


def test_jti_is_forgotten_only_after_expiry(ed: ed25519.Ed25519PrivateKey) -> None:
    store, clock = MemoryStore(), FrozenClock(NOW)
    guard = ReplayGuard(store, "admin_jti", clock)
    assert guard.first_use("alice", "j1", NOW + 600)
    clock.advance(599)
    assert not guard.first_use("alice", "j1", NOW + 600)
    clock.advance(2)
    assert guard.first_use("alice", "j1", NOW + 1200)  # expired record: the token is too


@pytest.mark.parametrize("jti", [None, "", 7, ["a"], "x" * 257])
def test_missing_or_bad_jti(ed: ed25519.Ed25519PrivateKey, jti: object) -> None:
    c = claims()
    if jti is None:
        del c["jti"]
    else:
        c["jti"] = jti
    with pytest.raises(AdminAuthError, match="'jti'"):
        _auth(ed.public_key()).authenticate(_bearer(ed, c))


def _payload(bearer: str) -> bytes:
    from custodes._internal.b64 import b64url_decode

    return b64url_decode(bearer.removeprefix("Bearer ").split(".")[1])
