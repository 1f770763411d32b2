"""TPM2_MakeCredential in software (TPM 2.0 Part 1 §24 "Credential Protection", Part 3 §12.6).

The broker encrypts a random secret so that only a TPM that holds the EK's private key *and*
has the object of a given Name loaded can recover it (TPM2_ActivateCredential). Everything here
is ``cryptography``; the broker does not need the TPM software stack. (tpm2-pytss has a
``make_credential`` too, but importing it needs the C TSS libraries; the tests cross-check this
module against it and against a real TPM.)

For an EK with nameAlg SHA-256 and AES-128-CFB protection, i.e. the TCG EK Credential Profile's
default templates L-1 (RSA 2048) and L-2 (ECC NIST P-256):

1. ``seed``: RSA EK: 32 random bytes, RSA-OAEP(SHA-256, label ``"IDENTITY\\0"``) encrypted
   to the EK. ECC EK: one-pass ECDH with an ephemeral P-256 key, ``seed = KDFe(SHA-256, Z,
   "IDENTITY", ephemeral.x, EK.x, 256)``; the "encrypted seed" is the ephemeral point.
2. ``symKey = KDFa(SHA-256, seed, "STORAGE", Name, "", 128)``;
   ``encIdentity = AES-128-CFB(symKey, IV = 0)(TPM2B_DIGEST(credential))``.
3. ``HMACkey = KDFa(SHA-256, seed, "INTEGRITY", "", "", 256)``;
   ``outerHMAC = HMAC-SHA-256(HMACkey, encIdentity || Name)``.
4. ``credentialBlob = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity)``,
   ``secret = TPM2B_ENCRYPTED_SECRET(encrypted seed)``.

KDFa is NIST SP 800-108 counter-mode HMAC (32-bit counter before ``label || 0x00 || context``,
32-bit length after), which is ``cryptography``'s KBKDFHMAC; KDFe is SP 800-56A's
concatenation KDF (``ConcatKDFHash``) with the label's terminating zero in ``OtherInfo``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

IDENTITY_LABEL: Final = b"IDENTITY\x00"
NAME_SIZE: Final = 34  # TPM_ALG_SHA256 (2 bytes) || SHA-256 digest
SEED_SIZE: Final = 32  # the digest size of the EK's nameAlg
MAX_CREDENTIAL_SIZE: Final = 32  # a credential is at most a nameAlg digest
_SYM_KEY_BITS: Final = 128
_HMAC_KEY_BITS: Final = 256
_AES_BLOCK: Final = 16
_P256_COORDINATE: Final = 32
_SHA256_NAME_PREFIX: Final = b"\x00\x0b"
_U16: Final = struct.Struct(">H")

EkPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class MadeCredential:
    """What TPM2_ActivateCredential takes: both marshalled with their ``u16`` size."""

    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET


def tpm2b(data: bytes) -> bytes:
    """A TPM2B: ``u16`` size, then the bytes."""
    return _U16.pack(len(data)) + data


def kdfa(key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int) -> bytes:
    """KDFa with SHA-256 (Part 1 §11.4.10.2); ``label`` without its terminating zero."""
    return KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context_u + context_v,
        fixed=None,
    ).derive(key)


def kdfe(z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe with SHA-256 (Part 1 §11.4.10.3); ``label`` with its terminating zero."""
    return ConcatKDFHash(
        algorithm=hashes.SHA256(), length=bits // 8, otherinfo=label + party_u + party_v
    ).derive(z)


def _check_name(name: bytes) -> None:
    if len(name) != NAME_SIZE or name[:2] != _SHA256_NAME_PREFIX:
        raise ValueError("the Name must be a 34-byte SHA-256 Name")


def credential_blob(seed: bytes, name: bytes, credential: bytes) -> bytes:
    """Steps 2-4 for a given seed: the TPM2B_ID_OBJECT protecting ``credential`` for ``name``."""
    _check_name(name)
    if len(seed) != SEED_SIZE:
        raise ValueError(f"the seed must be {SEED_SIZE} bytes")
    if not 0 < len(credential) <= MAX_CREDENTIAL_SIZE:
        raise ValueError(f"a credential is 1 to {MAX_CREDENTIAL_SIZE} bytes")
    sym_key = kdfa(seed, b"STORAGE", name, b"", _SYM_KEY_BITS)
    # CFB is "decrepit" to cryptography, and it is what TPM 2.0 credential protection uses.
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(_AES_BLOCK))).encryptor()
    enc_identity = encryptor.update(tpm2b(credential)) + encryptor.finalize()
    hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", _HMAC_KEY_BITS)
    outer_hmac = hmac.new(hmac_key, enc_identity + name, hashlib.sha256).digest()
    return tpm2b(tpm2b(outer_hmac) + enc_identity)


def _coordinate(value: int) -> bytes:
    return value.to_bytes(_P256_COORDINATE, "big")


def encrypt_seed(ek: EkPublicKey) -> tuple[bytes, bytes]:
    """Step 1: a fresh seed and its encryption to ``ek`` (the TPM2B_ENCRYPTED_SECRET body)."""
    if isinstance(ek, rsa.RSAPublicKey):
        seed = os.urandom(SEED_SIZE)
        oaep = padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=IDENTITY_LABEL
        )
        return seed, ek.encrypt(seed, oaep)
    if not isinstance(ek.curve, ec.SECP256R1):
        raise ValueError(f"an ECC EK on {ek.curve.name} is not supported (P-256 only)")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    z = ephemeral.exchange(ec.ECDH(), ek)  # the x coordinate of the shared point
    point = ephemeral.public_key().public_numbers()
    ephemeral_x = _coordinate(point.x)
    seed = kdfe(z, IDENTITY_LABEL, ephemeral_x, _coordinate(ek.public_numbers().x), 8 * SEED_SIZE)
    return seed, tpm2b(ephemeral_x) + tpm2b(_coordinate(point.y))  # TPMS_ECC_POINT


def make_credential(ek: EkPublicKey, name: bytes, credential: bytes) -> MadeCredential:
    """TPM2_MakeCredential: ``credential`` for the object named ``name`` in the TPM of ``ek``."""
    _check_name(name)
    seed, encrypted = encrypt_seed(ek)
    return MadeCredential(credential_blob(seed, name, credential), tpm2b(encrypted))
