"""TPMT_PUBLIC, the public area of a TPM object, and its Name (TPM 2.0 Part 1 §16).

Credential activation binds a credential to the Name of the AK, ``nameAlg || H(TPMT_PUBLIC)``,
so the broker must compute that Name from the public area itself and read the key from the same
bytes. This parser covers what an AK or EK can be, RSA and ECC keys (Part 2 §12.2.3-12.2.4),
consumes its input exactly and raises only :class:`~custodes.errors.MalformedEvidence`. Whether
the object is fit for a purpose (restricted, fixedTPM, an accepted curve) is decided by the
caller, as for :mod:`.structures`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntFlag
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custodes.attestation.verifiers.tpm.structures import TPM_ALG_NULL, TPM_ALG_SHA256, _Reader
from custodes.errors import MalformedEvidence

TPM_ALG_RSA: Final = 0x0001
TPM_ALG_ECC: Final = 0x0023
TPM_ALG_ECDAA: Final = 0x001A
TPM_ECC_NIST_P256: Final = 0x0003
DEFAULT_RSA_EXPONENT: Final = 65537  # what an exponent of 0 means (Part 2 §12.2.3.5)

_SHA256_NAME_PREFIX: Final = struct.pack(">H", TPM_ALG_SHA256)
_MAX_DIGEST: Final = 64
_MAX_RSA_KEY_BYTES: Final = 512
_MAX_ECC_KEY_BYTES: Final = 66
_P256_COORDINATE: Final = 32
_HEAD: Final = struct.Struct(">HHI")  # type, nameAlg, objectAttributes


class ObjectAttributes(IntFlag):
    """TPMA_OBJECT bits (Part 2 §8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18


@dataclass(frozen=True, slots=True)
class SymmetricDefinition:
    """TPMT_SYM_DEF_OBJECT when not TPM_ALG_NULL (the protection of a storage key's children)."""

    algorithm: int
    key_bits: int
    mode: int


@dataclass(frozen=True, slots=True)
class TpmtPublic:
    """A parsed public area; ``raw`` is the exact marshalled bytes the Name is computed over."""

    type: int
    name_alg: int
    attributes: ObjectAttributes
    auth_policy: bytes
    symmetric: SymmetricDefinition | None
    scheme: int
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    raw: bytes

    @property
    def name(self) -> bytes:
        """The object's Name: ``nameAlg || SHA-256(TPMT_PUBLIC)``; only SHA-256 is supported."""
        if self.name_alg != TPM_ALG_SHA256:
            raise MalformedEvidence(f"TPMT_PUBLIC: nameAlg {self.name_alg:#06x} is not SHA-256")
        return _SHA256_NAME_PREFIX + hashlib.sha256(self.raw).digest()

    def spki_der(self) -> bytes:
        """The key as a DER SubjectPublicKeyInfo (the form ``trusted_aks`` lists)."""
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TpmtPublic:
        reader = _Reader(data, "TPMT_PUBLIC")
        obj_type, name_alg, attributes = reader.unpack(_HEAD)
        auth_policy = reader.tpm2b(_MAX_DIGEST, "authPolicy")
        symmetric = _symmetric(reader)
        key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
        if obj_type == TPM_ALG_RSA:
            scheme = _scheme(reader)
            key_bits = reader.u16()
            exponent = reader.u32() or DEFAULT_RSA_EXPONENT
            modulus = reader.tpm2b(_MAX_RSA_KEY_BYTES, "unique.rsa")
            if len(modulus) * 8 != key_bits or not modulus or modulus[0] == 0:
                raise MalformedEvidence(
                    f"TPMT_PUBLIC: a {len(modulus)}-byte modulus for keyBits {key_bits}"
                )
            try:
                key = rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
            except ValueError as e:
                raise MalformedEvidence("TPMT_PUBLIC: not a valid RSA public key") from e
        elif obj_type == TPM_ALG_ECC:
            scheme = _scheme(reader)
            curve = reader.u16()
            if reader.u16() != TPM_ALG_NULL:  # kdf: a key-derivation scheme has a hash
                reader.u16()
            x = reader.tpm2b(_MAX_ECC_KEY_BYTES, "unique.ecc.x")
            y = reader.tpm2b(_MAX_ECC_KEY_BYTES, "unique.ecc.y")
            if curve != TPM_ECC_NIST_P256:
                raise MalformedEvidence(f"TPMT_PUBLIC: curve {curve:#06x} is not NIST P-256")
            if len(x) != _P256_COORDINATE or len(y) != _P256_COORDINATE:
                raise MalformedEvidence("TPMT_PUBLIC: a P-256 point needs 32-byte coordinates")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            )
            try:
                key = numbers.public_key()
            except ValueError as e:
                raise MalformedEvidence("TPMT_PUBLIC: the point is not on P-256") from e
        else:
            raise MalformedEvidence(f"TPMT_PUBLIC: type {obj_type:#06x} is neither RSA nor ECC")
        reader.finish()
        return cls(
            type=obj_type,
            name_alg=name_alg,
            attributes=ObjectAttributes(attributes),
            auth_policy=auth_policy,
            symmetric=symmetric,
            scheme=scheme,
            key=key,
            raw=bytes(data),
        )


def _symmetric(reader: _Reader) -> SymmetricDefinition | None:
    algorithm = reader.u16()
    if algorithm == TPM_ALG_NULL:
        return None
    return SymmetricDefinition(algorithm, reader.u16(), reader.u16())


def _scheme(reader: _Reader) -> int:
    """TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: the scheme, whose details (a hash, and a count for
    ECDAA) are read and not needed here."""
    scheme = reader.u16()
    if scheme != TPM_ALG_NULL:
        reader.u16()
        if scheme == TPM_ALG_ECDAA:
            reader.u16()
    return scheme
