"""Strict base64 codecs: one alphabet each, padding rules enforced, no silent repair."""

from __future__ import annotations

import base64
import binascii
import re

_URL_NOPAD = re.compile(r"[A-Za-z0-9_-]*")
_STD = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url without padding; raises ``ValueError`` on anything else."""
    if not _URL_NOPAD.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # Reject non-canonical encodings (stray bits in the last character).
    if b64url_encode(decoded) != text:
        raise ValueError("non-canonical base64url")
    return decoded


def b64std_encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def b64std_decode(text: str) -> bytes:
    """Decode padded standard base64; raises ``ValueError`` on anything else."""
    if not _STD.fullmatch(text):
        raise ValueError("not padded standard base64")
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError("not padded standard base64") from e
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded
