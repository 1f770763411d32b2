"""AMD chain checks with the pinned roots and trustee's real VCEK/VLEK vectors.

Where a check needs a certificate AMD would never issue (wrong algorithm, malformed
extension, re-issued ASK), a synthetic PKI from ``snp_synthetic_pki`` stands in for AMD.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from snp_synthetic_pki import E2E_EVIDENCE, der_int, load_json, synthetic_amd

from custodes.attestation.verifiers.snp.certs import (
    OID_HWID,
    OID_SNP_SPL,
    OID_UCODE_SPL,
    AmdRoots,
    ChainVerifier,
    VekInfo,
    check_amd_signature,
    load_der_certificate,
    pinned_roots,
)
from custodes.attestation.verifiers.snp.errors import VekChainInvalid, VekExtensionInvalid
from custodes.attestation.verifiers.snp.report import SigningKey
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion
from custodes.errors import ConfigError

SNP_DATA = Path("trustee/deps/verifier/test_data/snp")
IN_2024 = dt.datetime(2024, 6, 1, tzinfo=dt.UTC).timestamp()
IN_2025 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp()
TEST_REPORT_CHIP_ID = bytes.fromhex(
    "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f"
    "8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
)


def _der(vectors: Path, name: str) -> bytes:
    return (vectors / SNP_DATA / name).read_bytes()


def _der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


@pytest.mark.parametrize("generation", list(Generation))
def test_pinned_roots_are_amd_chains(generation: Generation) -> None:
    roots = pinned_roots()[generation]
    cn = x509.NameOID.COMMON_NAME
    assert roots.ark.subject.get_attributes_for_oid(cn)[0].value == f"ARK-{generation}"
    assert roots.ask.subject.get_attributes_for_oid(cn)[0].value == f"SEV-{generation}"
    assert roots.asvk.subject.get_attributes_for_oid(cn)[0].value == f"SEV-VLEK-{generation}"
    check_amd_signature(roots.ark, roots.ark, "ARK")
    check_amd_signature(roots.ask, roots.ark, "ASK")
    check_amd_signature(roots.asvk, roots.ark, "ASVK")
    assert isinstance(roots.ark.public_key(), rsa.RSAPublicKey)
    assert roots.ark.public_key().key_size == 4096  # type: ignore[union-attr]


def test_swapped_roots_do_not_verify() -> None:
    roots = pinned_roots()[Generation.MILAN]
    with pytest.raises(VekChainInvalid):
        check_amd_signature(roots.ark, roots.ask, "ARK")
    with pytest.raises(VekChainInvalid):
        check_amd_signature(roots.ask, pinned_roots()[Generation.GENOA].ark, "ASK")


def test_bundle_must_hold_three_certificates() -> None:
    roots = pinned_roots()[Generation.MILAN]
    pem = b"".join(c.public_bytes(Encoding.PEM) for c in (roots.ask, roots.ark))
    with pytest.raises(ConfigError):
        AmdRoots.from_pem(Generation.MILAN, pem)


def test_real_vcek_chains_to_milan(vectors: Path) -> None:
    chains = ChainVerifier(pinned_roots())
    vek = chains.verify(
        _der(vectors, "test-vcek.der"), SigningKey.VCEK, Generation.MILAN, now=IN_2024
    )
    assert vek.generation is Generation.MILAN and vek.kind is SigningKey.VCEK
    assert isinstance(vek.public_key.curve, ec.SECP384R1)
    # A second call is served from the cache and still checks the validity windows.
    again = chains.verify(
        _der(vectors, "test-vcek.der"), SigningKey.VCEK, Generation.MILAN, now=IN_2024
    )
    assert again is vek
    with pytest.raises(VekChainInvalid):
        chains.verify(
            _der(vectors, "test-vcek.der"),
            SigningKey.VCEK,
            Generation.MILAN,
            now=dt.datetime(2031, 1, 1, tzinfo=dt.UTC).timestamp(),
        )


def test_real_vlek_chains_to_the_milan_asvk(vectors: Path) -> None:
    chains = ChainVerifier(pinned_roots())
    vek = chains.verify(
        _der(vectors, "test-vlek.der"), SigningKey.VLEK, Generation.MILAN, now=IN_2025
    )
    assert vek.kind is SigningKey.VLEK
    info = VekInfo.from_certificate(vek.certificate)
    assert info.hwid is None  # VLEKs name no chip
    assert (info.bootloader, info.tee, info.snp, info.microcode) == (4, 0, 24, 217)


@pytest.mark.parametrize(
    ("name", "kind", "generation"),
    [
        ("test-vlek.der", SigningKey.VCEK, Generation.MILAN),  # VLEK offered as a VCEK
        ("test-vcek.der", SigningKey.VLEK, Generation.MILAN),  # VCEK offered as a VLEK
        ("test-vcek.der", SigningKey.VCEK, Generation.GENOA),  # wrong generation
        ("test-vcek-invalid-legacy.der", SigningKey.VCEK, Generation.MILAN),  # not AMD-signed
        ("test-vcek-invalid-new.der", SigningKey.VCEK, Generation.MILAN),  # not AMD-signed
    ],
)
def test_wrong_veks_do_not_chain(
    vectors: Path, name: str, kind: SigningKey, generation: Generation
) -> None:
    with pytest.raises(VekChainInvalid):
        ChainVerifier(pinned_roots()).verify(_der(vectors, name), kind, generation, now=IN_2025)


def test_flipped_vcek_byte_breaks_its_signature(vectors: Path) -> None:
    der = bytearray(_der(vectors, "test-vcek.der"))
    der[-1] ^= 0x01  # inside the signature value; the DER still parses
    with pytest.raises(VekChainInvalid):
        ChainVerifier(pinned_roots()).verify(
            bytes(der), SigningKey.VCEK, Generation.MILAN, now=IN_2024
        )


def test_not_a_certificate(vectors: Path) -> None:
    with pytest.raises(VekChainInvalid):
        ChainVerifier(pinned_roots()).verify(
            b"\x30\x03\x02\x01\x00", SigningKey.VCEK, Generation.MILAN, now=IN_2024
        )


def test_evidence_ark_must_be_the_pinned_ark(vectors: Path) -> None:
    chains = ChainVerifier(pinned_roots())
    vcek = _der(vectors, "test-vcek.der")
    milan_ark = _der_of(pinned_roots()[Generation.MILAN].ark)
    genoa_ark = _der_of(pinned_roots()[Generation.GENOA].ark)
    chains.verify(vcek, SigningKey.VCEK, Generation.MILAN, now=IN_2024, provided_arks=[milan_ark])
    with pytest.raises(VekChainInvalid):
        chains.verify(
            vcek, SigningKey.VCEK, Generation.MILAN, now=IN_2024, provided_arks=[genoa_ark]
        )


def test_hwid_in_both_encodings(vectors: Path) -> None:
    real = VekInfo.from_certificate(load_der_certificate(_der(vectors, "test-vcek.der"), "VCEK"))
    assert real.hwid == TEST_REPORT_CHIP_ID
    assert (real.bootloader, real.tee, real.snp, real.microcode, real.fmc) == (3, 0, 8, 115, None)
    counting = bytes(range(64))
    for name in ("test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"):
        info = VekInfo.from_certificate(load_der_certificate(_der(vectors, name), "VCEK"))
        assert info.hwid == counting  # raw 64 bytes, resp. a DER OCTET STRING holding them


def test_roots_that_do_not_verify_are_refused(vectors: Path) -> None:
    amd = synthetic_amd()
    forged_ask = amd.ca(f"SEV-{amd.generation}", amd.ask_key, signer=amd.asvk_key)
    roots = AmdRoots(amd.generation, amd.roots.ark, forged_ask, amd.roots.asvk)
    tcb = TcbVersion.from_parts(bootloader=1, tee=0, snp=2, microcode=3)
    vcek, _ = amd.vek(tcb, hwid=bytes(64))
    with pytest.raises(VekChainInvalid):
        ChainVerifier({amd.generation: roots}).verify(
            vcek, SigningKey.VCEK, amd.generation, now=IN_2025
        )


def test_reissued_ask_from_the_evidence_is_used_when_ark_signed() -> None:
    amd = synthetic_amd()
    tcb = TcbVersion.from_parts(bootloader=1, tee=0, snp=2, microcode=3)
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    reissued = amd.ca(f"SEV-{amd.generation}", new_key)
    vcek, _ = amd.vek(tcb, hwid=bytes(64), issuer_key=new_key)
    chains = ChainVerifier({amd.generation: amd.roots})
    with pytest.raises(VekChainInvalid):  # the pinned ASK did not sign it
        chains.verify(vcek, SigningKey.VCEK, amd.generation, now=IN_2025)
    vek = chains.verify(
        vcek,
        SigningKey.VCEK,
        amd.generation,
        now=IN_2025,
        provided_intermediates=[_der_of(reissued)],
    )
    assert vek.kind is SigningKey.VCEK
    # An "ASK" the ARK did not sign, or that is not a CA, is refused.
    for bad in (
        amd.ca(f"SEV-{amd.generation}", new_key, signer=new_key),
        amd.ca(f"SEV-{amd.generation}", new_key, ca=False),
    ):
        with pytest.raises(VekChainInvalid):
            ChainVerifier({amd.generation: amd.roots}).verify(
                vcek,
                SigningKey.VCEK,
                amd.generation,
                now=IN_2025,
                provided_intermediates=[_der_of(bad)],
            )


def test_vek_must_use_pss_and_p384() -> None:
    amd = synthetic_amd()
    tcb = TcbVersion.from_parts(bootloader=1, tee=0, snp=2, microcode=3)
    pkcs1, _ = amd.vek(tcb, hwid=bytes(64), pss=False)
    p256, _ = amd.vek(tcb, hwid=bytes(64), key=ec.generate_private_key(ec.SECP256R1()))
    for der in (pkcs1, p256):
        with pytest.raises(VekChainInvalid):
            ChainVerifier({amd.generation: amd.roots}).verify(
                der, SigningKey.VCEK, amd.generation, now=IN_2025
            )


def test_validity_windows() -> None:
    amd = synthetic_amd()
    tcb = TcbVersion.from_parts(bootloader=1, tee=0, snp=2, microcode=3)
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    vcek, _ = amd.vek(tcb, hwid=bytes(64), not_before=start, not_after=start + dt.timedelta(1))
    chains = ChainVerifier({amd.generation: amd.roots})
    chains.verify(vcek, SigningKey.VCEK, amd.generation, now=start.timestamp() + 60)
    for when in (start.timestamp() - 1, start.timestamp() + 86_401):
        with pytest.raises(VekChainInvalid):
            chains.verify(vcek, SigningKey.VCEK, amd.generation, now=when)


def _info(**extensions: bytes | None) -> VekInfo:
    amd = synthetic_amd()
    oids = {"hwid": OID_HWID, "snp": OID_SNP_SPL, "ucode": OID_UCODE_SPL}
    tcb = TcbVersion.from_parts(bootloader=1, tee=0, snp=2, microcode=209)
    der, _ = amd.vek(tcb, hwid=bytes(64), extensions={oids[k]: v for k, v in extensions.items()})
    return VekInfo.from_certificate(load_der_certificate(der, "VCEK"))


def test_two_byte_spl_and_turin_hwid_sizes() -> None:
    assert _info().microcode == 209  # DER 02 02 00 d1
    assert _info(hwid=bytes(range(8))).hwid == bytes(range(8))
    assert _info(hwid=b"\x04\x08" + bytes(range(8))).hwid == bytes(range(8))


@pytest.mark.parametrize(
    "extensions",
    [
        {"snp": None},  # missing
        {"ucode": None},
        {"snp": b"\x02\x01"},  # truncated
        {"snp": b"\x04\x01\x02"},  # not an INTEGER
        {"snp": b"\x02\x01\xff"},  # negative
        {"snp": b"\x02\x02\x00\x05"},  # non-minimal
        {"ucode": b"\x02\x02\x01\x00"},  # 256
        {"ucode": b"\x02\x03\x00\x00\xff"},
        {"snp": der_int(2) + b"\x00"},  # trailing byte
        {"hwid": bytes(63)},
        {"hwid": b"\x04\x3f" + bytes(63)},
        {"hwid": b"\x04\x41" + bytes(64)},
        {"hwid": b"\x04\x40" + bytes(63)},
    ],
)
def test_malformed_extensions_are_refused(extensions: dict[str, bytes | None]) -> None:
    with pytest.raises(VekExtensionInvalid):
        _info(**extensions)


def test_e2e_vcek_carries_raw_hwid(vectors: Path) -> None:
    e2e = load_json(vectors / E2E_EVIDENCE)
    cert = load_der_certificate(bytes(e2e["cert_chain"][0]["data"]), "VCEK")
    info = VekInfo.from_certificate(cert)
    assert info.hwid == bytes(e2e["attestation_report"]["chip_id"])
    assert cert.fingerprint(hashes.SHA256()) != b""
