"""Compact JWS (RFC 7515) for ES256 and EdDSA, written directly on ``cryptography``.

Why not a JOSE library: tokens are signed and verified on every handshake and resource
request, the subset needed is small, and the acceptance rules must be strict and visible here:

* The algorithm is derived from the **key**, never chosen by the token: a P-256 key means
  ES256, an Ed25519 key means EdDSA. The header ``alg`` must equal it exactly, so ``none``,
  HMAC (the classic "public key as HMAC secret" confusion), RSA and ES384 are all refused.
* A ``crit`` header is refused: no extension is understood.
* Exactly three segments of strict unpadded base64url; header and payload are JSON objects
  with no duplicate member names and no NaN/Infinity; the whole token is bounded in size.
* The signature is exactly 64 bytes (ES256 is raw ``r || s``, RFC 7518 §3.4, not DER).
* The payload is parsed only after the signature verified.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from custodes._internal import strictjson
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import ConfigError, TokenError
from custodes.types.json import JsonObject

ES256: Final = "ES256"
EDDSA: Final = "EdDSA"
SIGNATURE_BYTES: Final = 64
_P256_BYTES: Final = 32
# A token carries what evidence and init-data nest (EAR claims); far above any real one.
TOKEN_MAX_DEPTH: Final = 128

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


def algorithm_for(key: PrivateKey | PublicKey) -> str:
    """The one JWS algorithm a key may be used with; ``ConfigError`` for other keys."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return EDDSA
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return ES256
        raise ConfigError(f"EC keys on {key.curve.name} are not supported; use P-256")
    raise ConfigError(f"unsupported JWS key type {type(key).__name__}")


def _encode_json(obj: JsonObject) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_compact(header: JsonObject, payload: JsonObject, key: PrivateKey) -> str:
    """Sign ``payload`` with ``key``; ``header["alg"]`` must be the key's algorithm."""
    alg = algorithm_for(key)
    if header.get("alg") != alg:
        raise ConfigError(f"header alg {header.get('alg')!r} does not match the key ({alg})")
    if "crit" in header:
        raise ConfigError("crit headers are not supported")
    signing_input = b64url_encode(_encode_json(header)) + "." + b64url_encode(_encode_json(payload))
    data = signing_input.encode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return signing_input + "." + b64url_encode(signature)


def _decode_object(segment: str, what: str) -> JsonObject:
    try:
        raw = b64url_decode(segment)
    except ValueError as e:
        raise TokenError(f"token {what} is not unpadded base64url") from e
    obj = strictjson.loads(
        raw,
        max_depth=TOKEN_MAX_DEPTH,
        error=lambda why: TokenError(f"token {what} is not JSON: {why}"),
    )
    if not isinstance(obj, dict):
        raise TokenError(f"token {what} is not a JSON object")
    return obj


def _check_signature(key: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            r = int.from_bytes(signature[:_P256_BYTES], "big")
            s = int.from_bytes(signature[_P256_BYTES:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verify_compact_with_key(
    token: str, keys: Sequence[PublicKey], *, max_len: int = 65536
) -> tuple[JsonObject, JsonObject, PublicKey]:
    """As :func:`verify_compact`, also returning the key that verified the signature."""
    # 1. Shape: bounded ASCII text, three segments.
    if not isinstance(token, str):
        raise TokenError("token is not text")
    if len(token) > max_len:
        raise TokenError(f"token is longer than {max_len} characters")
    if not token.isascii():
        raise TokenError("token is not ASCII")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError("token is not a compact JWS (three segments)")
    header_b64, payload_b64, signature_b64 = segments
    # 2. Header: a JSON object with an algorithm and no critical extensions.
    header = _decode_object(header_b64, "header")
    if "crit" in header:
        raise TokenError("token header has crit extensions, none are supported")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError("token header has no alg")
    # 3. Candidate keys: those whose own algorithm is the header's alg (never the reverse).
    candidates = [k for k in keys if algorithm_for(k) == alg]
    if not candidates:
        raise TokenError(f"token alg {alg!r} is not accepted here")
    # 4. Signature: exact length, then verification against each candidate.
    try:
        signature = b64url_decode(signature_b64)
    except ValueError as e:
        raise TokenError("token signature is not unpadded base64url") from e
    if len(signature) != SIGNATURE_BYTES:
        raise TokenError(f"token signature is {len(signature)} bytes, expected 64")
    data = f"{header_b64}.{payload_b64}".encode("ascii")
    for key in candidates:
        if _check_signature(key, data, signature):
            # 5. Payload, only now that it is authentic.
            return header, _decode_object(payload_b64, "payload"), key
    raise TokenError("token signature does not verify with any trusted key")


def verify_compact(
    token: str, keys: Sequence[PublicKey], *, max_len: int = 65536
) -> tuple[JsonObject, JsonObject]:
    """Verify a compact JWS against ``keys``; ``(header, payload)`` or ``TokenError``."""
    header, payload, _ = verify_compact_with_key(token, keys, max_len=max_len)
    return header, payload
