"""Dataset keys: generation and key files.

A data key is 32 random bytes (AES-256). The broker holds it as a resource of exactly those
32 bytes. A key file holds it in one of two forms, told apart by length:

* raw: exactly 32 bytes (as ``head -c 32 /dev/urandom`` makes, and as the broker stores);
* text: the line ``custodes-dataset-key-v1``, a newline, the key in standard padded base64
  (44 characters) and an optional final newline — for copying through text-only channels.

Anything else is refused with a clear error; nothing is padded or truncated. Key files are
created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Final

from custodes._internal.atomic import OutputError, write_atomic
from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.datasets.errors import DatasetKeyError
from custodes.datasets.format import KEY_BYTES
from custodes.types.secret import Secret

TEXT_HEADER: Final = b"custodes-dataset-key-v1\n"
# No key file is this large; reading stops here so a wrong path cannot fill memory.
_MAX_KEY_FILE: Final = 4096


def generate_key() -> Secret[bytes]:
    """A fresh random AES-256 data key."""
    return Secret(secrets.token_bytes(KEY_BYTES))


def check_key(key: Secret[bytes], *, what: str = "a dataset key") -> Secret[bytes]:
    """``key`` if it is exactly 32 bytes, else :class:`DatasetKeyError` (e.g. a broker
    resource that is not a data key)."""
    raw = key.reveal()
    if len(raw) != KEY_BYTES:
        raise DatasetKeyError(f"{what} is exactly {KEY_BYTES} bytes, not {len(raw)}")
    return key


def encode_key_text(key: Secret[bytes]) -> bytes:
    """The text form of a key file."""
    return TEXT_HEADER + b64std_encode(check_key(key).reveal()).encode("ascii") + b"\n"


def parse_key_file(data: bytes, *, source: str = "key file") -> Secret[bytes]:
    """A key from the bytes of a key file, raw or text form."""
    if len(data) == KEY_BYTES:
        return Secret(data)
    if data.startswith(TEXT_HEADER):
        body = data[len(TEXT_HEADER) :]
        body = body.removesuffix(b"\n")
        try:
            raw = b64std_decode(body.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as e:
            raise DatasetKeyError(f"{source}: the key line is not padded standard base64") from e
        if len(raw) != KEY_BYTES:
            raise DatasetKeyError(f"{source}: the key line holds {len(raw)} bytes, not {KEY_BYTES}")
        return Secret(raw)
    raise DatasetKeyError(
        f"{source}: a dataset key file is exactly {KEY_BYTES} raw bytes or the text form "
        f"starting {TEXT_HEADER.decode().strip()!r}; this one has {len(data)} bytes"
    )


def read_key_file(path: Path) -> Secret[bytes]:
    """Read a key file (raw or text form)."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise DatasetKeyError(f"cannot read key file {path}: {e.strerror}") from e
    if len(data) > _MAX_KEY_FILE:
        raise DatasetKeyError(f"{path}: far too large for a dataset key file")
    return parse_key_file(data, source=str(path))


def write_key_file(path: Path, key: Secret[bytes], *, text: bool = False) -> None:
    """Create ``path`` (mode 0600) holding ``key``, raw or (``text``) in the text form.

    Refuses to replace an existing file: a lost data key is lost data.
    """
    data = encode_key_text(key) if text else check_key(key).reveal()
    try:
        write_atomic(path, data, private=True, overwrite=False)
    except OutputError as e:
        raise DatasetKeyError(str(e)) from e
