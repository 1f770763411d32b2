"""The ``tee-pubkey`` JWK on the wire: the TEE's public key, validated exactly.

The broker wraps every released resource to this key, and the evidence binds it (see
:mod:`custodes.protocol.binding`), so a JWK that is accepted here must be a real, strong
public key: exact coordinate lengths, on-curve points, no private members, and only the key
algorithms upstream's guest decrypts. ``RSA1_5`` (PKCS #1 v1.5, padding-oracle prone) is
refused unless a caller opts in explicitly.

The ground floor of the key handling: :mod:`.jwe` encrypts to and decrypts with these keys,
and :mod:`.tee_key` (the guest's key pair) builds on both.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NoReturn

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import InvalidTeeKey
from custodes.types.json import JsonObject


class TeeKeyAlgorithm(StrEnum):
    """JWE key-management algorithms a TEE key may name in its ``alg`` member."""

    ECDH_ES_A256KW = "ECDH-ES+A256KW"
    RSA_OAEP_256 = "RSA-OAEP-256"
    RSA1_5 = "RSA1_5"


@dataclass(frozen=True, slots=True)
class _Curve:
    name: str
    curve: type[ec.EllipticCurve]
    size: int  # bytes of one coordinate
    prime: int  # the field prime; coordinates must be below it


_P256: Final = _Curve("P-256", ec.SECP256R1, 32, 2**256 - 2**224 + 2**192 + 2**96 - 1)
_P521: Final = _Curve("P-521", ec.SECP521R1, 66, 2**521 - 1)
_CURVES: Final = {c.name: c for c in (_P256, _P521)}
_CURVE_BY_OPENSSL_NAME: Final = {"secp256r1": _P256, "secp521r1": _P521}

# Private JWK members (RFC 7518 §6.2.2, §6.3.2, §6.4): a public key must never carry them.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

MIN_RSA_BITS: Final = 2048
# Upper bounds keep public-key operations cheap for a key chosen by the peer; 64 bits is
# OpenSSL's own limit on the public exponent for large moduli.
MAX_RSA_BITS: Final = 16384
MAX_RSA_EXPONENT_BITS: Final = 64


def _fail(msg: str) -> NoReturn:
    raise InvalidTeeKey(msg)


def _b64_value(value: object, name: str) -> bytes:
    if not isinstance(value, str):
        _fail(f"JWK member {name!r} missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError as e:
        raise InvalidTeeKey(f"JWK member {name!r} is not unpadded base64url") from e


def parse_ec_point(crv: object, x: object, y: object) -> ec.EllipticCurvePublicKey:
    """A P-256/P-521 public key from JWK ``crv``/``x``/``y``, or ``InvalidTeeKey``.

    Shared with :mod:`custodes.protocol.jwe` for the ephemeral ``epk`` of a response.
    """
    if not isinstance(crv, str) or crv not in _CURVES:
        _fail(f"unsupported curve {crv!r}")
    curve = _CURVES[crv]
    coords = _b64_value(x, "x"), _b64_value(y, "y")
    for name, raw in zip(("x", "y"), coords, strict=True):
        if len(raw) != curve.size:
            _fail(f"{crv} coordinate {name} is {len(raw)} bytes, expected {curve.size}")
    xi, yi = (int.from_bytes(raw, "big") for raw in coords)
    if xi >= curve.prime or yi >= curve.prime:
        _fail("coordinate out of the field range")
    try:
        # cryptography checks that the point is on the curve (invalid-curve attacks).
        return ec.EllipticCurvePublicNumbers(xi, yi, curve.curve()).public_key()
    except ValueError as e:
        raise InvalidTeeKey("point is not on the curve") from e


def _minimal_uint(obj: JsonObject, name: str) -> int:
    raw = _b64_value(obj.get(name), name)
    # RFC 7518 §6.3.1: the minimum number of octets; a leading zero is a second spelling.
    if not raw or raw[0] == 0:
        _fail(f"RSA member {name!r} is empty or has leading zero octets")
    return int.from_bytes(raw, "big")


def _parse_rsa(obj: JsonObject) -> rsa.RSAPublicKey:
    n = _minimal_uint(obj, "n")
    e = _minimal_uint(obj, "e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        _fail(f"RSA modulus of {n.bit_length()} bits is outside [{MIN_RSA_BITS}, {MAX_RSA_BITS}]")
    if n % 2 == 0:
        _fail("RSA modulus is even")
    if e < 3 or e % 2 == 0 or e.bit_length() > MAX_RSA_EXPONENT_BITS or e >= n:
        _fail("RSA public exponent is invalid")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as e_:
        raise InvalidTeeKey("RSA public key rejected") from e_


@dataclass(frozen=True, slots=True)
class TeePublicKey:
    """A validated ``tee-pubkey``.

    ``jwk`` holds the members exactly as received, because the binding digest is computed
    over what the guest sent, not over a re-encoding.
    """

    alg: TeeKeyAlgorithm
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    jwk: JsonObject

    @classmethod
    def from_jwk(cls, obj: object, *, allow_rsa1_5: bool = False) -> TeePublicKey:
        """Validate a JWK; every refusal raises ``InvalidTeeKey``."""
        if not isinstance(obj, dict):
            _fail("tee-pubkey is not a JSON object")
        private = _PRIVATE_MEMBERS.intersection(obj)
        if private:
            _fail(f"tee-pubkey carries private members {sorted(private)}")
        kty = obj.get("kty")
        alg = obj.get("alg")
        key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
        if kty == "EC":
            if alg != TeeKeyAlgorithm.ECDH_ES_A256KW:
                _fail(f"EC key algorithm {alg!r} is not ECDH-ES+A256KW")
            key = parse_ec_point(obj.get("crv"), obj.get("x"), obj.get("y"))
            tee_alg = TeeKeyAlgorithm.ECDH_ES_A256KW
        elif kty == "RSA":
            if alg == TeeKeyAlgorithm.RSA_OAEP_256:
                tee_alg = TeeKeyAlgorithm.RSA_OAEP_256
            elif alg == TeeKeyAlgorithm.RSA1_5 and allow_rsa1_5:
                tee_alg = TeeKeyAlgorithm.RSA1_5
            else:
                _fail(f"RSA key algorithm {alg!r} is not accepted")
            key = _parse_rsa(obj)
        else:
            _fail(f"unsupported key type {kty!r}")
        return cls(alg=tee_alg, key=key, jwk=copy.deepcopy(obj))


def jwk_curve_name(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """The JWK ``crv`` of a P-256/P-521 key, or ``InvalidTeeKey`` for any other curve."""
    curve = _CURVE_BY_OPENSSL_NAME.get(key.curve.name)
    if curve is None:
        _fail(f"unsupported curve {key.curve.name}")
    return curve.name


def ec_point_members(key: ec.EllipticCurvePublicKey) -> JsonObject:
    """``{"crv", "kty", "x", "y"}`` (an ``epk``, in upstream's order), fixed-length coordinates."""
    curve = _CURVES[jwk_curve_name(key)]
    nums = key.public_numbers()
    return {
        "crv": curve.name,
        "kty": "EC",
        "x": b64url_encode(nums.x.to_bytes(curve.size, "big")),
        "y": b64url_encode(nums.y.to_bytes(curve.size, "big")),
    }


def tee_key_from_jwk(obj: object, *, allow_rsa1_5: bool = False) -> TeePublicKey:
    """:meth:`TeePublicKey.from_jwk`, remembered for the last keys seen: the broker meets each
    TEE key twice per handshake (``/attest``, then the token of each resource request), and
    validating a point on its curve is the costly part. The result is shared: its ``jwk`` must
    not be changed. A refusal is not remembered (it is raised again each time)."""
    if not isinstance(obj, dict):
        return TeePublicKey.from_jwk(obj, allow_rsa1_5=allow_rsa1_5)
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return TeePublicKey.from_jwk(obj, allow_rsa1_5=allow_rsa1_5)
    return _tee_key_of(text, allow_rsa1_5)


@functools.lru_cache(maxsize=4096)
def _tee_key_of(text: str, allow_rsa1_5: bool) -> TeePublicKey:
    return TeePublicKey.from_jwk(json.loads(text), allow_rsa1_5=allow_rsa1_5)
