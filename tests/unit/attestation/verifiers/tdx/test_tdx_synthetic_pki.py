"""Full-path negatives that need collateral Intel never signed (a revoked TCB, a revoked PCK
certificate, OutOfDate with advisories), with a synthetic PKI.

What is synthetic, and why: no real revoked or out-of-date collateral with its quote exists
in the vectors, so a test root CA (passed as ``root_ca_der``), PCK Platform CA, PCK leaf and
TCB signing certificate are generated here, and the TCB info / QE identity / CRLs are signed
with them. What stays real: dcap-qvl's sample quote header, TD report body and attestation
signature, its QE report (re-signed by the test PCK key), the PCK leaf's SGX extension (copied
byte for byte, so FMSPC and TCB components are the real platform's) and the TCB info and QE
identity contents. dcap-qvl runs for real on all of it.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tdx.errors import TcbRevoked
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.errors import ChainInvalid, CollateralError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

SGX_EXTENSION = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
NOW = datetime(2025, 6, 19, 12, tzinfo=UTC).timestamp()  # inside the sample's TCB info window


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    extension: x509.Extension[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=not ca,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer or _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2018, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if extension is not None:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _crl(issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: list[int]) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(datetime(2025, 6, 1, tzinfo=UTC))
        .next_update(datetime(2025, 8, 1, tzinfo=UTC))
        .add_extension(x509.CRLNumber(1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(datetime(2025, 6, 1, tzinfo=UTC))
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    pca_key: ec.EllipticCurvePrivateKey
    pca: x509.Certificate
    pck: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_signer: x509.Certificate
    quote: bytes
    sample_collateral: JsonObject

    def collateral(
        self,
        *,
        status: str = "UpToDate",
        advisories: list[str] | None = None,
        revoked: list[int] | None = None,
        pck_crl_key: ec.EllipticCurvePrivateKey | None = None,
        root_crl_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> JsonObject:
        tcb_info = json.loads(self.sample_collateral["tcb_info"])
        for level in tcb_info["tcbLevels"]:
            level["tcbStatus"] = status
            if advisories:
                level["advisoryIDs"] = advisories
        tcb_text = json.dumps(tcb_info, separators=(",", ":"))
        qe_text = self.sample_collateral["qe_identity"]
        chain = _pem(self.tcb_signer, self.root)
        return {
            "pck_crl_issuer_chain": _pem(self.pca, self.root),
            "root_ca_crl": _crl(self.root, root_crl_key or self.root_key, []).hex(),
            "pck_crl": _crl(self.pca, pck_crl_key or self.pca_key, revoked or []).hex(),
            "tcb_info_issuer_chain": chain,
            "tcb_info": tcb_text,
            "tcb_info_signature": _raw_signature(self.tcb_key, tcb_text.encode()).hex(),
            "qe_identity_issuer_chain": chain,
            "qe_identity": qe_text,
            "qe_identity_signature": _raw_signature(self.tcb_key, qe_text.encode()).hex(),
        }


@pytest.fixture(scope="module")
def pki(vectors: Path) -> Pki:
    sample = vectors / "dcap-qvl"
    real = TdxQuote.from_bytes((sample / "tdx_quote").read_bytes())
    real_leaf = x509.load_pem_x509_certificates(real.signature_data.pck_chain_pem.rstrip(b"\x00"))[
        0
    ]
    root_key, pca_key, pck_key, tcb_key = _key(), _key(), _key(), _key()
    root = _cert("Intel SGX Root CA", root_key, None, root_key, ca=True)
    pca = _cert("Intel SGX PCK Platform CA", pca_key, root.subject, root_key, ca=True)
    pck = _cert(
        "Intel SGX PCK Certificate",
        pck_key,
        pca.subject,
        pca_key,
        ca=False,
        extension=real_leaf.extensions.get_extension_for_oid(SGX_EXTENSION),
    )
    tcb_signer = _cert("Intel SGX TCB Signing", tcb_key, root.subject, root_key, ca=False)
    # Same header, body, attestation signature and key, QE report and authentication data;
    # QE report signature and PCK chain replaced.
    sig = real.signature_data
    chain = _pem(pck, pca, root).encode() + b"\x00"
    certification = (
        sig.qe_report
        + _raw_signature(pck_key, sig.qe_report)
        + struct.pack("<H", len(sig.qe_auth_data))
        + sig.qe_auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    signature_data = (
        sig.signature
        + sig.attestation_key
        + struct.pack("<HI", 6, len(certification))
        + certification
    )
    quote = real.raw[:632] + struct.pack("<I", len(signature_data)) + signature_data
    sample_collateral = json.loads((sample / "tdx_quote_collateral.json").read_text())
    return Pki(root_key, root, pca_key, pca, pck, tcb_key, tcb_signer, quote, sample_collateral)


def _verify(
    pki: Pki, collateral: JsonObject, tmp_path: Path, *, custom_root: bool = True
) -> JsonObject:
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(collateral))
    config = TdxVerifierConfig(
        collateral_path=path,
        clock=FrozenClock(NOW),
        root_ca_der=pki.root.public_bytes(serialization.Encoding.DER) if custom_root else None,
    )
    request = VerificationRequest(
        tee=Tee.TDX,
        evidence={"quote": base64.b64encode(pki.quote).decode()},
        report_data=TdxQuote.from_bytes(pki.quote).report_data,
    )
    [result] = TdxVerifier(config).verify(request)
    return result.claims


def test_tdx_synthetic_pki_up_to_date_verifies(pki: Pki, tmp_path: Path) -> None:
    claims = _verify(pki, pki.collateral(), tmp_path)
    assert (claims["tcb_status"], claims["advisory_ids"]) == ("UpToDate", [])


def test_tdx_synthetic_revoked_tcb_is_refused(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(TcbRevoked):
        _verify(pki, pki.collateral(status="Revoked"), tmp_path)


def test_tdx_synthetic_out_of_date_is_reported_with_advisories(pki: Pki, tmp_path: Path) -> None:
    claims = _verify(
        pki, pki.collateral(status="OutOfDate", advisories=["INTEL-SA-00837"]), tmp_path
    )
    assert claims["tcb_status"] == "OutOfDate"
    assert claims["advisory_ids"] == ["INTEL-SA-00837"]


def test_tdx_synthetic_revoked_pck_certificate_is_chain_invalid(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ChainInvalid):
        _verify(pki, pki.collateral(revoked=[pki.pck.serial_number]), tmp_path)


def test_tdx_synthetic_chain_is_refused_under_intel_root(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises((ChainInvalid, CollateralError)):
        _verify(pki, pki.collateral(), tmp_path, custom_root=False)


@pytest.mark.parametrize("crl", ["pck", "root"])
def test_tdx_synthetic_crl_by_wrong_key_is_collateral_error(
    pki: Pki, tmp_path: Path, crl: str
) -> None:
    wrong = _key()
    if crl == "pck":
        collateral = pki.collateral(pck_crl_key=wrong)
    else:
        collateral = pki.collateral(root_crl_key=wrong)
    with pytest.raises(CollateralError):
        _verify(pki, collateral, tmp_path)
