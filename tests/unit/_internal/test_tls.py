"""CA files and server TLS pairs are loaded up front, each failure one precise error."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from custodes._internal.tls import CaCertError, check_server_pair, tls_verify


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_no_ca_file_means_the_default_roots() -> None:
    assert tls_verify(None) is True


def test_a_ca_file_gives_a_context_trusting_it(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path, "ca")
    context = tls_verify(cert)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert len(context.get_ca_certs()) == 1


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("missing.pem", "does not exist"), ("dir", "is a directory"), ("empty", "no PEM")],
)
def test_a_bad_ca_file_is_one_error_naming_it(tmp_path: Path, name: str, fragment: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(CaCertError, match=fragment) as raised:
        tls_verify(tmp_path / name)
    assert str(tmp_path / name) in str(raised.value)


def test_a_matching_server_pair_loads(tmp_path: Path) -> None:
    check_server_pair(*_self_signed(tmp_path, "server"))


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path, "one")
    _, other_key = _self_signed(tmp_path, "two")
    with pytest.raises(CaCertError, match="do not load as a pair"):
        check_server_pair(cert, other_key)


def test_a_missing_server_key_is_named(tmp_path: Path) -> None:
    cert, _ = _self_signed(tmp_path, "server")
    with pytest.raises(CaCertError, match=r"key .*nokey\.pem does not exist"):
        check_server_pair(cert, tmp_path / "nokey.pem")


def test_a_server_key_others_may_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    from custodes._internal.private_files import FileModeError

    cert, key = _self_signed(tmp_path, "server")
    key.chmod(0o644)
    with pytest.raises(FileModeError, match=r"TLS private key .* has mode 0644.*chmod 600"):
        check_server_pair(cert, key)
