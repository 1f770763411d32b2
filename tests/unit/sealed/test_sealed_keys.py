"""Signing keys: upstream's JWK files load; generated JWKs are what upstream writes; bad keys
are refused."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwcrypto import jwk as jw_jwk

from custodes._internal.b64 import b64url_encode
from custodes.errors import ConfigError
from custodes.sealed.errors import InvalidSigningKey
from custodes.sealed.keys import (
    generate_signing_key,
    load_signing_key,
    load_verification_key,
    parse_jwk_bytes,
    private_jwk,
    private_key_from_jwk,
    public_jwk,
    public_key_from_jwk,
    write_jwk,
)


def _vector(vectors: Path, name: str) -> Any:
    return json.loads((vectors / "guest-components" / "sealed-secret" / name).read_text())


@pytest.mark.parametrize(
    "name", ["gc-test-key.json", "gc-test-key-2.json", "website-sample-private-public.jwk.json"]
)
def test_upstream_private_jwks_load(vectors: Path, name: str) -> None:
    obj = _vector(vectors, name)
    key = private_key_from_jwk(obj)
    # The same key as an independent JOSE implementation reads it.
    theirs = jw_jwk.JWK(**obj).get_op_key("sign")
    assert key.private_numbers() == theirs.private_numbers()


@pytest.mark.parametrize("name", ["kata-signing-public.jwk.json", "website-sample-public.jwk.json"])
def test_upstream_public_jwks_load(vectors: Path, name: str) -> None:
    obj = _vector(vectors, name)
    key = public_key_from_jwk(obj)
    assert key.public_numbers() == jw_jwk.JWK(**obj).get_op_key("verify").public_numbers()


def test_website_pair_matches(vectors: Path) -> None:
    private = private_key_from_jwk(_vector(vectors, "website-sample-private-public.jwk.json"))
    public = public_key_from_jwk(_vector(vectors, "website-sample-public.jwk.json"))
    assert private.public_key().public_numbers() == public.public_numbers()


def test_private_jwk_is_refused_as_verification_key(vectors: Path) -> None:
    with pytest.raises(InvalidSigningKey):
        public_key_from_jwk(_vector(vectors, "website-sample-private-public.jwk.json"))


def test_generated_jwks_have_upstream_members() -> None:
    key = generate_signing_key()
    priv = private_jwk(key, "sealed-signing")
    pub = public_jwk(key.public_key(), "sealed-signing")
    assert set(priv) == {"kty", "crv", "x", "y", "d", "use", "alg", "kid"}
    assert {k: v for k, v in priv.items() if k != "d"} == pub
    assert (pub["kty"], pub["crv"], pub["alg"], pub["use"]) == ("EC", "P-256", "ES256", "sig")
    assert private_key_from_jwk(priv).private_numbers() == key.private_numbers()
    assert public_key_from_jwk(pub).public_numbers() == key.public_key().public_numbers()
    # jwcrypto agrees on both.
    assert jw_jwk.JWK(**priv).get_op_key("sign").private_numbers() == key.private_numbers()


def test_small_scalar_keeps_fixed_length() -> None:
    key = ec.derive_private_key(1, ec.SECP256R1())
    jwk = private_jwk(key, "k")
    assert jwk["d"] == b64url_encode((1).to_bytes(32, "big"))
    assert private_key_from_jwk(jwk).private_numbers().private_value == 1


@pytest.fixture(scope="module")
def good() -> dict[str, Any]:
    return private_jwk(generate_signing_key(), "k")


@pytest.mark.parametrize(
    "change",
    [
        {"kty": "RSA"},
        {"crv": "P-384"},
        {"crv": "P-521"},
        {"alg": "ES384"},
        {"use": "enc"},
        {"d": None},
        {"d": "AAAA"},
        {"d": b64url_encode(b"\x00" * 32)},
        {"d": b64url_encode(b"\xff" * 32)},
        {"d": "not base64!"},
        {"x": b64url_encode(b"\x01" * 32)},
        {"y": None},
    ],
    ids=["kty", "p384", "p521", "alg", "use", "no-d", "short-d", "zero-d", "d-over-order",
         "d-b64", "x-mismatch", "no-y"],
)  # fmt: skip
def test_bad_private_jwk_refused(good: dict[str, Any], change: dict[str, Any]) -> None:
    with pytest.raises(InvalidSigningKey):
        private_key_from_jwk({**good, **change})


@pytest.mark.parametrize(
    "change",
    [{"kty": "OKP"}, {"crv": "P-384"}, {"x": "AAAA"}, {"y": b64url_encode(b"\x02" * 32)}],
    ids=["kty", "crv", "short-x", "off-curve"],
)
def test_bad_public_jwk_refused(good: dict[str, Any], change: dict[str, Any]) -> None:
    pub = {k: v for k, v in good.items() if k != "d"}
    with pytest.raises(InvalidSigningKey):
        public_key_from_jwk({**pub, **change})


def test_jwk_not_an_object_refused() -> None:
    with pytest.raises(InvalidSigningKey):
        public_key_from_jwk(["EC"])


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"kty":"EC","kty":"EC"}', b"\xff", b" " * 70000])
def test_bad_jwk_documents_refused(raw: bytes) -> None:
    with pytest.raises(InvalidSigningKey):
        parse_jwk_bytes(raw)


def test_jwk_files_written_and_loaded(tmp_path: Path) -> None:
    key = generate_signing_key()
    priv, pub = tmp_path / "k-private.json", tmp_path / "k-public.json"
    write_jwk(priv, private_jwk(key, "k"), private=True)
    write_jwk(pub, public_jwk(key.public_key(), "k"), private=False)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert load_signing_key(priv).private_numbers() == key.private_numbers()
    assert load_verification_key(pub).public_numbers() == key.public_key().public_numbers()
    with pytest.raises(ConfigError):
        write_jwk(priv, private_jwk(key, "k"), private=True)


def test_pem_keys_load(tmp_path: Path) -> None:
    key = generate_signing_key()
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert load_signing_key(priv).private_numbers() == key.private_numbers()
    assert load_verification_key(pub).public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("kind", ["p384", "ed25519"])
def test_pem_keys_of_other_types_refused(tmp_path: Path, kind: str) -> None:
    other = (
        ec.generate_private_key(ec.SECP384R1())
        if kind == "p384"
        else ed25519.Ed25519PrivateKey.generate()
    )
    priv, pub = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    priv.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub.write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(InvalidSigningKey):
        load_signing_key(priv)
    with pytest.raises(InvalidSigningKey):
        load_verification_key(pub)


def test_unreadable_key_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_signing_key(tmp_path / "missing.json")


def test_garbage_pem_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(InvalidSigningKey):
        load_signing_key(path)
    with pytest.raises(InvalidSigningKey):
        load_verification_key(path)


def test_other_curve_refused_when_writing_jwk() -> None:
    with pytest.raises(InvalidSigningKey):
        public_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), "k")
