"""The master key of encryption at rest: loading it from a file or an environment variable,
generating a key file, and wrapping/unwrapping data keys with it.

The master key never goes into the store; it only wraps the per-tenant data keys that do
(see :mod:`custodes.storage.encrypted` and ``docs/encryption-at-rest.md``).

Accepted forms (both sources):

* a file holding exactly 32 raw bytes, or
* ASCII text: the 32 bytes in padded standard base64 (44 characters), optionally followed by
  one ``\\n``. :meth:`MasterKey.generate_file` writes this form.

The environment variable takes the text form only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import ConfigError
from custodes.types.secret import Secret

KEY_SIZE: Final = 32
KEY_ID_SIZE: Final = 8
NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_KEY_ID_LABEL: Final = b"custodes/master-key-id/v1"


class MasterKeyError(ConfigError):
    """The master key cannot be loaded: missing, malformed, or too widely readable."""

    code = "master-key"


class MasterKey:
    """An AES-256 key that wraps data keys. ``repr`` shows only its public id."""

    __slots__ = ("_aead", "_key", "key_id")

    def __init__(self, key: Secret[bytes]) -> None:
        raw = key.reveal()
        if len(raw) != KEY_SIZE:
            raise MasterKeyError(f"a master key is {KEY_SIZE} bytes, not {len(raw)}")
        # A key of zeros is what `head -c32 /dev/zero` gives: a mistake, never a key.
        if not any(raw):
            raise MasterKeyError("the master key is all zero bytes")
        self._key = key
        self._aead = AESGCM(raw)
        # Public fingerprint stored beside each wrapped data key, so that a wrong master key
        # is told apart from a damaged record. A PRF output: it reveals nothing of the key.
        self.key_id: bytes = hmac.new(raw, _KEY_ID_LABEL, hashlib.sha256).digest()[:KEY_ID_SIZE]

    def __repr__(self) -> str:
        return f"MasterKey(id={self.key_id.hex()})"

    __str__ = __repr__

    # --- sources -------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, raw: bytes) -> MasterKey:
        return cls(Secret(raw))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a key file; refuse it unless it is a regular file with no group/other bits."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as e:
            raise MasterKeyError(f"cannot open master key file {path}: {e.strerror}") from e
        try:
            # fstat of the open file, not stat of the path: no window to swap the file.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise MasterKeyError(f"master key file {path} is not a regular file")
            if st.st_mode & 0o077:
                raise MasterKeyError(
                    f"master key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: "
                    "group and others must have no access (chmod 600)"
                )
            # More than the longest valid form (45 bytes): a longer file is seen as such.
            data = os.read(fd, 4 * KEY_SIZE)
        except OSError as e:
            raise MasterKeyError(f"cannot read master key file {path}: {e.strerror}") from e
        finally:
            os.close(fd)
        if len(data) == KEY_SIZE:
            return cls.from_bytes(data)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            text = None
        key = None if text is None else _decode_text(text)
        if key is None:
            raise MasterKeyError(
                f"master key file {path} is neither {KEY_SIZE} raw bytes nor the base64 "
                f"text of {KEY_SIZE} bytes"
            )
        return cls(key)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> MasterKey:
        """Read the base64 text form from environment variable ``name``."""
        env = os.environ if environ is None else environ
        text = env.get(name)
        if text is None:
            raise MasterKeyError(f"environment variable {name} is not set")
        key = _decode_text(text)
        if key is None:
            raise MasterKeyError(
                f"environment variable {name} is not the base64 text of {KEY_SIZE} bytes"
            )
        return cls(key)

    @classmethod
    def generate_file(cls, path: Path) -> MasterKey:
        """Create ``path`` (mode 0600, never overwriting) holding a new random key."""
        raw = secrets.token_bytes(KEY_SIZE)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            raise MasterKeyError(f"cannot create master key file {path}: {e.strerror}") from e
        try:
            # The umask may have removed bits; set the mode exactly.
            os.fchmod(fd, 0o600)
            payload = (b64std_encode(raw) + "\n").encode("ascii")
            if os.write(fd, payload) != len(payload):
                raise MasterKeyError(f"short write to master key file {path}")
            os.fsync(fd)
        except OSError as e:
            raise MasterKeyError(f"cannot write master key file {path}: {e.strerror}") from e
        finally:
            os.close(fd)
        return cls.from_bytes(raw)

    # --- wrapping ------------------------------------------------------------------------

    def wrap(self, data_key: Secret[bytes], context: bytes) -> bytes:
        """``nonce(12) || AES-256-GCM(data_key) || tag(16)``, bound to ``context`` (AAD)."""
        nonce = secrets.token_bytes(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, data_key.reveal(), context)

    def unwrap(self, wrapped: bytes, context: bytes) -> Secret[bytes] | None:
        """The data key, or ``None`` if ``wrapped`` does not authenticate under this key
        and ``context``."""
        if len(wrapped) < NONCE_SIZE + _TAG_SIZE:
            return None
        try:
            return Secret(self._aead.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], context))
        except InvalidTag:
            return None


def _decode_text(text: str) -> Secret[bytes] | None:
    """The base64 text form (one trailing newline allowed), or ``None``."""
    if text.endswith("\n"):
        text = text[:-1]
    try:
        raw = b64std_decode(text)
    except ValueError:
        return None
    return Secret(raw) if len(raw) == KEY_SIZE else None
