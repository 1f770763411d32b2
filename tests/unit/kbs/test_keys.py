"""Broker key files: generation (0600, never overwritten), loading, and refusals."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from custodes.errors import ConfigError
from custodes.kbs.keys import (
    ADMIN_KEY_FILE,
    ADMIN_PUB_FILE,
    EAR_KEY_FILE,
    GeneratedAdminKey,
    ensure_admin_key,
    load_ear_signing_key,
    load_private_key,
    load_public_key,
    write_private_pem,
    write_public_pem,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_pem(key: object, password: bytes | None = None) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _public_pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _same_public(a: object, b: object) -> bool:
    assert isinstance(a, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    assert isinstance(b, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey)
    return _spki(a) == _spki(b)


def _spki(key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- writing -----------------------------------------------------------------------------


def test_private_key_written_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "k.pem"
    old = os.umask(0)
    try:
        write_private_pem(path, ed25519.Ed25519PrivateKey.generate())
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert isinstance(load_private_key(path), ed25519.Ed25519PrivateKey)


def test_private_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_private_pem(path, ed25519.Ed25519PrivateKey.generate())
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_private_pem(path, ed25519.Ed25519PrivateKey.generate())
    assert path.read_bytes() == before


def test_private_key_write_refuses_a_symlink(tmp_path: Path) -> None:
    # O_EXCL also refuses a planted symlink, even a dangling one.
    target = tmp_path / "elsewhere.pem"
    link = tmp_path / "k.pem"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        write_private_pem(link, ed25519.Ed25519PrivateKey.generate())
    assert not target.exists()


def test_public_key_round_trip(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    write_public_pem(tmp_path / "p.pem", key.public_key())
    assert _same_public(load_public_key(tmp_path / "p.pem"), key.public_key())


# --- loading -----------------------------------------------------------------------------


def test_load_p256_private_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_private_pem(ec.generate_private_key(ec.SECP256R1())))
    assert isinstance(load_private_key(path), ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize("loader", [load_private_key, load_public_key])
def test_load_missing_file(tmp_path: Path, loader: object) -> None:
    assert callable(loader)
    with pytest.raises(ConfigError):
        loader(tmp_path / "absent.pem")


@pytest.mark.parametrize("loader", [load_private_key, load_public_key])
def test_load_a_directory(tmp_path: Path, loader: object) -> None:
    assert callable(loader)
    with pytest.raises(ConfigError):
        loader(tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage\n",
        b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        os.urandom(64),
    ],
    ids=["empty", "text", "bad-private-pem", "bad-public-pem", "random"],
)
@pytest.mark.parametrize("loader", [load_private_key, load_public_key])
def test_load_garbage(tmp_path: Path, content: bytes, loader: object) -> None:
    assert callable(loader)
    path = tmp_path / "k.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        loader(path)


def test_load_encrypted_private_key(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_private_pem(ec.generate_private_key(ec.SECP256R1()), b"passphrase"))
    with pytest.raises(ConfigError, match="unencrypted"):
        load_private_key(path)


def test_load_public_pem_as_private(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    with pytest.raises(ConfigError):
        load_private_key(path)


def test_load_private_pem_as_public(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(_private_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError):
        load_public_key(path)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("kind", ["rsa", "p384", "secp256k1"])
def test_refused_key_types(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, kind: str) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa_key
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP384R1() if kind == "p384" else ec.SECP256K1())
    )
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    private.write_bytes(_private_pem(key))
    public.write_bytes(_public_pem(key.public_key()))
    with pytest.raises(ConfigError, match="P-256"):
        load_private_key(private)
    with pytest.raises(ConfigError, match="P-256"):
        load_public_key(public)


# --- the EAR signing key -----------------------------------------------------------------


def test_ear_key_generated_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_ear_signing_key(None, data_dir)
    path = data_dir / EAR_KEY_FILE
    assert _mode(path) == 0o600
    assert isinstance(first.curve, ec.SECP256R1)
    pem = path.read_bytes()
    second = load_ear_signing_key(None, data_dir)
    assert path.read_bytes() == pem
    assert _same_public(first.public_key(), second.public_key())


def test_ear_key_configured(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "mine.pem"
    path.write_bytes(_private_pem(key))
    path.chmod(0o600)
    data_dir = tmp_path / "data"
    loaded = load_ear_signing_key(path, data_dir)
    assert _same_public(loaded.public_key(), key.public_key())
    assert not (data_dir / EAR_KEY_FILE).exists()


def test_ear_key_configured_but_missing_is_not_generated(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(ConfigError):
        load_ear_signing_key(path, tmp_path)
    assert not path.exists()


def test_ear_key_must_be_p256(tmp_path: Path) -> None:
    path = tmp_path / "ed.pem"
    write_private_pem(path, ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError, match="EC P-256"):
        load_ear_signing_key(path, tmp_path)


def test_ear_key_corrupt_default_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / EAR_KEY_FILE
    path.write_bytes(b"garbage")
    with pytest.raises(ConfigError):
        load_ear_signing_key(None, tmp_path)
    assert path.read_bytes() == b"garbage"


# --- the default admin key pair ----------------------------------------------------------


def test_admin_key_pair_generated_once(tmp_path: Path) -> None:
    generated = ensure_admin_key(tmp_path)
    assert generated == GeneratedAdminKey(tmp_path / ADMIN_KEY_FILE, tmp_path / ADMIN_PUB_FILE)
    assert _mode(generated.private_path) == 0o600
    private = load_private_key(generated.private_path)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert _same_public(private.public_key(), load_public_key(generated.public_path))
    pems = (generated.private_path.read_bytes(), generated.public_path.read_bytes())
    assert ensure_admin_key(tmp_path) is None
    assert (generated.private_path.read_bytes(), generated.public_path.read_bytes()) == pems


def test_admin_key_pair_completed_after_an_interrupted_start(tmp_path: Path) -> None:
    # A start that stopped after writing the private key only: the pair is finished from it.
    key = ed25519.Ed25519PrivateKey.generate()
    write_private_pem(tmp_path / ADMIN_KEY_FILE, key)
    pem = (tmp_path / ADMIN_KEY_FILE).read_bytes()
    generated = ensure_admin_key(tmp_path)
    assert generated is not None
    assert (tmp_path / ADMIN_KEY_FILE).read_bytes() == pem
    assert _same_public(load_public_key(generated.public_path), key.public_key())


# --- file modes: refused, as ssh refuses a readable identity -----------------------------


def test_configured_ear_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mine.pem"
    path.write_bytes(_private_pem(ec.generate_private_key(ec.SECP256R1())))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        load_ear_signing_key(path, tmp_path / "data")


def test_generated_ear_key_made_readable_is_refused_at_the_next_start(tmp_path: Path) -> None:
    load_ear_signing_key(None, tmp_path)
    (tmp_path / EAR_KEY_FILE).chmod(0o640)
    with pytest.raises(ConfigError, match="group and others must have no access"):
        load_ear_signing_key(None, tmp_path)


def test_generated_admin_key_made_readable_is_refused(tmp_path: Path) -> None:
    ensure_admin_key(tmp_path)
    (tmp_path / ADMIN_KEY_FILE).chmod(0o604)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_admin_key(tmp_path)


def test_keys_and_their_directory_are_private_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        load_ear_signing_key(None, tmp_path / "data")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "data") == 0o700
    assert _mode(tmp_path / "data" / EAR_KEY_FILE) == 0o600
