"""The guest's ephemeral TEE key pair: it sends the public half as ``tee-pubkey`` and opens
the JWE the broker wraps each resource in.

The public half and its validation are :mod:`custodes.protocol.jwk` (re-exported here, where
callers have always found them); the JWE is :mod:`custodes.protocol.jwe`. This module sits
above both, so that none of the three imports another in a circle.
"""

from __future__ import annotations

import copy
from typing import Literal, NoReturn

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from custodes._internal.b64 import b64url_encode
from custodes.errors import InvalidTeeKey
from custodes.protocol import jwe
from custodes.protocol.jwk import TeeKeyAlgorithm as TeeKeyAlgorithm
from custodes.protocol.jwk import TeePublicKey as TeePublicKey
from custodes.protocol.jwk import ec_point_members as ec_point_members
from custodes.protocol.jwk import parse_ec_point as parse_ec_point
from custodes.types.json import JsonObject
from custodes.types.secret import Secret


def _fail(msg: str) -> NoReturn:
    raise InvalidTeeKey(msg)


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

    def decrypt(self, token: object, *, allow_rsa1_5: bool = False) -> bytes:
        """Open a flattened JSON JWE addressed to this key; ``JweError`` on any failure.

        The JWE's ``alg`` must be this key's algorithm, so that an RSA-OAEP-256 key is
        never used to open an RSA1_5 (padding-oracle) JWE.
        """
        return jwe.decrypt(
            token, self._private, allow_rsa1_5=allow_rsa1_5, expected_alg=self._public.alg
        )

    def __repr__(self) -> str:
        return f"TeeKeyPair(alg={self._public.alg.value}, private=**redacted**)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("TeeKeyPair cannot be pickled")
