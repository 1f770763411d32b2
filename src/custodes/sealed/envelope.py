"""Envelope secrets with the broker as key holder (provider ``kbs``): custodes-specific.

Upstream's envelope secrets wrap the data key with a cloud KMS (aliyun, aws, ehsm) and its
``kbs`` provider serves vault secrets only. custodes adds a ``kbs`` provider for envelopes,
keeping upstream's field names and data encryption, so the secret travels inside the sealed
string and the broker only holds a 32-byte key-encryption key (KEK) as a resource:

* ``key_id``: the KEK's resource URI, ``kbs:///repo/type/tag``.
* ``encrypted_key``: standard base64 of the 32-byte data key (DEK) wrapped with AES-256 Key
  Wrap (RFC 3394, JOSE ``A256KW``) under the KEK: 40 bytes.
* ``encrypted_data``: standard base64 of AES-256-GCM(DEK, iv, plaintext), ciphertext then
  the 16-byte tag, no associated data (as upstream).
* ``iv``: standard base64 of a random 12-byte nonce; ``wrap_type``: ``A256GCM``.
* ``provider_settings`` and ``annotations``: ``{}`` (written, ignored when opening).

A fresh DEK per secret means the nonce never repeats under a key. ``A256CTR`` (which
upstream can read) is refused: it has no integrity of its own.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import InvalidResourcePath
from custodes.protocol.resource import ResourceUri
from custodes.sealed.errors import (
    EnvelopeDecryptFailed,
    EnvelopeError,
    EnvelopeKekInvalid,
    EnvelopeUnwrapFailed,
    SealedPayloadError,
    UnsupportedProvider,
)
from custodes.sealed.payload import WRAP_A256GCM, EnvelopePayload

PROVIDER_KBS: Final = "kbs"
KEK_BYTES: Final = 32
DEK_BYTES: Final = 32
WRAPPED_DEK_BYTES: Final = DEK_BYTES + 8  # RFC 3394 adds one 64-bit block
IV_BYTES: Final = 12
TAG_BYTES: Final = 16


def broker_resource(provider: str, uri: str, *, kind: str, member: str, opens: str) -> ResourceUri:
    """The resource ``uri`` names, after checking that the broker holds it: custodes opens only
    ``kbs`` payloads (provider looked up ASCII case-insensitively, as upstream does). Errors
    name the payload ``kind`` and its ``member`` that holds ``uri``; ``opens`` says what
    custodes opens instead."""
    if not (provider.isascii() and provider.lower() == PROVIDER_KBS):
        raise UnsupportedProvider(
            f"{kind} provider {provider!r} is not supported; custodes {opens} (provider 'kbs')"
        )
    try:
        return ResourceUri.parse(uri)
    except InvalidResourcePath as e:
        raise SealedPayloadError(f"{kind} {member} is not a kbs:// resource URI: {e}") from e


def _check_kek(kek: bytes) -> None:
    if len(kek) != KEK_BYTES:
        raise EnvelopeKekInvalid(f"the key-encryption key is {len(kek)} bytes, expected 32")


def seal_envelope(plaintext: bytes, *, kek: bytes, kek_uri: ResourceUri) -> EnvelopePayload:
    """Encrypt ``plaintext`` under a fresh data key wrapped by ``kek`` (held at ``kek_uri``)."""
    _check_kek(kek)
    dek = AESGCM.generate_key(bit_length=8 * DEK_BYTES)
    iv = os.urandom(IV_BYTES)
    return EnvelopePayload(
        key_id=str(kek_uri),
        encrypted_key=b64std_encode(aes_key_wrap(kek, dek)),
        encrypted_data=b64std_encode(AESGCM(dek).encrypt(iv, plaintext, None)),
        wrap_type=WRAP_A256GCM,
        iv=b64std_encode(iv),
        provider=PROVIDER_KBS,
    )


def kek_uri(payload: EnvelopePayload) -> ResourceUri:
    """The KEK's resource URI, after checking that custodes can open this envelope at all."""
    return broker_resource(
        payload.provider,
        payload.key_id,
        kind="envelope",
        member="key_id",
        opens="opens envelopes whose key-encryption key is a broker resource",
    )


def _field(payload: EnvelopePayload, name: str) -> bytes:
    try:
        value: bytes = b64std_decode(getattr(payload, name))
    except ValueError as e:
        raise SealedPayloadError(f"envelope {name} is not padded standard base64") from e
    return value


def open_envelope(payload: EnvelopePayload, kek: bytes) -> bytes:
    """Decrypt a ``kbs`` envelope with its key-encryption key; each failure its own class."""
    # 1. Provider and algorithm custodes implements.
    kek_uri(payload)
    if payload.wrap_type != WRAP_A256GCM:
        raise EnvelopeError(f"envelope wrap_type {payload.wrap_type!r} is refused; use A256GCM")
    # 2. Field encodings and exact lengths.
    wrapped = _field(payload, "encrypted_key")
    data = _field(payload, "encrypted_data")
    iv = _field(payload, "iv")
    if len(wrapped) != WRAPPED_DEK_BYTES:
        raise SealedPayloadError(
            f"envelope encrypted_key is {len(wrapped)} bytes, expected {WRAPPED_DEK_BYTES}"
        )
    if len(iv) != IV_BYTES:
        raise SealedPayloadError(f"envelope iv is {len(iv)} bytes, expected {IV_BYTES}")
    if len(data) < TAG_BYTES:
        raise SealedPayloadError("envelope encrypted_data is shorter than the GCM tag")
    # 3. The KEK, then the data key it wraps.
    _check_kek(kek)
    try:
        dek = aes_key_unwrap(kek, wrapped)
    except InvalidUnwrap as e:
        raise EnvelopeUnwrapFailed("the data key does not unwrap with this KEK") from e
    # 4. The data, authenticated by GCM.
    try:
        return AESGCM(dek).decrypt(iv, data, None)
    except InvalidTag as e:
        raise EnvelopeDecryptFailed("envelope data does not decrypt (tampered or wrong key)") from e
