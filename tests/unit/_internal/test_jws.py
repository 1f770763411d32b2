"""Compact JWS: round trips, interop with jwcrypto, and every refusal rule."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwcrypto import jwk, jws

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.jws import (
    PublicKey,
    algorithm_for,
    sign_compact,
    verify_compact,
    verify_compact_with_key,
)
from custodes.errors import ConfigError, TokenError

PAYLOAD = {"sub": "admin", "n": 1, "nested": {"a": [1, 2]}}


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _segment(obj: object) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def _es256(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _forge(header: object, payload: object, sign: object = None) -> str:
    """A token with an arbitrary header, signed by ``sign(data) -> bytes`` (or unsigned)."""
    signing_input = _segment(header) + "." + _segment(payload)
    signature = sign(signing_input.encode()) if callable(sign) else b""
    return signing_input + "." + b64url_encode(signature)


# --- positive ------------------------------------------------------------------------------


def test_es256_round_trip(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256", "typ": "JWT"}, PAYLOAD, p256)
    header, payload = verify_compact(token, [p256.public_key()])
    assert header == {"alg": "ES256", "typ": "JWT"}
    assert payload == PAYLOAD
    assert len(b64url_decode(token.split(".")[2])) == 64


def test_eddsa_round_trip(ed: ed25519.Ed25519PrivateKey) -> None:
    token = sign_compact({"alg": "EdDSA"}, PAYLOAD, ed)
    assert verify_compact(token, [ed.public_key()])[1] == PAYLOAD


def test_compact_json_separators(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256"}, {"a": 1, "b": "x"}, p256)
    assert b64url_decode(token.split(".")[1]) == b'{"a":1,"b":"x"}'


def test_key_selection_among_several(
    p256: ec.EllipticCurvePrivateKey, ed: ed25519.Ed25519PrivateKey
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = sign_compact({"alg": "ES256"}, PAYLOAD, p256)
    keys: list[PublicKey] = [ed.public_key(), other.public_key(), p256.public_key()]
    _, _, used = verify_compact_with_key(token, keys)
    assert used is keys[2]


def test_jwcrypto_verifies_our_tokens(
    p256: ec.EllipticCurvePrivateKey, ed: ed25519.Ed25519PrivateKey
) -> None:
    for key, alg in ((p256, "ES256"), (ed, "EdDSA")):
        token = sign_compact({"alg": alg}, PAYLOAD, key)
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        obj = jws.JWS()
        obj.deserialize(token)
        obj.verify(jwk.JWK.from_pem(pem), alg=alg)
        assert json.loads(obj.payload) == PAYLOAD


def test_we_verify_jwcrypto_tokens(
    p256: ec.EllipticCurvePrivateKey, ed: ed25519.Ed25519PrivateKey
) -> None:
    for key, alg in ((p256, "ES256"), (ed, "EdDSA")):
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        obj = jws.JWS(json.dumps(PAYLOAD).encode())
        obj.add_signature(jwk.JWK.from_pem(pem), alg=alg, protected={"alg": alg})
        assert verify_compact(obj.serialize(compact=True), [key.public_key()])[1] == PAYLOAD


# --- signing refusals ----------------------------------------------------------------------


def test_sign_refuses_alg_not_matching_key(p256: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError):
        sign_compact({"alg": "EdDSA"}, PAYLOAD, p256)
    with pytest.raises(ConfigError):
        sign_compact({}, PAYLOAD, p256)


def test_sign_refuses_crit(p256: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ConfigError):
        sign_compact({"alg": "ES256", "crit": ["b64"]}, PAYLOAD, p256)


def test_p384_keys_are_not_supported() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigError):
        algorithm_for(key)
    with pytest.raises(ConfigError):
        sign_compact({"alg": "ES384"}, PAYLOAD, key)


# --- verification refusals -----------------------------------------------------------------


def test_alg_none_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = _forge({"alg": "none"}, PAYLOAD)
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_hs256_with_public_key_as_secret_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    public = p256.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
    ):
        token = _forge(
            {"alg": "HS256"},
            PAYLOAD,
            lambda data, s=secret: hmac.new(s, data, hashlib.sha256).digest(),
        )
        with pytest.raises(TokenError):
            verify_compact(token, [public])


def test_rs256_header_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = _forge({"alg": "RS256"}, PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_es384_header_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    # A valid ES256 signature under an ES384 header: the header may not choose the algorithm.
    token = _forge({"alg": "ES384"}, PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])
    # And a genuine P-384/ES384 token.
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = _forge({"alg": "ES384"}, PAYLOAD, lambda d: p384.sign(d, ec.ECDSA(hashes.SHA384())))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_eddsa_header_against_p256_key_refused(
    p256: ec.EllipticCurvePrivateKey, ed: ed25519.Ed25519PrivateKey
) -> None:
    token = sign_compact({"alg": "EdDSA"}, PAYLOAD, ed)
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_missing_alg_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = _forge({"typ": "JWT"}, PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])
    token = _forge({"alg": 7}, PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_crit_header_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = _forge({"alg": "ES256", "crit": ["exp"]}, PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_wrong_key_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256"}, PAYLOAD, p256)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenError):
        verify_compact(token, [other.public_key()])


def test_no_keys_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256"}, PAYLOAD, p256)
    with pytest.raises(TokenError):
        verify_compact(token, [])


def test_tampered_payload_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    header, _, signature = sign_compact({"alg": "ES256"}, PAYLOAD, p256).split(".")
    tampered = _segment({**PAYLOAD, "sub": "root"})
    with pytest.raises(TokenError):
        verify_compact(f"{header}.{tampered}.{signature}", [p256.public_key()])


def test_tampered_header_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    _, payload, signature = sign_compact({"alg": "ES256"}, PAYLOAD, p256).split(".")
    header = _segment({"alg": "ES256", "kid": "x"})
    with pytest.raises(TokenError):
        verify_compact(f"{header}.{payload}.{signature}", [p256.public_key()])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, p, s: f"{h}=.{p}.{s}",  # padding
        lambda h, p, s: f"{h}.{p}+.{s}",  # standard alphabet
        lambda h, p, s: f"{h}.{p}.{s}=",  # padded signature
        lambda h, p, s: f"{h}.{p}.{s[:-1]}!",  # not base64 at all
        lambda h, p, s: f"{h[:-1]}.{p}.{s}",  # truncated header
    ],
)
def test_bad_base64_refused(p256: ec.EllipticCurvePrivateKey, mutate: object) -> None:
    h, p, s = sign_compact({"alg": "ES256"}, PAYLOAD, p256).split(".")
    assert callable(mutate)
    with pytest.raises(TokenError):
        verify_compact(mutate(h, p, s), [p256.public_key()])


def test_wrong_signature_length_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    h, p, s = sign_compact({"alg": "ES256"}, PAYLOAD, p256).split(".")
    raw = b64url_decode(s)
    for bad in (raw[:-1], raw + b"\x00", b"\x00" + raw):
        with pytest.raises(TokenError):
            verify_compact(f"{h}.{p}.{b64url_encode(bad)}", [p256.public_key()])
    # DER-encoded ECDSA signature (what OpenSSL returns) is not a JWS signature.
    der = p256.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(TokenError):
        verify_compact(f"{h}.{p}.{b64url_encode(der)}", [p256.public_key()])


@pytest.mark.parametrize("count", [1, 2, 4, 5])
def test_wrong_segment_count_refused(p256: ec.EllipticCurvePrivateKey, count: int) -> None:
    parts = sign_compact({"alg": "ES256"}, PAYLOAD, p256).split(".")
    token = ".".join((parts * 2)[:count])
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_oversized_token_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256"}, {"pad": "x" * 2000}, p256)
    assert verify_compact(token, [p256.public_key()], max_len=len(token))[1]["pad"]
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()], max_len=len(token) - 1)


def test_non_ascii_and_non_text_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = sign_compact({"alg": "ES256"}, PAYLOAD, p256)
    with pytest.raises(TokenError):
        verify_compact(token + "é", [p256.public_key()])
    with pytest.raises(TokenError):
        verify_compact(token.encode(), [p256.public_key()])  # type: ignore[arg-type]


@pytest.mark.parametrize("payload", [[1, 2], "text", 3])
def test_non_object_payload_refused(p256: ec.EllipticCurvePrivateKey, payload: object) -> None:
    token = _forge({"alg": "ES256"}, payload, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_non_object_header_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    token = _forge(["ES256"], PAYLOAD, lambda d: _es256(p256, d))
    with pytest.raises(TokenError):
        verify_compact(token, [p256.public_key()])


def test_duplicate_members_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    header = b64url_encode(b'{"alg":"ES256","alg":"none"}')
    payload = b64url_encode(b'{"sub":"a"}')
    signature = b64url_encode(_es256(p256, f"{header}.{payload}".encode()))
    with pytest.raises(TokenError):
        verify_compact(f"{header}.{payload}.{signature}", [p256.public_key()])
    header = b64url_encode(b'{"alg":"ES256"}')
    payload = b64url_encode(b'{"sub":"a","sub":"b"}')
    signature = b64url_encode(_es256(p256, f"{header}.{payload}".encode()))
    with pytest.raises(TokenError):
        verify_compact(f"{header}.{payload}.{signature}", [p256.public_key()])


def test_nan_and_invalid_json_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    header = b64url_encode(b'{"alg":"ES256"}')
    for raw in (b'{"n":NaN}', b'{"n":1', b"\xff\xfe"):
        payload = b64url_encode(raw)
        signature = b64url_encode(_es256(p256, f"{header}.{payload}".encode()))
        with pytest.raises(TokenError):
            verify_compact(f"{header}.{payload}.{signature}", [p256.public_key()])


def test_deeply_nested_json_refused(p256: ec.EllipticCurvePrivateKey) -> None:
    header = b64url_encode(b"[" * 40000)
    with pytest.raises(TokenError):
        verify_compact(f"{header}.e30.AA", [p256.public_key()], max_len=1 << 20)


def test_unsupported_trusted_key_type_is_a_config_error(
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    token = sign_compact({"alg": "ES256"}, PAYLOAD, p256)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ConfigError):
        verify_compact(token, [p384])
