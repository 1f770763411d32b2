"""The TEE's ephemeral key: the ``tee-pubkey`` JWK on the wire and the guest's key pair.

The broker wraps every released resource to this key, and the evidence binds it (see
:mod:`custodes.protocol.binding`), so a JWK that is accepted here must be a real, strong
public key: exact coordinate lengths, on-curve points, no private members, and only the key
algorithms upstream's guest decrypts. ``RSA1_5`` (PKCS #1 v1.5, padding-oracle prone) is
refused unless a caller opts in explicitly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import InvalidTeeKey
from custodes.types.json import JsonObject
from custodes.types.secret import Secret


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


def _jwk_of(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, alg: TeeKeyAlgorithm) -> JsonObject:
    """The public JWK a guest sends, in upstream's member order."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = ec_point_members(key)
        return {
            "kty": "EC",
            "crv": point["crv"],
            "alg": alg.value,
            "x": point["x"],
            "y": point["y"],
        }
    nums_rsa = key.public_numbers()
    return {
        "kty": "RSA",
        "alg": alg.value,
        "n": b64url_encode(nums_rsa.n.to_bytes((nums_rsa.n.bit_length() + 7) // 8, "big")),
        "e": b64url_encode(nums_rsa.e.to_bytes((nums_rsa.e.bit_length() + 7) // 8, "big")),
    }


class TeeKeyPair:
    """The guest's ephemeral key pair. The private key never prints and never pickles."""

    __slots__ = ("_private", "_public")

    def __init__(
        self, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, alg: TeeKeyAlgorithm
    ) -> None:
        if (alg is TeeKeyAlgorithm.ECDH_ES_A256KW) != isinstance(
            private_key, ec.EllipticCurvePrivateKey
        ):
            _fail(f"algorithm {alg} does not fit the key type")
        self._private = private_key
        # Validate our own public half exactly as a broker would.
        self._public = TeePublicKey.from_jwk(
            _jwk_of(private_key.public_key(), alg),
            allow_rsa1_5=alg is TeeKeyAlgorithm.RSA1_5,
        )

    @classmethod
    def generate(cls, kind: Literal["ec-p256", "ec-p521", "rsa"] = "ec-p256") -> TeeKeyPair:
        """A fresh key: EC keys use ECDH-ES+A256KW, ``rsa`` is 2048-bit RSA-OAEP-256."""
        if kind == "ec-p256":
            return cls(ec.generate_private_key(ec.SECP256R1()), TeeKeyAlgorithm.ECDH_ES_A256KW)
        if kind == "ec-p521":
            return cls(ec.generate_private_key(ec.SECP521R1()), TeeKeyAlgorithm.ECDH_ES_A256KW)
        if kind == "rsa":
            return cls(
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                TeeKeyAlgorithm.RSA_OAEP_256,
            )
        raise ValueError(f"unknown key kind {kind!r}")

    @classmethod
    def from_private_pem(cls, pem: bytes, alg: TeeKeyAlgorithm | None = None) -> TeeKeyPair:
        """Load an unencrypted PKCS #8 / SEC1 / PKCS #1 PEM key, or ``InvalidTeeKey``.

        ``alg`` defaults to ECDH-ES+A256KW for EC keys and RSA-OAEP-256 for RSA keys.
        """
        try:
            private = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InvalidTeeKey("not an unencrypted PEM private key") from e
        if isinstance(private, ec.EllipticCurvePrivateKey):
            return cls(private, alg or TeeKeyAlgorithm.ECDH_ES_A256KW)
        if isinstance(private, rsa.RSAPrivateKey):
            return cls(private, alg or TeeKeyAlgorithm.RSA_OAEP_256)
        _fail("TEE keys are EC or RSA")

    @property
    def public(self) -> TeePublicKey:
        return self._public

    def public_jwk(self) -> JsonObject:
        """The ``tee-pubkey`` to send (a fresh copy)."""
        return copy.deepcopy(self._public.jwk)

    def private_pem(self) -> Secret[bytes]:
        """The private key as PKCS #8 PEM, for upstream's ``GetToken`` (REST ``/aa/token``)."""
        return Secret(
            self._private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def decrypt(self, jwe: object, *, allow_rsa1_5: bool = False) -> bytes:
        """Open a flattened JSON JWE addressed to this key; ``JweError`` on any failure.

        The JWE's ``alg`` must be this key's algorithm, so that an RSA-OAEP-256 key is
        never used to open an RSA1_5 (padding-oracle) JWE.
        """
        # jwe builds on this module; imported here to keep the import graph acyclic.
        from custodes.protocol.jwe import decrypt

        return decrypt(jwe, self._private, allow_rsa1_5=allow_rsa1_5, expected_alg=self._public.alg)

    def __repr__(self) -> str:
        return f"TeeKeyPair(alg={self._public.alg.value}, private=**redacted**)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("TeeKeyPair cannot be pickled")
