"""The TPM's endorsement key (EK) certificate, checked against the configured manufacturer CAs.

The CA bundle (``attestation.tpm_ek_ca_bundle``) is a PEM file of CA certificates; every one
of them is a trust anchor for EK certificates, so a manufacturer's intermediate CAs go in the
bundle next to (or instead of) its roots. An EK certificate is accepted when, at the time of the
check (each step its own message, one error class,
:class:`~.errors.EkCertificateInvalid`):

1. it is one DER X.509 certificate, valid now, and not a CA certificate;
2. a CA of the bundle, itself valid now, issued it (issuer name and signature);
3. its key is one the broker can make credentials for: RSA 2048 (TCG EK template L-1) or
   ECC NIST P-256 (template L-2), both with nameAlg SHA-256 and AES-128-CFB;
4. its key usage, when present, allows what an EK does: keyEncipherment (RSA) or keyAgreement
   (ECC).

The EK's identity is the SHA-256 of its SubjectPublicKeyInfo DER (``fingerprint``): it names the
TPM, not the certificate, so a re-issued certificate does not change it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custodes.attestation.verifiers.tpm.errors import EkCertificateInvalid
from custodes.attestation.verifiers.x509ext import extension_value
from custodes.errors import ConfigError

EK_RSA_BITS: Final = 2048
MAX_BUNDLE_BYTES: Final = 4 << 20

EkPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class EkCertificate:
    """An EK certificate that passed every check."""

    certificate: x509.Certificate
    public_key: EkPublicKey
    fingerprint: str  # hex SHA-256 of the EK's DER SubjectPublicKeyInfo
    issuer: str  # RFC 4514

    @property
    def der_sha256(self) -> str:
        return hashlib.sha256(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def ek_fingerprint(key: EkPublicKey) -> str:
    """The EK's identity: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = extension_value(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


def load_ca_bundle(path: Path) -> tuple[x509.Certificate, ...]:
    """The CA certificates of a PEM bundle; every one must be a CA allowed to sign certificates."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"attestation.tpm_ek_ca_bundle: cannot read {path}: {e.strerror}") from e
    if len(data) > MAX_BUNDLE_BYTES:
        raise ConfigError(f"attestation.tpm_ek_ca_bundle: {path} is over {MAX_BUNDLE_BYTES} bytes")
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise ConfigError(
            f"attestation.tpm_ek_ca_bundle: {path} is not a PEM file of certificates"
        ) from e
    for cert in certs:
        usage = extension_value(cert, x509.KeyUsage)
        if not _is_ca(cert) or (usage is not None and not usage.key_cert_sign):
            raise ConfigError(
                f"attestation.tpm_ek_ca_bundle: {cert.subject.rfc4514_string()!r} in {path} "
                "is not a CA certificate allowed to sign certificates"
            )
    return certs


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issuer(cert: x509.Certificate, anchors: tuple[x509.Certificate, ...], now: datetime) -> bool:
    for anchor in anchors:
        if anchor.subject != cert.issuer or not _valid_at(anchor, now):
            continue
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def verify_ek_certificate(
    der: bytes, anchors: tuple[x509.Certificate, ...], now: datetime
) -> EkCertificate:
    """Steps 1-4 of the module docstring."""
    # 1. one DER certificate, valid now, not a CA
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as e:
        raise EkCertificateInvalid("the EK certificate is not a DER X.509 certificate") from e
    if not _valid_at(cert, now):
        raise EkCertificateInvalid(
            f"the EK certificate is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d})"
        )
    if _is_ca(cert):
        raise EkCertificateInvalid("the EK certificate is a CA certificate")
    # 2. issued by a CA of the bundle
    issuer = cert.issuer.rfc4514_string()
    if not _issuer(cert, anchors, now):
        raise EkCertificateInvalid(
            f"the EK certificate (issuer {issuer!r}) was not issued by a CA of the broker's "
            "tpm_ek_ca_bundle"
        )
    # 3. a key the broker can make credentials for
    try:
        key = cert.public_key()
    except ValueError as e:
        raise EkCertificateInvalid("the EK certificate's public key does not parse") from e
    usage = extension_value(cert, x509.KeyUsage)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size != EK_RSA_BITS:
            raise EkCertificateInvalid(f"an RSA EK of {key.key_size} bits, expected 2048")
        # 4. key usage
        if usage is not None and not usage.key_encipherment:
            raise EkCertificateInvalid("the RSA EK certificate does not allow keyEncipherment")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise EkCertificateInvalid(f"an ECC EK on {key.curve.name}, expected NIST P-256")
        if usage is not None and not usage.key_agreement:
            raise EkCertificateInvalid("the ECC EK certificate does not allow keyAgreement")
    else:
        raise EkCertificateInvalid("the EK is neither RSA nor ECC")
    return EkCertificate(cert, key, ek_fingerprint(key), issuer)
