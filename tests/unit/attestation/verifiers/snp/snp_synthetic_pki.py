"""A synthetic AMD PKI for the SNP tests (not a test module).

Some checks can only be reached with a report signed by a VCEK whose extensions we choose
(hwID or TCB mismatches, Turin, VLEK at VMPL 0). No real AMD key can sign those, so the tests
build their own ARK/ASK/ASVK (RSA-2048 here, RSASSA-PSS/SHA-384 like AMD's), issue VCEKs and
VLEKs with AMD's extensions, re-sign reports derived from the real ones, and inject the roots
through ``SnpVerifier(..., roots=...)``. Everything else in the tests uses AMD's real roots.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, ObjectIdentifier

from custodes.attestation.verifiers.snp.certs import (
    OID_BL_SPL,
    OID_FMC_SPL,
    OID_HWID,
    OID_SNP_SPL,
    OID_TEE_SPL,
    OID_UCODE_SPL,
    AmdRoots,
)
from custodes.attestation.verifiers.snp.evidence import report_to_json
from custodes.attestation.verifiers.snp.report import LAYOUT, SIGNED_SIZE
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion
from custodes.types.json import JsonObject

NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2034, 1, 1, tzinfo=dt.UTC)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

E2E_EVIDENCE = Path("trustee/attestation-service/tests/e2e/evidence.json")


def load_json(path: Path) -> JsonObject:
    with path.open() as f:
        value: JsonObject = json.load(f)
    return value


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der_int(value: int) -> bytes:
    body = value.to_bytes(1, "big") if value < 0x80 else b"\x00" + value.to_bytes(1, "big")
    return bytes([0x02, len(body)]) + body


@dataclass(frozen=True)
class SyntheticAmd:
    generation: Generation
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey
    roots: AmdRoots

    def ca(
        self,
        subject: str,
        key: rsa.RSAPrivateKey,
        *,
        signer: rsa.RSAPrivateKey | None = None,
        ca: bool = True,
    ) -> x509.Certificate:
        """A CA certificate named as issued by this ARK, signed by ``signer`` (the ARK)."""
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(self.roots.ark.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer or self.ark_key, hashes.SHA384(), rsa_padding=PSS)
        )

    def vek(
        self,
        tcb: TcbVersion,
        *,
        hwid: bytes | None,
        vlek: bool = False,
        extensions: dict[ObjectIdentifier, bytes | None] | None = None,
        not_before: dt.datetime = NOT_BEFORE,
        not_after: dt.datetime = NOT_AFTER,
        key: ec.EllipticCurvePrivateKey | None = None,
        issuer_key: rsa.RSAPrivateKey | None = None,
        issuer: x509.Name | None = None,
        pss: bool = True,
    ) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        """A VCEK (or VLEK) DER for ``tcb``; ``extensions`` overrides raw values (None drops)."""
        key = key or ec.generate_private_key(ec.SECP384R1())
        values: dict[ObjectIdentifier, bytes | None] = {
            OID_BL_SPL: der_int(tcb.bootloader),
            OID_TEE_SPL: der_int(tcb.tee),
            OID_SNP_SPL: der_int(tcb.snp),
            OID_UCODE_SPL: der_int(tcb.microcode),
        }
        if tcb.fmc is not None:
            values[OID_FMC_SPL] = der_int(tcb.fmc)
        if hwid is not None:
            values[OID_HWID] = hwid
        values.update(extensions or {})
        intermediate = self.roots.asvk if vlek else self.roots.ask
        builder = (
            x509.CertificateBuilder()
            .subject_name(name("SEV-VLEK" if vlek else "SEV-VCEK"))
            .issuer_name(issuer or intermediate.subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for oid, value in values.items():
            if value is not None:
                builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), False)
        signer = issuer_key or (self.asvk_key if vlek else self.ask_key)
        cert = builder.sign(signer, hashes.SHA384(), rsa_padding=PSS if pss else None)
        return cert.public_bytes(Encoding.DER), key


@cache
def synthetic_amd(generation: Generation = Generation.GENOA) -> SyntheticAmd:
    ark_key, ask_key, asvk_key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)
    )

    def cert(subject: str, key: rsa.RSAPrivateKey) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(f"ARK-{generation}"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ark_key, hashes.SHA384(), rsa_padding=PSS)
        )

    roots = AmdRoots(
        generation=generation,
        ark=cert(f"ARK-{generation}", ark_key),
        ask=cert(f"SEV-{generation}", ask_key),
        asvk=cert(f"SEV-VLEK-{generation}", asvk_key),
    )
    return SyntheticAmd(generation, ark_key, ask_key, asvk_key, roots)


def patch(raw: bytes, field: str, value: bytes | int) -> bytes:
    """``raw`` with one layout field replaced (ints little-endian, sized to the field)."""
    offset, size = LAYOUT[field]
    data = value.to_bytes(size, "little") if isinstance(value, int) else value
    assert len(data) == size
    return raw[:offset] + data + raw[offset + size :]


def sign(raw: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``raw`` re-signed by ``key`` (r and s little-endian, zero-extended to 72 bytes)."""
    der = key.sign(raw[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    raw = patch(raw, "signature_r", r.to_bytes(72, "little"))
    return patch(raw, "signature_s", s.to_bytes(72, "little"))


def evidence(raw: bytes, chain: list[tuple[str, bytes]] | None) -> JsonObject:
    """Upstream's evidence JSON for a binary report and (cert_type, DER) entries."""
    return {
        "attestation_report": report_to_json(raw),
        "cert_chain": None
        if chain is None
        else [{"cert_type": t, "data": list(d)} for t, d in chain],
    }
