"""The tee-pubkey JWK and the guest's ephemeral key pair."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import InvalidTeeKey
from custodes.protocol.tee_key import TeeKeyAlgorithm, TeeKeyPair, TeePublicKey, parse_ec_point

P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1


@pytest.fixture(scope="module")
def derived(vectors: Path) -> dict[str, Any]:
    path = vectors / "trustee" / "derived" / "kbs_protocol_derived_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture()
def ec_jwk(derived: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(derived["jwe_ecdh_es_a256kw_p256"]["tee_pubkey_jwk"])


@pytest.fixture()
def rsa_jwk(derived: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(derived["jwe_rsa_oaep_256"]["tee_pubkey_jwk"])


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _coord(value: int, size: int = 32) -> str:
    return b64url_encode(value.to_bytes(size, "big"))


# --- accepted keys -------------------------------------------------------------------------


def test_vector_ec_key_accepted(ec_jwk: dict[str, Any]) -> None:
    key = TeePublicKey.from_jwk(ec_jwk)
    assert key.alg is TeeKeyAlgorithm.ECDH_ES_A256KW
    assert isinstance(key.key, ec.EllipticCurvePublicKey)
    assert key.key.curve.name == "secp256r1"
    assert key.jwk == ec_jwk
    assert key.jwk is not ec_jwk  # a private copy: later mutation cannot change the binding


def test_vector_rsa_key_accepted(rsa_jwk: dict[str, Any]) -> None:
    key = TeePublicKey.from_jwk(rsa_jwk)
    assert key.alg is TeeKeyAlgorithm.RSA_OAEP_256
    assert isinstance(key.key, rsa.RSAPublicKey)
    assert key.key.key_size == 2048


def test_unknown_members_kept_for_binding(ec_jwk: dict[str, Any]) -> None:
    ec_jwk["kid"] = "k1"
    ec_jwk["use"] = "enc"
    assert TeePublicKey.from_jwk(ec_jwk).jwk["kid"] == "k1"


def test_p521_key_accepted() -> None:
    pair = TeeKeyPair.generate("ec-p521")
    jwk = pair.public_jwk()
    assert jwk["crv"] == "P-521"
    assert len(b64url_decode(jwk["x"])) == 66
    assert len(b64url_decode(jwk["y"])) == 66
    assert TeePublicKey.from_jwk(jwk).key == pair.public.key


def test_rsa1_5_only_when_allowed(rsa_jwk: dict[str, Any]) -> None:
    rsa_jwk["alg"] = "RSA1_5"
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(rsa_jwk)
    assert TeePublicKey.from_jwk(rsa_jwk, allow_rsa1_5=True).alg is TeeKeyAlgorithm.RSA1_5


# --- refused keys --------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [None, "key", [], 42, True])
def test_not_an_object_refused(obj: object) -> None:
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(obj)


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "alg": "A256KW", "k": "AAAAAAAAAAAAAAAAAAAAAA"},
        {"kty": "OKP", "crv": "X25519", "alg": "ECDH-ES+A256KW", "x": "A" * 43},
        {"kty": "AKP", "alg": "MLKEM768+A192KW", "pub": "AAAA"},
        {"kty": "ec", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "A", "y": "A"},
        {"crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "A", "y": "A"},
    ],
    ids=["oct", "OKP", "AKP", "lowercase-ec", "no-kty"],
)
def test_unsupported_key_type_refused(jwk: dict[str, Any]) -> None:
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(jwk)


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("crv", "P-384"),
        ("crv", "secp256k1"),
        ("crv", None),
        ("alg", "ECDH-ES"),
        ("alg", "RSA-OAEP-256"),
        ("alg", None),
        ("x", 5),
        ("y", None),
    ],
)
def test_bad_ec_member_refused(ec_jwk: dict[str, Any], member: str, value: object) -> None:
    if value is None:
        del ec_jwk[member]
    else:
        ec_jwk[member] = value
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(ec_jwk)


@pytest.mark.parametrize("member", ["x", "y"])
def test_wrong_coordinate_length_refused(ec_jwk: dict[str, Any], member: str) -> None:
    raw = b64url_decode(ec_jwk[member])
    for bad in (raw[1:], b"\x00" + raw):
        jwk = dict(ec_jwk, **{member: b64url_encode(bad)})
        with pytest.raises(InvalidTeeKey):
            TeePublicKey.from_jwk(jwk)


@pytest.mark.parametrize(
    "spelling",
    [
        lambda s: s + "=",  # padded
        lambda s: s.replace("_", "/").replace("-", "+"),  # standard alphabet
        lambda s: s[:-1] + chr(ord(s[-1]) ^ 1),  # stray bits in the last character
        lambda s: " " + s,
    ],
    ids=["padded", "std-alphabet", "non-canonical", "space"],
)
def test_non_strict_base64url_refused(ec_jwk: dict[str, Any], spelling: Any) -> None:
    # The vector's x contains "_" and its y "-", so the alphabet swap changes both.
    jwk = dict(ec_jwk, x=spelling(ec_jwk["x"]), y=spelling(ec_jwk["y"]))
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(jwk)


def test_off_curve_point_refused(ec_jwk: dict[str, Any]) -> None:
    y = int.from_bytes(b64url_decode(ec_jwk["y"]), "big")
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(ec_jwk, y=_coord((y + 1) % P256_PRIME)))


def test_invalid_curve_point_refused(ec_jwk: dict[str, Any]) -> None:
    # (1, 1) lies on y^2 = x^3 - 3x + 3: same field and a as P-256, another b.
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(ec_jwk, x=_coord(1), y=_coord(1)))


def test_identity_point_refused(ec_jwk: dict[str, Any]) -> None:
    # The point at infinity has no affine coordinates; (0, 0) is how it leaks into JWKs.
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(ec_jwk, x=_coord(0), y=_coord(0)))


def test_coordinate_beyond_field_refused(ec_jwk: dict[str, Any]) -> None:
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(ec_jwk, x=_coord(P256_PRIME)))
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(ec_jwk, y=_coord(2**256 - 1)))


def test_parse_ec_point_is_the_same_check(ec_jwk: dict[str, Any]) -> None:
    key = parse_ec_point("P-256", ec_jwk["x"], ec_jwk["y"])
    assert key == TeePublicKey.from_jwk(ec_jwk).key
    with pytest.raises(InvalidTeeKey):
        parse_ec_point("P-521", ec_jwk["x"], ec_jwk["y"])


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth"])
def test_private_members_refused(
    ec_jwk: dict[str, Any], rsa_jwk: dict[str, Any], member: str
) -> None:
    for jwk in (ec_jwk, rsa_jwk):
        with pytest.raises(InvalidTeeKey):
            TeePublicKey.from_jwk(dict(jwk, **{member: "AQAB"}))


@pytest.fixture(scope="module")
def rsa_1024() -> rsa.RSAPrivateKey:
    # Deliberately weak: the key the broker must refuse.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


def test_short_rsa_modulus_refused(rsa_jwk: dict[str, Any], rsa_1024: rsa.RSAPrivateKey) -> None:
    n = rsa_1024.public_key().public_numbers().n
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(rsa_jwk, n=b64url_encode(n.to_bytes(128, "big"))))


def test_even_rsa_modulus_refused(rsa_jwk: dict[str, Any]) -> None:
    n = int.from_bytes(b64url_decode(rsa_jwk["n"]), "big") - 1
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(rsa_jwk, n=b64url_encode(n.to_bytes(256, "big"))))


def test_rsa_modulus_with_leading_zero_refused(rsa_jwk: dict[str, Any]) -> None:
    n = b"\x00" + b64url_decode(rsa_jwk["n"])
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(rsa_jwk, n=b64url_encode(n)))


@pytest.mark.parametrize("e", [0, 1, 2, 65536, 2**65 + 1])
def test_bad_rsa_exponent_refused(rsa_jwk: dict[str, Any], e: int) -> None:
    raw = e.to_bytes(max(1, (e.bit_length() + 7) // 8), "big")
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(dict(rsa_jwk, e=b64url_encode(raw)))


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA1_5", "ECDH-ES+A256KW", "", None])
def test_bad_rsa_algorithm_refused(rsa_jwk: dict[str, Any], alg: str | None) -> None:
    if alg is None:
        del rsa_jwk["alg"]
    else:
        rsa_jwk["alg"] = alg
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(rsa_jwk)


@pytest.mark.parametrize("member", ["n", "e"])
def test_missing_rsa_member_refused(rsa_jwk: dict[str, Any], member: str) -> None:
    del rsa_jwk[member]
    with pytest.raises(InvalidTeeKey):
        TeePublicKey.from_jwk(rsa_jwk)


# --- the guest's key pair ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alg", "kty"),
    [
        ("ec-p256", TeeKeyAlgorithm.ECDH_ES_A256KW, "EC"),
        ("ec-p521", TeeKeyAlgorithm.ECDH_ES_A256KW, "EC"),
        ("rsa", TeeKeyAlgorithm.RSA_OAEP_256, "RSA"),
    ],
)
def test_generate(kind: Any, alg: TeeKeyAlgorithm, kty: str) -> None:
    pair = TeeKeyPair.generate(kind)
    jwk = pair.public_jwk()
    assert pair.public.alg is alg
    assert jwk["kty"] == kty
    assert jwk["alg"] == alg.value
    assert TeePublicKey.from_jwk(jwk) == pair.public


def test_generated_rsa_is_2048_bits() -> None:
    pub = TeeKeyPair.generate("rsa").public.key
    assert isinstance(pub, rsa.RSAPublicKey)
    assert pub.key_size == 2048


def test_public_jwk_in_upstream_member_order() -> None:
    assert list(TeeKeyPair.generate().public_jwk()) == ["kty", "crv", "alg", "x", "y"]
    assert list(TeeKeyPair.generate("rsa").public_jwk()) == ["kty", "alg", "n", "e"]


def test_public_jwk_is_a_copy() -> None:
    pair = TeeKeyPair.generate()
    jwk = pair.public_jwk()
    jwk["x"] = "tampered"
    assert pair.public_jwk()["x"] != "tampered"


@pytest.mark.parametrize("section", ["jwe_ecdh_es_a256kw_p256", "jwe_rsa_oaep_256"])
def test_from_private_pem_matches_vector_jwk(derived: dict[str, Any], section: str) -> None:
    v = derived[section]
    pair = TeeKeyPair.from_private_pem(v["tee_private_key_pem"].encode())
    assert pair.public_jwk() == v["tee_pubkey_jwk"]


def test_private_key_never_printed(derived: dict[str, Any]) -> None:
    pem = derived["jwe_ecdh_es_a256kw_p256"]["tee_private_key_pem"].encode()
    pair = TeeKeyPair.from_private_pem(pem)
    loaded = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    d = loaded.private_numbers().private_value
    for text in (repr(pair), str(pair), f"{pair}"):
        assert "redacted" in text
        assert str(d) not in text
        assert hex(d)[2:] not in text
        assert "PRIVATE" not in text


def test_key_pair_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(TeeKeyPair.generate())


def test_rsa1_5_key_pair_by_explicit_algorithm(derived: dict[str, Any]) -> None:
    pem = derived["jwe_rsa_oaep_256"]["tee_private_key_pem"].encode()
    pair = TeeKeyPair.from_private_pem(pem, TeeKeyAlgorithm.RSA1_5)
    assert pair.public.alg is TeeKeyAlgorithm.RSA1_5
    assert pair.public_jwk()["alg"] == "RSA1_5"


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_from_private_pem_garbage_refused(pem: bytes) -> None:
    with pytest.raises(InvalidTeeKey):
        TeeKeyPair.from_private_pem(pem)


def test_from_private_pem_encrypted_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(InvalidTeeKey):
        TeeKeyPair.from_private_pem(pem)


def test_from_private_pem_wrong_key_kinds_refused(rsa_1024: rsa.RSAPrivateKey) -> None:
    for key in (
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP384R1()),
        rsa_1024,
    ):
        with pytest.raises(InvalidTeeKey):
            TeeKeyPair.from_private_pem(_pem(key))


def test_from_private_pem_algorithm_must_fit_key(derived: dict[str, Any]) -> None:
    ec_pem = derived["jwe_ecdh_es_a256kw_p256"]["tee_private_key_pem"].encode()
    rsa_pem = derived["jwe_rsa_oaep_256"]["tee_private_key_pem"].encode()
    with pytest.raises(InvalidTeeKey):
        TeeKeyPair.from_private_pem(ec_pem, TeeKeyAlgorithm.RSA_OAEP_256)
    with pytest.raises(InvalidTeeKey):
        TeeKeyPair.from_private_pem(rsa_pem, TeeKeyAlgorithm.ECDH_ES_A256KW)


def test_a_remembered_tee_key_is_the_same_key_and_refusals_are_not_remembered() -> None:
    from custodes.protocol.jwk import tee_key_from_jwk

    jwk = TeeKeyPair.generate().public_jwk()
    first = tee_key_from_jwk(jwk)
    reordered = dict(reversed(list(jwk.items())))
    assert tee_key_from_jwk(reordered) is first  # the same members: parsed once
    assert first.jwk == jwk
    bad = {**jwk, "x": jwk["y"]}  # not a point on the curve
    for _ in range(2):
        with pytest.raises(InvalidTeeKey):
            tee_key_from_jwk(bad)
    with pytest.raises(InvalidTeeKey):
        tee_key_from_jwk("not an object")
