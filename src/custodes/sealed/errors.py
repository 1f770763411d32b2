"""Errors of sealed secrets: one class per way a sealed secret can be refused.

Everything here is a :class:`SealedSecretError`, so the data hub can map the whole family to
one RPC failure while tests (and logs) still see exactly which step refused.
"""

from __future__ import annotations

from custodes.errors import CustodesError


class SealedSecretError(CustodesError):
    """A sealed secret could not be parsed, verified or unsealed."""

    code = "sealed-secret"


# --- string form (format.py) -------------------------------------------------------------


class SealedFormatError(SealedSecretError):
    """The string is not a well-formed sealed secret."""

    code = "sealed-format"


class MissingSealedPrefix(SealedFormatError):
    """The string does not start with ``sealed.``."""

    code = "sealed-missing-prefix"


class SealedSegmentCount(SealedFormatError):
    """After the prefix there are not exactly three dot-separated parts (e.g. truncated)."""

    code = "sealed-segment-count"


class SealedBase64Error(SealedFormatError):
    """A part is not strict unpadded base64url."""

    code = "sealed-base64"


class SealedHeaderError(SealedFormatError):
    """The protected header is not a JSON object with the members a sealed secret needs."""

    code = "sealed-header"


class SealedAlgorithmError(SealedHeaderError):
    """The header names an algorithm other than ES256."""

    code = "sealed-algorithm"


class SealedUnencodedPayload(SealedHeaderError):
    """The header has ``b64`` other than ``true`` (RFC 7797 unencoded payloads are refused)."""

    code = "sealed-b64"


class SealedPayloadError(SealedFormatError):
    """The payload is not a JSON object of a known type with valid fields."""

    code = "sealed-payload"


class SealedSignatureLength(SealedFormatError):
    """The signature is not the 64 bytes of a raw ES256 ``r || s``."""

    code = "sealed-signature-length"


# --- verification (unseal.py, kids.py) ---------------------------------------------------


class SealedSignatureMismatch(SealedSecretError):
    """The ES256 signature does not verify with the key the ``kid`` names.

    Also what a header or payload changed after signing produces, and a wrong key: the
    signature cannot tell those apart.
    """

    code = "sealed-signature-mismatch"


class UnsignedSealedSecret(SealedSecretError):
    """A legacy unsigned secret (``sealed.fakejwsheader.….fakesignature``) was not allowed."""

    code = "sealed-unsigned"


class SealedKidError(SealedSecretError):
    """The ``kid`` cannot be resolved to a verification key."""

    code = "sealed-kid"


class UnknownKid(SealedKidError):
    """No verification key exists under this ``kid``."""

    code = "sealed-unknown-kid"


class KidTraversal(SealedKidError):
    """The ``kid`` names a file outside the key directory (``/``, ``..``, escaping link)."""

    code = "sealed-kid-traversal"


class InvalidSigningKey(SealedSecretError):
    """A signing or verification key is not a usable EC P-256 key."""

    code = "sealed-invalid-key"


# --- unsealing (unseal.py, envelope.py) --------------------------------------------------


class UnsupportedSealedVersion(SealedSecretError):
    """The payload ``version`` is not ``0.1.0``."""

    code = "sealed-unsupported-version"


class UnsupportedProvider(SealedSecretError):
    """The payload names a provider custodes cannot unseal with (only ``kbs``)."""

    code = "sealed-unsupported-provider"


class EnvelopeError(SealedSecretError):
    """An envelope secret cannot be opened."""

    code = "sealed-envelope"


class EnvelopeKekInvalid(EnvelopeError):
    """The key-encryption key is not exactly 32 bytes."""

    code = "sealed-envelope-kek"


class EnvelopeUnwrapFailed(EnvelopeError):
    """The data key does not unwrap with the key-encryption key (wrong KEK or tampered)."""

    code = "sealed-envelope-unwrap"


class EnvelopeDecryptFailed(EnvelopeError):
    """The data does not decrypt with the data key (tampered ciphertext, IV or tag)."""

    code = "sealed-envelope-decrypt"
