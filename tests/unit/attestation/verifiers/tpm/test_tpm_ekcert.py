"""EK certificates against the configured CA bundle: each check refuses on its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from custodes.attestation.verifiers.tpm.ekcert import (
    ek_fingerprint,
    load_ca_bundle,
    verify_ek_certificate,
)
from custodes.attestation.verifiers.tpm.errors import EkCertificateInvalid
from custodes.errors import ConfigError
from swtpm import TestCa

NOW = datetime.now(UTC)
RSA_EK = rsa.generate_private_key(65537, 2048).public_key()
ECC_EK = ec.generate_private_key(ec.SECP256R1()).public_key()


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa.create()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("key", [RSA_EK, ECC_EK], ids=["rsa", "ecc"])
def test_a_certified_ek_is_accepted(ca: TestCa, key: rsa.RSAPublicKey) -> None:
    cert = ca.issue_ek(key)
    ek = verify_ek_certificate(_der(cert), (ca.certificate,), NOW)
    assert ek.public_key == key
    assert ek.fingerprint == ek_fingerprint(key) and len(ek.fingerprint) == 64
    assert ek.issuer == ca.certificate.subject.rfc4514_string()


def _refused(ca: TestCa, der: bytes, why: str, anchors: tuple[x509.Certificate, ...] = ()) -> None:
    with pytest.raises(EkCertificateInvalid, match=why):
        verify_ek_certificate(der, anchors or (ca.certificate,), NOW)


def test_another_ca_with_the_same_name_is_refused(ca: TestCa) -> None:
    name = ca.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    rogue = TestCa.create(str(name))
    _refused(ca, _der(rogue.issue_ek(RSA_EK)), "not issued by a CA")


def test_a_tampered_signature_is_refused(ca: TestCa) -> None:
    der = bytearray(_der(ca.issue_ek(RSA_EK)))
    der[-5] ^= 0x01  # inside the signature value
    _refused(ca, bytes(der), "not issued by a CA")


def test_an_expired_anchor_issues_nothing(ca: TestCa) -> None:
    old = ca.certificate
    expired_anchor = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.subject)
        .public_key(ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(NOW - timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    _refused(ca, _der(ca.issue_ek(RSA_EK)), "not issued by a CA", (expired_anchor,))


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - timedelta(days=30), NOW - timedelta(days=1)), (NOW + timedelta(days=1), None)],
    ids=["expired", "not-yet-valid"],
)
def test_validity_period(ca: TestCa, not_before: datetime, not_after: datetime | None) -> None:
    cert = ca.issue_ek(RSA_EK, not_before=not_before, not_after=not_after)
    _refused(ca, _der(cert), "not valid now")


def test_a_ca_certificate_is_not_an_ek(ca: TestCa) -> None:
    _refused(ca, _der(ca.certificate), "is a CA certificate")


@pytest.mark.parametrize(
    ("key", "why"),
    [
        (rsa.generate_private_key(65537, 3072).public_key(), "3072 bits, expected 2048"),
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "expected NIST P-256"),
        (ed25519.Ed25519PrivateKey.generate().public_key(), "neither RSA nor ECC"),
    ],
    ids=["rsa3072", "p384", "ed25519"],
)
def test_keys_without_a_credential_scheme(ca: TestCa, key: object, why: str) -> None:
    usage = "key_agreement" if isinstance(key, ec.EllipticCurvePublicKey) else None
    if isinstance(key, ed25519.Ed25519PublicKey):
        usage = "digital_signature"
    _refused(ca, _der(ca.issue_ek(key, key_usage=usage)), why)


@pytest.mark.parametrize(
    ("key", "why"), [(RSA_EK, "keyEncipherment"), (ECC_EK, "keyAgreement")], ids=["rsa", "ecc"]
)
def test_key_usage_must_allow_what_an_ek_does(ca: TestCa, key: object, why: str) -> None:
    _refused(ca, _der(ca.issue_ek(key, key_usage="digital_signature")), why)


@pytest.mark.parametrize("der", [b"", b"\x30\x03\x02\x01\x00", b"not a certificate"])
def test_garbage_is_refused(ca: TestCa, der: bytes) -> None:
    _refused(ca, der, "not a DER X.509 certificate")


def test_an_intermediate_in_the_bundle_is_an_anchor(ca: TestCa, tmp_path: Path) -> None:
    """Every bundle certificate is trusted: a manufacturer's intermediate CA is listed."""
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EK intermediate")])
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca.certificate.subject)
        .public_key(intermediate_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca.key, hashes.SHA256())
    )
    issuing = TestCa(intermediate_key, intermediate)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ca.pem() + issuing.pem())
    anchors = load_ca_bundle(bundle)
    assert len(anchors) == 2
    ek = verify_ek_certificate(_der(issuing.issue_ek(RSA_EK)), anchors, NOW)
    assert ek.issuer == "CN=EK intermediate"
    # Only the root in the bundle: the guest sends no chain, so the EK is refused.
    _refused(ca, _der(issuing.issue_ek(RSA_EK)), "not issued by a CA")


def test_bundle_loading(ca: TestCa, tmp_path: Path) -> None:
    good = tmp_path / "good.pem"
    good.write_bytes(ca.pem())
    assert load_ca_bundle(good) == (ca.certificate,)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(ca.issue_ek(RSA_EK).public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        load_ca_bundle(leaf)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not PEM")
    with pytest.raises(ConfigError, match="not a PEM file of certificates"):
        load_ca_bundle(garbage)
    with pytest.raises(ConfigError, match="cannot read"):
        load_ca_bundle(tmp_path / "missing.pem")
