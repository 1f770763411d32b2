"""Sealing: the output is upstream's format byte for byte (but for the random signature), and
an independent ES256 implementation (jwcrypto) verifies it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwcrypto import jwk as jw_jwk
from jwcrypto import jws as jw_jws
from jwcrypto.common import JWException

from custodes.protocol.resource import ResourceUri
from custodes.sealed.envelope import seal_envelope
from custodes.sealed.errors import InvalidSigningKey, SealedHeaderError, UnsupportedSealedVersion
from custodes.sealed.format import SealedSecret
from custodes.sealed.keys import generate_signing_key, private_key_from_jwk
from custodes.sealed.payload import VaultPayload, parse_payload
from custodes.sealed.seal import seal
from custodes.sealed.unseal import verify_signature

KID = "kbs:///default/signing-key/sealed-secret"


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return generate_signing_key()


def _jwcrypto_verify(text: str, public: ec.EllipticCurvePublicKey) -> bytes:
    """jwcrypto parses the compact JWS after the prefix and verifies ES256 on its own."""
    token = jw_jws.JWS()
    token.deserialize(text.removeprefix("sealed."), key=jw_jwk.JWK.from_pyca(public))
    payload: bytes = token.payload
    return payload


def test_sealed_by_custodes_verifies_with_jwcrypto(key: ec.EllipticCurvePrivateKey) -> None:
    payload = VaultPayload(name="kbs:///default/key/db")
    text = seal(payload, key, KID)
    assert json.loads(_jwcrypto_verify(text, key.public_key())) == payload.to_json()
    # And jwcrypto refuses it under another key, so the check above is meaningful.
    with pytest.raises(JWException):
        _jwcrypto_verify(text, generate_signing_key().public_key())


def test_sealed_envelope_verifies_with_jwcrypto(key: ec.EllipticCurvePrivateKey) -> None:
    payload = seal_envelope(
        b"data", kek=b"k" * 32, kek_uri=ResourceUri.parse("kbs:///default/kek/a")
    )
    _jwcrypto_verify(seal(payload, key, KID), key.public_key())


@pytest.mark.parametrize(
    "name",
    [
        "kata-precreated-test.sealed.txt",
        "kata-precreated-nim-instruct.sealed.txt",
        "kata-precreated-nim-embedqa.sealed.txt",
    ],
)
def test_upstream_secret_verifies_with_jwcrypto(vectors: Path, name: str) -> None:
    folder = vectors / "guest-components" / "sealed-secret"
    public = jw_jwk.JWK(**json.loads((folder / "kata-signing-public.jwk.json").read_text()))
    payload = _jwcrypto_verify((folder / name).read_text(), public.get_op_key("verify"))
    assert json.loads(payload)["provider"] == "kbs"


def test_same_signing_input_as_upstream(vectors: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Upstream's CLI and custodes write identical header and payload parts."""
    folder = vectors / "guest-components" / "sealed-secret"
    for name in ("kata-precreated-test.sealed.txt", "kata-precreated-nim-embedqa.sealed.txt"):
        theirs = SealedSecret.parse((folder / name).read_text())
        ours = SealedSecret.parse(seal(parse_payload(theirs.payload), key, KID))
        assert ours.signing_input == theirs.signing_input
        verify_signature(ours, key.public_key())


def test_header_and_no_padding(key: ec.EllipticCurvePrivateKey) -> None:
    # Names that would need padding at several lengths: no "=" anywhere (upstream's test too).
    for n in range(1, 5):
        text = seal(VaultPayload(name="kbs:///r/t/" + "a" * n), key, "k")
        assert "=" not in text
        secret = SealedSecret.parse(text)
        assert secret.header == {"b64": True, "alg": "ES256", "kid": "k"}
        assert list(secret.header) == ["b64", "alg", "kid"]


def test_non_ascii_payload_round_trips(key: ec.EllipticCurvePrivateKey) -> None:
    payload = VaultPayload(name="kbs:///r/t/x", annotations={"note": "clé ✓"})
    secret = SealedSecret.parse(seal(payload, key, "k"))
    assert parse_payload(secret.payload) == payload


def test_upstream_test_key_signs(vectors: Path) -> None:
    obj = json.loads(
        (vectors / "guest-components" / "sealed-secret" / "gc-test-key.json").read_text()
    )
    key = private_key_from_jwk(obj)
    text = seal(VaultPayload(name="kbs:///one/2/trois"), key, "test-key")
    verify_signature(SealedSecret.parse(text), key.public_key())


@pytest.mark.parametrize("kind", ["p384", "ed25519", "public"])
def test_other_keys_refused(kind: str) -> None:
    other: object
    if kind == "p384":
        other = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        other = ed25519.Ed25519PrivateKey.generate()
    else:
        other = generate_signing_key().public_key()
    with pytest.raises(InvalidSigningKey):
        seal(VaultPayload(name="kbs:///r/t/x"), other, "k")  # type: ignore[arg-type]


@pytest.mark.parametrize("kid", ["", "k" * 1025])
def test_bad_kid_refused(key: ec.EllipticCurvePrivateKey, kid: str) -> None:
    with pytest.raises(SealedHeaderError):
        seal(VaultPayload(name="kbs:///r/t/x"), key, kid)


def test_other_version_refused(key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(UnsupportedSealedVersion):
        seal(VaultPayload(name="kbs:///r/t/x", version="0.2.0"), key, "k")
