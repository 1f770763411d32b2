"""JWE to the TEE key: upstream vectors, interop with jwcrypto both ways, and every refusal."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk
from jwcrypto.common import json_encode

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import JweError
from custodes.protocol import jwe
from custodes.protocol.tee_key import TeeKeyAlgorithm, TeeKeyPair, TeePublicKey

PLAINTEXT = b'{"key":"a secret resource"}'
JWCRYPTO_ALGS = [*jw_jwe.default_allowed_algs, "RSA1_5"]


@pytest.fixture(scope="module")
def derived(vectors: Path) -> dict[str, Any]:
    path = vectors / "trustee" / "derived" / "kbs_protocol_derived_vectors.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


class Keys:
    """One private key per kind, as PEM, opened by both custodes and jwcrypto."""

    def __init__(self, private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
        self.private = private
        self.pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def pair(self, alg: TeeKeyAlgorithm | None = None) -> TeeKeyPair:
        return TeeKeyPair.from_private_pem(self.pem, alg)

    def jwcrypto(self) -> Any:
        return jw_jwk.JWK.from_pem(self.pem)


@pytest.fixture(scope="module")
def p256() -> Keys:
    return Keys(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def p521() -> Keys:
    return Keys(ec.generate_private_key(ec.SECP521R1()))


@pytest.fixture(scope="module")
def rsa_keys() -> Keys:
    return Keys(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def _header(obj: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(obj["protected"]))
    return header


def _with_header(obj: dict[str, Any], header: object, **dumps: Any) -> dict[str, Any]:
    return dict(obj, protected=b64url_encode(json.dumps(header, **dumps).encode()))


def _flip(obj: dict[str, Any], member: str, index: int = 0) -> dict[str, Any]:
    raw = bytearray(b64url_decode(obj[member]))
    raw[index] ^= 0x01
    return dict(obj, **{member: b64url_encode(bytes(raw))})


def _jwcrypto_decrypt(token: dict[str, Any], key: Any, algs: list[str] | None = None) -> bytes:
    e = jw_jwe.JWE(algs=algs)
    e.deserialize(json.dumps(token), key=key)
    payload: bytes = e.payload
    return payload


def _jwcrypto_encrypt(
    key: Any, header: dict[str, Any], *, spaces: bool = False, aad: bytes | None = None
) -> dict[str, Any]:
    protected = json.dumps(header) if spaces else json_encode(header)
    e = jw_jwe.JWE(PLAINTEXT, protected, aad=aad, algs=JWCRYPTO_ALGS)
    e.add_recipient(key)
    token: dict[str, Any] = json.loads(e.serialize())
    return token


# --- upstream-shaped vectors ---------------------------------------------------------------


@pytest.mark.parametrize("section", ["jwe_ecdh_es_a256kw_p256", "jwe_rsa_oaep_256"])
def test_derived_vectors_decrypt(derived: dict[str, Any], section: str) -> None:
    v = derived[section]
    pair = TeeKeyPair.from_private_pem(v["tee_private_key_pem"].encode())
    assert pair.decrypt(v["kbs_response"]) == v["plaintext_utf8"].encode()
    private = serialization.load_pem_private_key(v["tee_private_key_pem"].encode(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    assert jwe.decrypt(v["kbs_response"], private) == v["plaintext_utf8"].encode()


def test_ecdh_header_shape_is_upstreams(derived: dict[str, Any]) -> None:
    v = derived["jwe_ecdh_es_a256kw_p256"]
    out = jwe.encrypt(PLAINTEXT, TeePublicKey.from_jwk(v["tee_pubkey_jwk"]))
    assert list(out) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    raw = b64url_decode(out["protected"])
    header = json.loads(raw)
    assert raw == json.dumps(header, separators=(",", ":")).encode()  # compact
    assert list(header) == list(v["protected_header_decoded"]) == ["alg", "enc", "epk"]
    assert list(header["epk"]) == ["crv", "kty", "x", "y"]
    assert header["alg"] == "ECDH-ES+A256KW"
    assert header["enc"] == "A256GCM"
    assert len(b64url_decode(out["encrypted_key"])) == 40
    assert len(b64url_decode(out["iv"])) == 12
    assert len(b64url_decode(out["tag"])) == 16
    assert len(b64url_decode(out["ciphertext"])) == len(PLAINTEXT)


def test_rsa_protected_header_is_byte_identical_to_upstream(derived: dict[str, Any]) -> None:
    v = derived["jwe_rsa_oaep_256"]
    out = jwe.encrypt(PLAINTEXT, TeePublicKey.from_jwk(v["tee_pubkey_jwk"]))
    assert out["protected"] == v["kbs_response"]["protected"]
    assert len(b64url_decode(out["encrypted_key"])) == 256


def test_fresh_cek_and_iv_each_time(p256: Keys) -> None:
    pub = p256.pair().public
    a, b = jwe.encrypt(PLAINTEXT, pub), jwe.encrypt(PLAINTEXT, pub)
    assert a["iv"] != b["iv"]
    assert a["encrypted_key"] != b["encrypted_key"]


def test_empty_plaintext_round_trips(p256: Keys) -> None:
    pair = p256.pair()
    assert pair.decrypt(jwe.encrypt(b"", pair.public)) == b""


# --- custodes -> jwcrypto ------------------------------------------------------------------


@pytest.mark.parametrize("keys_name", ["p256", "p521", "rsa_keys"])
def test_custodes_jwe_opens_with_jwcrypto(keys_name: str, request: pytest.FixtureRequest) -> None:
    keys: Keys = request.getfixturevalue(keys_name)
    pair = keys.pair()
    token = jwe.encrypt(PLAINTEXT, pair.public)
    assert _jwcrypto_decrypt(token, keys.jwcrypto()) == PLAINTEXT
    assert pair.decrypt(token) == PLAINTEXT


def test_custodes_rsa1_5_jwe_opens_with_jwcrypto(rsa_keys: Keys) -> None:
    pair = rsa_keys.pair(TeeKeyAlgorithm.RSA1_5)
    token = jwe.encrypt(PLAINTEXT, pair.public)
    assert _header(token)["alg"] == "RSA1_5"
    assert _jwcrypto_decrypt(token, rsa_keys.jwcrypto(), JWCRYPTO_ALGS) == PLAINTEXT
    assert pair.decrypt(token, allow_rsa1_5=True) == PLAINTEXT


# --- jwcrypto -> custodes ------------------------------------------------------------------


@pytest.mark.parametrize("spaces", [False, True], ids=["compact-header", "header-with-spaces"])
@pytest.mark.parametrize(
    ("keys_name", "alg"),
    [
        ("p256", "ECDH-ES+A256KW"),
        ("p521", "ECDH-ES+A256KW"),
        ("rsa_keys", "RSA-OAEP-256"),
    ],
)
def test_jwcrypto_jwe_opens_with_custodes(
    keys_name: str, alg: str, spaces: bool, request: pytest.FixtureRequest
) -> None:
    keys: Keys = request.getfixturevalue(keys_name)
    token = _jwcrypto_encrypt(keys.jwcrypto(), {"alg": alg, "enc": "A256GCM"}, spaces=spaces)
    if spaces:
        assert b" " in b64url_decode(token["protected"])
    assert keys.pair().decrypt(token) == PLAINTEXT


def test_jwcrypto_ecdh_puts_epk_in_unprotected_header(p256: Keys) -> None:
    # jwcrypto's flattened ECDH output carries epk in the per-recipient "header" (RFC 7516
    # allows it); custodes merges it with the protected header.
    token = _jwcrypto_encrypt(p256.jwcrypto(), {"alg": "ECDH-ES+A256KW", "enc": "A256GCM"})
    assert "epk" in token["header"]
    assert jwe.decrypt(token, p256.private) == PLAINTEXT


def test_jwcrypto_jwe_with_aad_opens_and_aad_is_authenticated(rsa_keys: Keys) -> None:
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    token = _jwcrypto_encrypt(rsa_keys.jwcrypto(), header, aad=b"bound context")
    assert token["aad"] == b64url_encode(b"bound context")
    assert jwe.decrypt(token, rsa_keys.private) == PLAINTEXT
    with pytest.raises(JweError):
        jwe.decrypt(dict(token, aad=b64url_encode(b"other context")), rsa_keys.private)
    with pytest.raises(JweError):
        jwe.decrypt({k: v for k, v in token.items() if k != "aad"}, rsa_keys.private)


def test_jwcrypto_rsa1_5_refused_by_default(rsa_keys: Keys) -> None:
    token = _jwcrypto_encrypt(rsa_keys.jwcrypto(), {"alg": "RSA1_5", "enc": "A256GCM"})
    with pytest.raises(JweError):
        jwe.decrypt(token, rsa_keys.private)
    assert jwe.decrypt(token, rsa_keys.private, allow_rsa1_5=True) == PLAINTEXT


# --- RSA1_5 and algorithm pinning ----------------------------------------------------------


def test_rsa1_5_key_pair_refuses_by_default(rsa_keys: Keys) -> None:
    pair = rsa_keys.pair(TeeKeyAlgorithm.RSA1_5)
    token = jwe.encrypt(PLAINTEXT, pair.public)
    with pytest.raises(JweError):
        pair.decrypt(token)


def test_oaep_key_pair_never_opens_rsa1_5(rsa_keys: Keys) -> None:
    rsa1_5_token = jwe.encrypt(PLAINTEXT, rsa_keys.pair(TeeKeyAlgorithm.RSA1_5).public)
    with pytest.raises(JweError):
        rsa_keys.pair().decrypt(rsa1_5_token, allow_rsa1_5=True)


def test_expected_alg_pins_the_algorithm(rsa_keys: Keys) -> None:
    token = jwe.encrypt(PLAINTEXT, rsa_keys.pair().public)
    with pytest.raises(JweError):
        jwe.decrypt(token, rsa_keys.private, expected_alg=TeeKeyAlgorithm.RSA1_5)


def test_rsa1_5_padding_failure_looks_like_a_tag_failure(rsa_keys: Keys) -> None:
    pair = rsa_keys.pair(TeeKeyAlgorithm.RSA1_5)
    token = jwe.encrypt(PLAINTEXT, pair.public)
    with pytest.raises(JweError, match="authentication tag"):
        pair.decrypt(_flip(token, "encrypted_key", 5), allow_rsa1_5=True)


# --- refusals ------------------------------------------------------------------------------


@pytest.fixture()
def ec_token(p256: Keys) -> dict[str, Any]:
    return jwe.encrypt(PLAINTEXT, p256.pair().public)


@pytest.fixture()
def rsa_token(rsa_keys: Keys) -> dict[str, Any]:
    return jwe.encrypt(PLAINTEXT, rsa_keys.pair().public)


@pytest.mark.parametrize("obj", [None, [], "a.b.c.d.e", 1])
def test_not_an_object_refused(p256: Keys, obj: object) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(obj, p256.private)


@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag"])
def test_missing_member_refused(p256: Keys, ec_token: dict[str, Any], member: str) -> None:
    del ec_token[member]
    with pytest.raises(JweError):
        jwe.decrypt(ec_token, p256.private)


@pytest.mark.parametrize(
    ("member", "value"),
    [("recipients", []), ("unprotected", {}), ("payload", "x"), ("signature", "x")],
)
def test_unknown_member_refused(
    p256: Keys, ec_token: dict[str, Any], member: str, value: object
) -> None:
    ec_token[member] = value
    with pytest.raises(JweError):
        jwe.decrypt(ec_token, p256.private)


def test_empty_unprotected_header_allowed(p256: Keys, ec_token: dict[str, Any]) -> None:
    assert jwe.decrypt(dict(ec_token, header={}), p256.private) == PLAINTEXT


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ECDH-ES+A256KW"},
        {"enc": "A256GCM"},
        {"zip": "DEF"},
        {"crit": ["exp"]},
        {"epk": {"kty": "EC"}},  # also in the protected header
        [],
        "x",
    ],
)
def test_bad_unprotected_header_refused(p256: Keys, ec_token: dict[str, Any], header: Any) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(dict(ec_token, header=header), p256.private)


@pytest.mark.parametrize("member", ["protected", "encrypted_key", "iv", "ciphertext", "tag"])
@pytest.mark.parametrize(
    "spoil",
    [lambda s: s + "=", lambda s: s + "!", lambda s: s.replace("-", "+") + "+/", lambda s: 7],
    ids=["padded", "bad-char", "std-alphabet", "not-a-string"],
)
def test_bad_base64url_refused(
    p256: Keys, ec_token: dict[str, Any], member: str, spoil: Callable[[str], Any]
) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(dict(ec_token, **{member: spoil(ec_token[member])}), p256.private)


def test_bad_aad_member_refused(p256: Keys, ec_token: dict[str, Any]) -> None:
    for aad in ("a=", 5, "é"):
        with pytest.raises(JweError):
            jwe.decrypt(dict(ec_token, aad=aad), p256.private)


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'"alg"', b'{"alg":"RSA-OAEP-256","alg":"RSA-OAEP-256"}', b"\xff"],
)
def test_protected_header_not_a_json_object_refused(
    rsa_keys: Keys, rsa_token: dict[str, Any], raw: bytes
) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(dict(rsa_token, protected=b64url_encode(raw)), rsa_keys.private)


@pytest.mark.parametrize(
    "change",
    [
        {"enc": "A128GCM"},
        {"enc": "A256CBC-HS512"},
        {"enc": None},
        {"alg": "dir"},
        {"alg": "A256KW"},
        {"alg": "RSA-OAEP"},
        {"alg": "ECDH-ES"},
        {"alg": None},
        {"alg": ["RSA-OAEP-256"]},
        {"zip": "DEF"},
        {"crit": ["b64"]},
        {"apu": "QWxpY2U"},
        {"apv": "Qm9i"},
    ],
)
def test_bad_header_parameter_refused(
    rsa_keys: Keys, rsa_token: dict[str, Any], change: dict[str, Any]
) -> None:
    header = {**_header(rsa_token), **change}
    header = {k: v for k, v in header.items() if v is not None}
    with pytest.raises(JweError):
        jwe.decrypt(_with_header(rsa_token, header, separators=(",", ":")), rsa_keys.private)


def test_alg_must_fit_key_type(
    p256: Keys, rsa_keys: Keys, ec_token: dict[str, Any], rsa_token: dict[str, Any]
) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(ec_token, rsa_keys.private)
    with pytest.raises(JweError):
        jwe.decrypt(rsa_token, p256.private)


def test_epk_missing_refused(p256: Keys, ec_token: dict[str, Any]) -> None:
    header = _header(ec_token)
    del header["epk"]
    with pytest.raises(JweError):
        jwe.decrypt(_with_header(ec_token, header), p256.private)


def test_epk_on_other_curve_refused(p256: Keys, p521: Keys) -> None:
    token = jwe.encrypt(PLAINTEXT, p521.pair().public)
    with pytest.raises(JweError):
        jwe.decrypt(token, p256.private)
    # Same curve name claimed, P-521 coordinates: refused on length.
    header = _header(jwe.encrypt(PLAINTEXT, p256.pair().public))
    header["epk"] = dict(_header(token)["epk"], crv="P-256")
    with pytest.raises(JweError):
        jwe.decrypt(_with_header(token, header), p256.private)


@pytest.mark.parametrize(
    "epk_change",
    [
        {"y": b64url_encode((1).to_bytes(32, "big")), "x": b64url_encode((1).to_bytes(32, "big"))},
        {"x": b64url_encode(bytes(31))},
        {"kty": "OKP"},
        {"kty": None},
        {"d": "AAAA"},
        {"crv": "P-384"},
    ],
    ids=["off-curve", "short-x", "kty-OKP", "no-kty", "private-d", "P-384"],
)
def test_bad_epk_refused(p256: Keys, ec_token: dict[str, Any], epk_change: dict[str, Any]) -> None:
    header = _header(ec_token)
    epk = {**header["epk"], **epk_change}
    header["epk"] = {k: v for k, v in epk.items() if v is not None}
    with pytest.raises(JweError):
        jwe.decrypt(_with_header(ec_token, header), p256.private)


def test_epk_not_an_object_refused(p256: Keys, ec_token: dict[str, Any]) -> None:
    header = dict(_header(ec_token), epk="key")
    with pytest.raises(JweError):
        jwe.decrypt(_with_header(ec_token, header), p256.private)


@pytest.mark.parametrize(("member", "size"), [("iv", 11), ("iv", 16), ("tag", 15), ("tag", 12)])
def test_wrong_iv_or_tag_length_refused(
    p256: Keys, ec_token: dict[str, Any], member: str, size: int
) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(dict(ec_token, **{member: b64url_encode(bytes(size))}), p256.private)


def test_wrong_encrypted_key_length_refused(
    p256: Keys, rsa_keys: Keys, ec_token: dict[str, Any], rsa_token: dict[str, Any]
) -> None:
    ek = b64url_decode(ec_token["encrypted_key"])
    with pytest.raises(JweError):
        jwe.decrypt(dict(ec_token, encrypted_key=b64url_encode(ek[:-1])), p256.private)
    ek = b64url_decode(rsa_token["encrypted_key"])
    with pytest.raises(JweError):
        jwe.decrypt(dict(rsa_token, encrypted_key=b64url_encode(ek + b"\0")), rsa_keys.private)


@pytest.mark.parametrize("member", ["tag", "ciphertext", "iv", "encrypted_key"])
@pytest.mark.parametrize("token_name", ["ec_token", "rsa_token"])
def test_tampering_detected(
    p256: Keys, rsa_keys: Keys, member: str, token_name: str, request: pytest.FixtureRequest
) -> None:
    token: dict[str, Any] = request.getfixturevalue(token_name)
    private = p256.private if token_name == "ec_token" else rsa_keys.private
    assert jwe.decrypt(token, private) == PLAINTEXT
    with pytest.raises(JweError):
        jwe.decrypt(_flip(token, member), private)


def test_tampered_protected_header_detected(p256: Keys, ec_token: dict[str, Any]) -> None:
    # The same header re-spelled (spaces, other order) is other AAD: the tag must fail,
    # which also shows that the AAD is the received segment, not a re-serialisation.
    header = _header(ec_token)
    with pytest.raises(JweError, match="authentication tag"):
        jwe.decrypt(_with_header(ec_token, header), p256.private)
    reordered = {"enc": header["enc"], "alg": header["alg"], "epk": header["epk"]}
    with pytest.raises(JweError, match="authentication tag"):
        jwe.decrypt(_with_header(ec_token, reordered, separators=(",", ":")), p256.private)
    extra = dict(header, kid="x")
    with pytest.raises(JweError, match="authentication tag"):
        jwe.decrypt(_with_header(ec_token, extra, separators=(",", ":")), p256.private)


def test_wrong_key_refused(ec_token: dict[str, Any], rsa_token: dict[str, Any]) -> None:
    with pytest.raises(JweError):
        TeeKeyPair.generate("ec-p256").decrypt(ec_token)
    with pytest.raises(JweError):
        jwe.decrypt(rsa_token, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def test_private_key_on_unsupported_curve_refused(ec_token: dict[str, Any]) -> None:
    with pytest.raises(JweError):
        jwe.decrypt(ec_token, ec.generate_private_key(ec.SECP384R1()))


def test_input_not_mutated(p256: Keys, ec_token: dict[str, Any]) -> None:
    before = copy.deepcopy(ec_token)
    jwe.decrypt(ec_token, p256.private)
    assert ec_token == before
