"""The string form of a sealed secret: ``sealed.<header>.<payload>.<signature>``.

After the literal prefix ``sealed.`` comes a compact JWS (RFC 7515) whose three parts are
strict unpadded base64url. The protected header is ``{"b64":true,"alg":"ES256","kid":…}``;
the signature is the raw 64-byte ES256 ``r || s`` over ``<header>.<payload>`` as ASCII.

The pre-v0.18 unsigned form ``sealed.fakejwsheader.<payload>.fakesignature`` also parses,
with an empty header and signature, so that :func:`custodes.sealed.unseal.unseal` can refuse
it by name (or accept it when explicitly allowed).

Parsing checks structure only; the signature is verified by
:func:`custodes.sealed.unseal.verify_signature` and the payload's fields by
:mod:`custodes.sealed.payload`. Where upstream is lenient custodes refuses: a repeated
``sealed.`` prefix (upstream strips all of them), padding, non-canonical base64url,
duplicate JSON members, a ``crit`` header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from custodes._internal import strictjson
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.sealed.errors import (
    MissingSealedPrefix,
    SealedAlgorithmError,
    SealedBase64Error,
    SealedFormatError,
    SealedHeaderError,
    SealedPayloadError,
    SealedSegmentCount,
    SealedSignatureLength,
    SealedUnencodedPayload,
)
from custodes.types.json import JsonObject

PREFIX: Final = "sealed."
ALGORITHM: Final = "ES256"
SIGNATURE_BYTES: Final = 64
# A Kubernetes Secret holds at most 1 MiB, so no real sealed secret is longer.
MAX_LENGTH: Final = 1 << 20
MAX_KID_LENGTH: Final = 1024
LEGACY_HEADER: Final = "fakejwsheader"
LEGACY_SIGNATURE: Final = "fakesignature"


def loads_object(raw: bytes, error: type[SealedFormatError], what: str) -> JsonObject:
    """Strict JSON object (:mod:`custodes._internal.strictjson`); else ``error``."""
    obj = strictjson.loads(raw, error=lambda why: error(f"{what} is not valid JSON: {why}"))
    if not isinstance(obj, dict):
        raise error(f"{what} is not a JSON object")
    return obj


def dumps_compact(obj: JsonObject) -> bytes:
    """Compact JSON as upstream's serde_json writes it (no spaces, non-ASCII kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _decode(segment: str, what: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as e:
        raise SealedBase64Error(f"sealed secret {what} is not unpadded base64url") from e


def _check_header(header: JsonObject) -> None:
    # 1. No extension we do not understand may be marked critical.
    if "crit" in header:
        raise SealedHeaderError("sealed secret header has crit extensions; none are supported")
    # 2. ES256 only, as upstream's guest requires.
    if "alg" not in header:
        raise SealedHeaderError("sealed secret header has no alg")
    alg = header["alg"]
    if alg != ALGORITHM:
        raise SealedAlgorithmError(f"sealed secret alg {alg!r} is not ES256")
    # 3. An unencoded payload (RFC 7797 b64=false) would change what is signed.
    if "b64" in header and header["b64"] is not True:
        raise SealedUnencodedPayload(f"sealed secret header b64 is {header['b64']!r}, not true")
    # 4. The kid names the verification key; upstream requires it.
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise SealedHeaderError("sealed secret header has no kid (a non-empty string)")
    if len(kid) > MAX_KID_LENGTH:
        raise SealedHeaderError(f"sealed secret kid is longer than {MAX_KID_LENGTH} characters")


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """A parsed (not yet verified) sealed secret.

    ``signing_input`` is ``<header>.<payload>`` exactly as received, ASCII; for the legacy
    unsigned form ``header`` is ``{}`` and ``signature`` is empty.
    """

    header: JsonObject
    payload: JsonObject
    signature: bytes
    signing_input: bytes

    @classmethod
    def parse(cls, text: str) -> SealedSecret:
        """Parse the string form; each structural problem raises its own error class."""
        # 1. Bounded ASCII text with the prefix.
        if not isinstance(text, str):
            raise SealedFormatError("sealed secret is not text")
        if len(text) > MAX_LENGTH:
            raise SealedFormatError(f"sealed secret is longer than {MAX_LENGTH} characters")
        if not text.startswith(PREFIX):
            raise MissingSealedPrefix("sealed secret does not start with 'sealed.'")
        if not text.isascii():
            raise SealedFormatError("sealed secret is not ASCII")
        # 2. Exactly three parts after the prefix.
        parts = text[len(PREFIX) :].split(".")
        if len(parts) != 3:
            raise SealedSegmentCount(
                f"sealed secret has {len(parts)} parts after the prefix, expected 3"
            )
        header_b64, payload_b64, signature_b64 = parts
        # 3. The legacy unsigned form: literal placeholders around a real payload.
        if header_b64 == LEGACY_HEADER and signature_b64 == LEGACY_SIGNATURE:
            payload = loads_object(_decode(payload_b64, "payload"), SealedPayloadError, "payload")
            return cls(
                header={},
                payload=payload,
                signature=b"",
                signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
            )
        # 4. Header: base64url, JSON object, then its members.
        header = loads_object(_decode(header_b64, "header"), SealedHeaderError, "header")
        _check_header(header)
        # 5. Payload: base64url, JSON object (its fields are checked at unseal time).
        payload = loads_object(_decode(payload_b64, "payload"), SealedPayloadError, "payload")
        # 6. Signature: base64url, exactly 64 bytes.
        signature = _decode(signature_b64, "signature")
        if len(signature) != SIGNATURE_BYTES:
            raise SealedSignatureLength(
                f"sealed secret signature is {len(signature)} bytes, expected {SIGNATURE_BYTES}"
            )
        return cls(
            header=header,
            payload=payload,
            signature=signature,
            signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        )

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def is_signed(self) -> bool:
        """False only for the legacy ``fakejwsheader``/``fakesignature`` form."""
        return bool(self.signature)

    def serialize(self) -> str:
        """The string form, byte for byte as parsed (the parts are kept as received)."""
        last = b64url_encode(self.signature) if self.is_signed else LEGACY_SIGNATURE
        return f"{PREFIX}{self.signing_input.decode('ascii')}.{last}"


def legacy_unsigned(payload: JsonObject) -> str:
    """The pre-v0.18 unsigned form of ``payload``; for tests and migration only."""
    return f"{PREFIX}{LEGACY_HEADER}.{b64url_encode(dumps_compact(payload))}.{LEGACY_SIGNATURE}"
