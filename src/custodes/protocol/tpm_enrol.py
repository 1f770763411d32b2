"""The wire messages of TPM attestation-key enrolment (``POST .../tpm/enrol`` and
``.../tpm/enrol/activate``), read strictly by the broker and by the guest alike.

Shared ground: the broker's enrolment (:mod:`custodes.attestation.tpm_enrol`) and the guest's
(:mod:`custodes.guest.tpm_enrol`) both import these, so the guest needs no server code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import MalformedMessage
from custodes.types.json import Json, JsonObject

SECRET_SIZE: Final = 32
MAX_EK_CERTIFICATE_BYTES: Final = 8192
MAX_AK_PUBLIC_BYTES: Final = 1024
ID_HEX_CHARS: Final = 32


def _object(body: Json, keys: frozenset[str], what: str) -> JsonObject:
    if not isinstance(body, dict) or set(body) != keys:
        raise MalformedMessage(f"{what} is a JSON object with exactly {sorted(keys)}")
    return body


def _b64(body: JsonObject, key: str, limit: int) -> bytes:
    value = body[key]
    if not isinstance(value, str) or len(value) > 4 * (limit // 3 + 1):
        raise MalformedMessage(f"'{key}' must be standard base64 of at most {limit} bytes")
    try:
        return b64std_decode(value)
    except ValueError as e:
        raise MalformedMessage(f"'{key}' is not padded standard base64") from e


@dataclass(frozen=True, slots=True)
class EnrolRequest:
    """``POST .../tpm/enrol``: the EK certificate (DER) and the AK's TPMT_PUBLIC."""

    ek_certificate: bytes
    ak_public: bytes

    @classmethod
    def from_json(cls, body: Json) -> EnrolRequest:
        obj = _object(body, frozenset({"ek_certificate", "ak_public"}), "an enrolment request")
        return cls(
            ek_certificate=_b64(obj, "ek_certificate", MAX_EK_CERTIFICATE_BYTES),
            ak_public=_b64(obj, "ak_public", MAX_AK_PUBLIC_BYTES),
        )

    def to_json(self) -> JsonObject:
        return {
            "ek_certificate": b64std_encode(self.ek_certificate),
            "ak_public": b64std_encode(self.ak_public),
        }


@dataclass(frozen=True, slots=True)
class EnrolChallenge:
    """The answer to an enrolment request: what TPM2_ActivateCredential takes."""

    id: str
    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET
    expires_in: int

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "credential_blob": b64std_encode(self.credential_blob),
            "encrypted_secret": b64std_encode(self.encrypted_secret),
            "expires_in": self.expires_in,
        }

    @classmethod
    def from_json(cls, body: Json) -> EnrolChallenge:
        """The guest's reading of the broker's answer (strict as the broker's reading)."""
        keys = frozenset({"id", "credential_blob", "encrypted_secret", "expires_in"})
        obj = _object(body, keys, "an enrolment challenge")
        expires_in = obj["expires_in"]
        if not isinstance(obj["id"], str) or not isinstance(expires_in, int):
            raise MalformedMessage("an enrolment challenge has a string id and integer expires_in")
        return cls(
            id=obj["id"],
            credential_blob=_b64(obj, "credential_blob", MAX_AK_PUBLIC_BYTES),
            encrypted_secret=_b64(obj, "encrypted_secret", MAX_AK_PUBLIC_BYTES),
            expires_in=expires_in,
        )


@dataclass(frozen=True, slots=True)
class ActivateRequest:
    """``POST .../tpm/enrol/activate``: the challenge id and the secret the TPM recovered."""

    id: str
    secret: bytes

    @classmethod
    def from_json(cls, body: Json) -> ActivateRequest:
        obj = _object(body, frozenset({"id", "secret"}), "an activation request")
        challenge_id = obj["id"]
        if (
            not isinstance(challenge_id, str)
            or len(challenge_id) != ID_HEX_CHARS
            or any(c not in "0123456789abcdef" for c in challenge_id)
        ):
            raise MalformedMessage(f"'id' must be the {ID_HEX_CHARS} hex digits of a challenge")
        secret = _b64(obj, "secret", SECRET_SIZE)
        if len(secret) != SECRET_SIZE:
            raise MalformedMessage(f"'secret' must be exactly {SECRET_SIZE} bytes")
        return cls(challenge_id, secret)

    def to_json(self) -> JsonObject:
        return {"id": self.id, "secret": b64std_encode(self.secret)}
