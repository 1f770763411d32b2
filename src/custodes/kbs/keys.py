"""Key files of the broker: the EAR signing key and the admin key pair.

Both are generated once on first start when none is configured, written with mode 0600
(private) next to the store, and reused on every later start. A signing key (EAR, audit) and
the generated admin private key are refused when group or others can read them
(:mod:`custodes._internal.private_files` has the rule).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.private_files import ensure_private_dir, read_private_key_file
from custodes.errors import ConfigError

logger = logging.getLogger(__name__)

AdminPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
AdminPrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

EAR_KEY_FILE = "ear-signing-key.pem"
ADMIN_KEY_FILE = "admin-key.pem"
ADMIN_PUB_FILE = "admin-key.pub.pem"


def write_private_pem(path: Path, key: AdminPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ensure_private_dir(path.parent)
    # O_EXCL: never overwrite an existing key; 0600 from the first byte written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # exactly, whatever the umask removed
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())


def write_public_pem(path: Path, key: AdminPublicKey) -> None:
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)


def load_private_key(path: Path, *, broker_key: bool = False) -> AdminPrivateKey:
    """A PEM private key. ``broker_key``: a key the broker signs with, refused (as ssh
    refuses a readable identity) unless only its owner, or root's group, can read it."""
    try:
        pem = read_private_key_file(path, "key") if broker_key else path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read key {path}: {e.strerror}") from e
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(f"{path}: key must be Ed25519 or EC P-256")


def load_public_key(path: Path) -> AdminPublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read key {path}: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not a PEM public key") from e
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigError(f"{path}: admin keys must be Ed25519 or EC P-256")


AUDIT_KEY_FILE = "audit-signing-key.pem"


def load_ear_signing_key(
    configured: Path | None, data_dir: Path, *, default_name: str = EAR_KEY_FILE
) -> ec.EllipticCurvePrivateKey:
    """The configured P-256 key, else ``data_dir/default_name`` (created on first start).
    Signs EAR tokens, and (with ``AUDIT_KEY_FILE``) the audit log."""
    path = configured or data_dir / default_name
    if configured is None and not path.exists():
        try:
            write_private_pem(path, ec.generate_private_key(ec.SECP256R1()))
        except FileExistsError:
            pass  # another replica starting at the same time wrote it first: use theirs
        logger.info("generated EAR token signing key %s", path)
    key = load_private_key(path, broker_key=True)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: the EAR signing key must be EC P-256 (ES256)")
    return key


@dataclass(frozen=True, slots=True)
class GeneratedAdminKey:
    private_path: Path
    public_path: Path


def ensure_admin_key(data_dir: Path) -> GeneratedAdminKey | None:
    """Create the default admin key pair if absent; returns it when it was just created."""
    private_path = data_dir / ADMIN_KEY_FILE
    public_path = data_dir / ADMIN_PUB_FILE
    if public_path.exists():
        if private_path.exists():
            read_private_key_file(private_path, "admin key")  # never left readable beside us
        return None
    if private_path.exists():
        # A start that stopped between the two writes left the private key only: finish the
        # pair from it (the key is never overwritten).
        existing = load_private_key(private_path, broker_key=True)
        write_public_pem(public_path, existing.public_key())
        return GeneratedAdminKey(private_path, public_path)
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_pem(private_path, key)
    write_public_pem(public_path, key.public_key())
    return GeneratedAdminKey(private_path, public_path)
