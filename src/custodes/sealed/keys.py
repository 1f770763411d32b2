"""Signing keys of sealed secrets: EC P-256 only, as JWK (upstream's format) or PEM.

The workload admin generates a key pair, keeps the private JWK, and publishes the public JWK
where the guest can find it by ``kid`` (a broker resource, or a file in the guest's key
directory). Both JWKs carry ``alg: ES256``, ``use: sig`` and the ``kid``, as upstream's
``secret keygen`` writes them. What identifies the key at unseal time is the ``kid`` in the
sealed secret's header, not the one inside the JWK (upstream ignores the latter too).

Every malformed key raises :class:`~custodes.sealed.errors.InvalidSigningKey`; a file that
cannot be read or written raises :class:`~custodes.errors.ConfigError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final, NoReturn

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal import strictjson
from custodes._internal.atomic import write_atomic
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import ConfigError, InvalidTeeKey
from custodes.protocol.tee_key import ec_point_members, parse_ec_point
from custodes.sealed.errors import InvalidSigningKey
from custodes.types.json import JsonObject

DEFAULT_KID: Final = "sealed-signing"
JWK_ALG: Final = "ES256"
JWK_USE: Final = "sig"
CURVE: Final = "P-256"
_COORD_BYTES: Final = 32
# A JWK is a few hundred bytes; anything much larger is not one.
MAX_KEY_FILE_BYTES: Final = 64 * 1024
# Private JWK members (RFC 7518 §6.2.2, §6.3.2, §6.4): a verification key must carry none.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_P256_ORDER: Final = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)


def _fail(msg: str) -> NoReturn:
    raise InvalidSigningKey(msg)


def is_p256(key: object) -> bool:
    """Whether ``key`` is an EC P-256 key (private or public); any object may be asked."""
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _require_p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        _fail(f"sealed secrets are signed with EC P-256 (ES256), not {key.curve.name}")


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- JWK ---------------------------------------------------------------------------------


def _check_jwk_common(obj: object) -> JsonObject:
    if not isinstance(obj, dict):
        _fail("JWK is not a JSON object")
    if obj.get("kty") != "EC":
        _fail(f"JWK kty is {obj.get('kty')!r}, expected 'EC'")
    if obj.get("crv") != CURVE:
        _fail(f"JWK crv is {obj.get('crv')!r}, expected 'P-256'")
    # Optional members, but when present they must fit a sealed-secret signing key.
    if "alg" in obj and obj["alg"] != JWK_ALG:
        _fail(f"JWK alg is {obj['alg']!r}, expected 'ES256'")
    if "use" in obj and obj["use"] != JWK_USE:
        _fail(f"JWK use is {obj['use']!r}, expected 'sig'")
    return obj


def _point(obj: JsonObject) -> ec.EllipticCurvePublicKey:
    try:
        return parse_ec_point(obj.get("crv"), obj.get("x"), obj.get("y"))
    except InvalidTeeKey as e:
        raise InvalidSigningKey(f"JWK public point: {e}") from e


def public_key_from_jwk(obj: object) -> ec.EllipticCurvePublicKey:
    """The verification key of a public P-256 JWK (private members are refused)."""
    jwk = _check_jwk_common(obj)
    private = _PRIVATE_MEMBERS.intersection(jwk)
    if private:
        # A verification key store holding a private key means the signing key leaked.
        _fail(f"verification JWK carries private members {sorted(private)}")
    return _point(jwk)


def private_key_from_jwk(obj: object) -> ec.EllipticCurvePrivateKey:
    """The signing key of a private P-256 JWK; ``x``/``y`` must match ``d``."""
    jwk = _check_jwk_common(obj)
    d_text = jwk.get("d")
    if not isinstance(d_text, str):
        _fail("private JWK has no 'd'")
    try:
        d_raw = b64url_decode(d_text)
    except ValueError as e:
        raise InvalidSigningKey("JWK member 'd' is not unpadded base64url") from e
    if len(d_raw) != _COORD_BYTES:
        _fail(f"JWK member 'd' is {len(d_raw)} bytes, expected {_COORD_BYTES}")
    d = int.from_bytes(d_raw, "big")
    if not 1 <= d < _P256_ORDER:
        _fail("JWK member 'd' is out of range")
    key = ec.derive_private_key(d, ec.SECP256R1())
    if key.public_key().public_numbers() != _point(jwk).public_numbers():
        _fail("private JWK 'x'/'y' do not belong to its 'd'")
    return key


def public_jwk(key: ec.EllipticCurvePublicKey, kid: str) -> JsonObject:
    _require_p256(key)
    point = ec_point_members(key)
    return {
        "kty": "EC",
        "crv": CURVE,
        "x": point["x"],
        "y": point["y"],
        "use": JWK_USE,
        "alg": JWK_ALG,
        "kid": kid,
    }


def private_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> JsonObject:
    _require_p256(key)
    jwk = public_jwk(key.public_key(), kid)
    d = key.private_numbers().private_value.to_bytes(_COORD_BYTES, "big")
    # "d" after the public members: the public JWK is a prefix of the private one.
    return {**jwk, "d": b64url_encode(d)}


def parse_jwk_bytes(raw: bytes) -> JsonObject:
    """A JWK document: a strict JSON object (:mod:`custodes._internal.strictjson`)."""
    if len(raw) > MAX_KEY_FILE_BYTES:
        _fail(f"JWK is larger than {MAX_KEY_FILE_BYTES} bytes")
    obj = strictjson.loads(
        raw, error=lambda why: InvalidSigningKey(f"JWK is not valid JSON: {why}")
    )
    if not isinstance(obj, dict):
        _fail("JWK is not a JSON object")
    return obj


# --- files -------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read key {path}: {e.strerror}") from e
    if len(data) > MAX_KEY_FILE_BYTES:
        raise InvalidSigningKey(f"{path}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key")
    return data


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN ")


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A private P-256 key from a JWK file (upstream's format) or an unencrypted PEM."""
    data = _read(path)
    if not _is_pem(data):
        return private_key_from_jwk(parse_jwk_bytes(data))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise InvalidSigningKey(f"{path}: not an unencrypted PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        _fail(f"{path}: not an EC private key")
    _require_p256(key)
    return key


def load_verification_key(path: Path) -> ec.EllipticCurvePublicKey:
    """A public P-256 key from a JWK file or a PEM ``PUBLIC KEY``."""
    data = _read(path)
    if not _is_pem(data):
        return public_key_from_jwk(parse_jwk_bytes(data))
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise InvalidSigningKey(f"{path}: not a PEM public key") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        _fail(f"{path}: not an EC public key")
    _require_p256(key)
    return key


def write_jwk(path: Path, jwk: JsonObject, *, private: bool) -> None:
    """Write a JWK file, never overwriting, complete or not at all; a private one is mode
    0600 from its first byte."""
    data = (json.dumps(jwk, indent=2) + "\n").encode()
    write_atomic(path, data, private=private, overwrite=False)
