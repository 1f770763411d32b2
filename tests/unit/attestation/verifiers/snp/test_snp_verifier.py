"""SnpVerifier end to end: trustee's real Genoa evidence, and one negative per checklist step.

Real data first: the e2e evidence (v3 Genoa report + VCEK, signed by AMD) verifies against the
pinned roots; its negatives flip bytes of it. It carries a full 64-byte REPORT_DATA (no trailing
zero bytes), so the request's report_data is those 64 bytes. The v2 Milan test report and the
VMPL 1 VLEK report serve the version and VMPL negatives.

Checks that need a report signed by a VCEK with chosen extensions (hwID/TCB mismatches, Turin,
VLEK at VMPL 0, a 48-byte digest padded with zeros, a sha256 HOST_DATA) use the synthetic AMD
PKI of ``snp_synthetic_pki``, injected through ``SnpVerifier(config, roots=...)``.
KDS is a fake fetcher (no network in tests) that serves the real VCEK and records URLs.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from snp_synthetic_pki import (
    E2E_EVIDENCE,
    SyntheticAmd,
    der_int,
    evidence,
    load_json,
    patch,
    sign,
    synthetic_amd,
)

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp.certs import OID_FMC_SPL, OID_SNP_SPL, pinned_roots
from custodes.attestation.verifiers.snp.errors import (
    HostDataMismatch,
    HwIdMismatch,
    ProcessorUnsupported,
    ReportDataMismatch,
    ReportSignatureInvalid,
    ReportVersionUnsupported,
    SignatureAlgorithmUnsupported,
    TcbMismatch,
    VekChainInvalid,
    VekExtensionInvalid,
    VekUnavailable,
    VmplNotZero,
)
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

SNP_DATA = Path("trustee/deps/verifier/test_data/snp")
JAN_2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
JUN_2025 = dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp()
R = "attestation_report"


class RecordingFetcher:
    """Fake KDS transport: serves one DER body and records every URL."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.body


@pytest.fixture
def e2e(vectors: Path) -> JsonObject:
    return load_json(vectors / E2E_EVIDENCE)


@pytest.fixture
def e2e_vcek(e2e: JsonObject) -> bytes:
    return bytes(e2e["cert_chain"][0]["data"])


def _verifier(
    now: float = JAN_2026,
    *,
    store: Path | None = None,
    fetcher: RecordingFetcher | None = None,
    amd: SyntheticAmd | None = None,
) -> SnpVerifier:
    config = SnpVerifierConfig(vcek_store_dir=store, kds_fetcher=fetcher, clock=FrozenClock(now))
    return SnpVerifier(config, roots=None if amd is None else {amd.generation: amd.roots})


def _request(
    evidence: object, report_data: bytes | None = None, init_data: bytes | None = None
) -> VerificationRequest:
    if report_data is None:
        report_data = SnpEvidence.from_json(evidence).report.report_data
    return VerificationRequest(Tee.SNP, evidence, report_data, init_data)


def _changed(e2e: JsonObject, *path: str | int, value: Any) -> JsonObject:
    changed = copy.deepcopy(e2e)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


# --- the real evidence ---------------------------------------------------------------------


def test_real_genoa_evidence_verifies(e2e: JsonObject) -> None:
    report_data = bytes(e2e[R]["report_data"])
    [result] = _verifier().verify(_request(e2e, report_data))
    assert result.tee_class is TeeClass.CPU
    assert result.claims == {
        "policy_abi_major": 0,
        "policy_abi_minor": 0,
        "policy_smt_allowed": True,
        "policy_migrate_ma": False,
        "policy_debug_allowed": False,
        "policy_single_socket": False,
        "reported_tcb_bootloader": 10,
        "reported_tcb_tee": 0,
        "reported_tcb_snp": 23,
        "reported_tcb_microcode": 25,
        "platform_tsme_enabled": False,
        "platform_smt_enabled": True,
        "measurement": "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4"
        "ae62a36d75c837974dd50b315506e73e",
        "report_data": report_data.hex(),
        "init_data": "00" * 32,
        "chip_id": bytes(e2e[R]["chip_id"]).hex(),
    }


def test_repeated_verification_is_stable(e2e: JsonObject) -> None:
    verifier = _verifier()
    first = verifier.verify(_request(e2e))
    assert verifier.verify(_request(e2e)) == first
    assert verifier.verify(_request(e2e)) == first


def test_zero_host_data_matches_a_zero_sha256_digest(e2e: JsonObject) -> None:
    [result] = _verifier().verify(_request(e2e, init_data=bytes(32)))
    assert result.claims["init_data"] == "00" * 32


def test_evidence_ark_is_accepted_when_it_is_the_pinned_one(e2e: JsonObject) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    ark = pinned_roots()[Generation.GENOA].ark.public_bytes(Encoding.DER)
    chain = [*e2e["cert_chain"], {"cert_type": "ARK", "data": list(ark)}]
    assert _verifier().verify(_request({**e2e, "cert_chain": chain}))


# --- (1) parse -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [47, 49])
def test_wrong_length_field_is_malformed(e2e: JsonObject, size: int) -> None:
    bad = _changed(e2e, R, "measurement", value=[0] * size)
    with pytest.raises(MalformedEvidence):
        _verifier().verify(_request(bad, b""))


def test_two_vceks_are_malformed(e2e: JsonObject) -> None:
    bad = {**e2e, "cert_chain": e2e["cert_chain"] * 2}
    with pytest.raises(MalformedEvidence):
        _verifier().verify(_request(bad))


def test_wrong_tee_is_a_programming_error(e2e: JsonObject) -> None:
    with pytest.raises(ValueError, match="tdx"):
        _verifier().verify(VerificationRequest(Tee.TDX, e2e, b""))


# --- (2) version ---------------------------------------------------------------------------


def test_v2_report_is_refused_although_its_signature_is_fine(vectors: Path) -> None:
    raw = (vectors / SNP_DATA / "test-report.bin").read_bytes()
    vcek = (vectors / SNP_DATA / "test-vcek.der").read_bytes()
    with pytest.raises(ReportVersionUnsupported):
        _verifier(JUN_2025).verify(_request(evidence(raw, [("VCEK", vcek)])))


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFFFFFF])
def test_other_versions_are_refused(e2e: JsonObject, version: int) -> None:
    with pytest.raises(ReportVersionUnsupported):
        _verifier().verify(_request(_changed(e2e, R, "version", value=version)))


# --- (3) signature algorithm ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("sig_algo", 2), ("sig_algo", 0), ("key_info", 7 << 2)]
)
def test_unsupported_signature_algorithm_or_key(e2e: JsonObject, field: str, value: int) -> None:
    with pytest.raises(SignatureAlgorithmUnsupported):
        _verifier().verify(_request(_changed(e2e, R, field, value=value)))


# --- (4) VMPL ------------------------------------------------------------------------------


def test_real_vlek_report_at_vmpl1_is_refused(vectors: Path) -> None:
    raw = (vectors / SNP_DATA / "test-vlek-report.bin").read_bytes()
    vlek = (vectors / SNP_DATA / "test-vlek.der").read_bytes()
    with pytest.raises(VmplNotZero):
        _verifier(JUN_2025).verify(_request(evidence(raw, [("VLEK", vlek)])))


def test_vmpl1_is_refused(e2e: JsonObject) -> None:
    with pytest.raises(VmplNotZero):
        _verifier().verify(_request(_changed(e2e, R, "vmpl", value=1)))


# --- (5) processor, VEK source, chain ------------------------------------------------------


@pytest.mark.parametrize(("family", "model"), [(0x17, 0x31), (0x19, 0x30), (0x1B, 0x00)])
def test_unknown_processor(e2e: JsonObject, family: int, model: int) -> None:
    bad = _changed(_changed(e2e, R, "cpuid_fam_id", value=family), R, "cpuid_mod_id", value=model)
    with pytest.raises(ProcessorUnsupported):
        _verifier().verify(_request(bad))


def test_vlek_cert_as_the_genoa_vcek(e2e: JsonObject, vectors: Path) -> None:
    vlek = (vectors / SNP_DATA / "test-vlek.der").read_bytes()
    bad = {**e2e, "cert_chain": [{"cert_type": "VCEK", "data": list(vlek)}]}
    with pytest.raises(VekChainInvalid):
        _verifier().verify(_request(bad))


@pytest.mark.parametrize("name", ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"])
def test_invalid_hwid_vectors_do_not_chain(e2e: JsonObject, vectors: Path, name: str) -> None:
    der = (vectors / SNP_DATA / name).read_bytes()
    bad = {**e2e, "cert_chain": [{"cert_type": "VCEK", "data": list(der)}]}
    with pytest.raises(VekChainInvalid):
        _verifier().verify(_request(bad))


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(2032, 5, 28, tzinfo=dt.UTC),  # VCEK notAfter is 2032-05-27 17:57:03
        dt.datetime(2025, 5, 27, tzinfo=dt.UTC),  # VCEK notBefore is 2025-05-27 17:57:03
    ],
)
def test_vcek_outside_its_validity(e2e: JsonObject, when: dt.datetime) -> None:
    with pytest.raises(VekChainInvalid):
        _verifier(when.timestamp()).verify(_request(e2e))


def test_foreign_ark_in_the_evidence(e2e: JsonObject) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    milan_ark = pinned_roots()[Generation.MILAN].ark.public_bytes(Encoding.DER)
    chain = [*e2e["cert_chain"], {"cert_type": "ARK", "data": list(milan_ark)}]
    with pytest.raises(VekChainInvalid):
        _verifier().verify(_request({**e2e, "cert_chain": chain}))


def test_no_vcek_anywhere(e2e: JsonObject) -> None:
    with pytest.raises(VekUnavailable):
        _verifier().verify(_request({**e2e, "cert_chain": None}))
    only_ask = [{"cert_type": "ASK", "data": [0x30, 0]}]
    with pytest.raises(VekUnavailable):
        _verifier().verify(_request({**e2e, "cert_chain": only_ask}))


def test_fetcher_is_used_when_the_chain_is_absent_and_cached(
    e2e: JsonObject, e2e_vcek: bytes
) -> None:
    fetcher = RecordingFetcher(e2e_vcek)
    verifier = _verifier(fetcher=fetcher)
    bare = {**e2e, "cert_chain": None}
    first = verifier.verify(_request(bare))
    assert fetcher.urls == [
        "https://kdsintf.amd.com/vcek/v1/Genoa/"
        + bytes(e2e[R]["chip_id"]).hex()
        + "?blSPL=10&teeSPL=00&snpSPL=23&ucodeSPL=25"
    ]
    assert verifier.verify(_request(bare)) == first
    assert len(fetcher.urls) == 1  # the second verification made no fetch


def test_fetcher_is_not_used_when_the_evidence_has_the_vcek(
    e2e: JsonObject, e2e_vcek: bytes
) -> None:
    fetcher = RecordingFetcher(e2e_vcek)
    _verifier(fetcher=fetcher).verify(_request(e2e))
    assert fetcher.urls == []


def test_offline_store(e2e: JsonObject, e2e_vcek: bytes, tmp_path: Path) -> None:
    folder = tmp_path / "vcek" / bytes(e2e[R]["chip_id"]).hex()
    folder.mkdir(parents=True)
    (folder / "bl10_tee00_snp23_ucode25_vcek.der").write_bytes(e2e_vcek)
    fetcher = RecordingFetcher(b"unused")
    bare = {**e2e, "cert_chain": None}
    assert _verifier(store=tmp_path, fetcher=fetcher).verify(_request(bare))
    assert fetcher.urls == []


def test_offline_store_flat_file_with_the_wrong_vcek(
    e2e: JsonObject, vectors: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "vcek" / bytes(e2e[R]["chip_id"]).hex()
    folder.mkdir(parents=True)
    (folder / "vcek.der").write_bytes((vectors / SNP_DATA / "test-vcek.der").read_bytes())
    with pytest.raises(VekChainInvalid):  # a Milan VCEK cannot vouch for a Genoa report
        _verifier(store=tmp_path).verify(_request({**e2e, "cert_chain": None}))


# --- (7) report signature ------------------------------------------------------------------


def test_flipped_signature_byte(e2e: JsonObject) -> None:
    r = list(e2e[R]["signature"]["r"])
    r[0] ^= 0x01
    with pytest.raises(ReportSignatureInvalid):
        _verifier().verify(_request(_changed(e2e, R, "signature", "r", value=r)))


@pytest.mark.parametrize("field", ["measurement", "report_data", "host_data", "family_id"])
def test_flipped_report_byte(e2e: JsonObject, field: str) -> None:
    value = list(e2e[R][field])
    value[-1] ^= 0x80
    bad = _changed(e2e, R, field, value=value)
    with pytest.raises(ReportSignatureInvalid):
        _verifier().verify(_request(bad))


def test_signature_with_high_zero_bytes_set(e2e: JsonObject) -> None:
    s = list(e2e[R]["signature"]["s"])
    s[71] = 1  # beyond the 48 significant bytes: s no longer fits P-384
    with pytest.raises(ReportSignatureInvalid):
        _verifier().verify(_request(_changed(e2e, R, "signature", "s", value=s)))


# --- (8) report data -----------------------------------------------------------------------


def test_report_data_off_by_one_byte(e2e: JsonObject) -> None:
    report_data = bytearray(e2e[R]["report_data"])
    report_data[17] ^= 0x01
    with pytest.raises(ReportDataMismatch):
        _verifier().verify(_request(e2e, bytes(report_data)))


def test_report_data_digest_of_65_bytes(e2e: JsonObject) -> None:
    with pytest.raises(ReportDataMismatch):
        _verifier().verify(_request(e2e, bytes(e2e[R]["report_data"]) + b"\x00"))


def test_report_data_prefix_is_not_enough(e2e: JsonObject) -> None:
    # Only D || zeros matches; the first 48 bytes of a 64-byte REPORT_DATA do not.
    with pytest.raises(ReportDataMismatch):
        _verifier().verify(_request(e2e, bytes(e2e[R]["report_data"])[:48]))


# --- (9) host data -------------------------------------------------------------------------


def test_host_data_mismatch(e2e: JsonObject) -> None:
    with pytest.raises(HostDataMismatch):
        _verifier().verify(_request(e2e, init_data=hashlib.sha256(b"init").digest()))


@pytest.mark.parametrize("size", [48, 64, 20])
def test_init_data_digest_that_does_not_fit_is_refused(e2e: JsonObject, size: int) -> None:
    # All-zero digests: truncating them to 32 bytes (upstream) would "match" HOST_DATA.
    with pytest.raises(HostDataMismatch):
        _verifier().verify(_request(e2e, init_data=bytes(size)))


# --- synthetic PKI: checks only a re-signed report reaches -------------------------------


def _resigned(
    e2e: JsonObject,
    amd: SyntheticAmd,
    *,
    fields: dict[str, bytes | int] | None = None,
    hwid: bytes | str | None = "chip_id",
    vlek: bool = False,
    extensions: dict[Any, bytes | None] | None = None,
    cert_tcb: Any = None,
    chain: bool = True,
) -> tuple[JsonObject, bytes]:
    """The e2e report with ``fields`` changed, re-signed by a fresh synthetic VEK."""
    raw = SnpEvidence.from_json(e2e).report.raw
    for name, value in (fields or {}).items():
        raw = patch(raw, name, value)
    report = SnpReport.from_bytes(raw)
    der, key = amd.vek(
        cert_tcb or report.reported_tcb,
        hwid=report.chip_id if hwid == "chip_id" else hwid,  # type: ignore[arg-type]
        vlek=vlek,
        extensions=extensions,
    )
    raw = sign(raw, key)
    entries = [("VLEK" if vlek else "VCEK", der)] if chain else None
    return evidence(raw, entries), der


def test_synthetic_baseline_verifies(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    good, _ = _resigned(e2e, amd)
    assert _verifier(amd=amd).verify(_request(good))
    with pytest.raises(VekChainInvalid):  # and AMD's real roots do not accept it
        _verifier().verify(_request(good))


def test_hwid_mismatch(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    bad, _ = _resigned(e2e, amd, hwid=bytes(range(64)))
    with pytest.raises(HwIdMismatch):
        _verifier(amd=amd).verify(_request(bad))


def test_vcek_without_hwid(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    bad, _ = _resigned(e2e, amd, hwid=None)
    with pytest.raises(HwIdMismatch):
        _verifier(amd=amd).verify(_request(bad))


def test_masked_chip_id_with_a_vcek(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    real_chip = bytes(e2e[R]["chip_id"])
    bad, _ = _resigned(e2e, amd, fields={"chip_id": bytes(64), "key_info": 0b10}, hwid=real_chip)
    with pytest.raises(HwIdMismatch):
        _verifier(amd=amd).verify(_request(bad))


@pytest.mark.parametrize("spl", ["bootloader", "tee", "snp", "microcode"])
def test_tcb_mismatch(e2e: JsonObject, spl: str) -> None:
    from custodes.attestation.verifiers.snp.tcb import TcbVersion

    amd = synthetic_amd()
    parts = {"bootloader": 10, "tee": 0, "snp": 23, "microcode": 25}
    parts[spl] += 1
    bad, _ = _resigned(e2e, amd, cert_tcb=TcbVersion.from_parts(**parts))
    with pytest.raises(TcbMismatch):
        _verifier(amd=amd).verify(_request(bad))


def test_malformed_vek_extension(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    bad, _ = _resigned(e2e, amd, extensions={OID_SNP_SPL: b"\x02\x01"})
    with pytest.raises(VekExtensionInvalid):
        _verifier(amd=amd).verify(_request(bad))
    missing, _ = _resigned(e2e, amd, extensions={OID_SNP_SPL: None})
    with pytest.raises(VekExtensionInvalid):
        _verifier(amd=amd).verify(_request(missing))


def test_padded_48_byte_digest_and_sha256_host_data(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    digest = hashlib.sha384(b"runtime data").digest()
    init = hashlib.sha256(b'version = "0.1.0"\n').digest()
    good, _ = _resigned(e2e, amd, fields={"report_data": digest + bytes(16), "host_data": init})
    [result] = _verifier(amd=amd).verify(_request(good, digest, init))
    assert result.claims["init_data"] == init.hex()
    assert result.claims["report_data"] == (digest + bytes(16)).hex()
    with pytest.raises(HostDataMismatch):
        _verifier(amd=amd).verify(_request(good, digest, hashlib.sha256(b"other").digest()))
    with pytest.raises(ReportDataMismatch):
        _verifier(amd=amd).verify(_request(good, digest + b"\x01"))


def test_vlek_at_vmpl0(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    fields: dict[str, bytes | int] = {"key_info": 1 << 2 | 1 << 1, "chip_id": bytes(64)}
    good, vlek = _resigned(e2e, amd, fields=fields, hwid=None, vlek=True)
    [result] = _verifier(amd=amd).verify(_request(good))
    assert result.claims["chip_id"] == "00" * 64
    # A VLEK is never looked up elsewhere: without it in the evidence there is none.
    bare, _ = _resigned(e2e, amd, fields=fields, hwid=None, vlek=True, chain=False)
    with pytest.raises(VekUnavailable):
        _verifier(amd=amd, fetcher=RecordingFetcher(vlek)).verify(_request(bare))
    # Offered as a VCEK it is not used for a VLEK-signed report.
    as_vcek = {**good, "cert_chain": [{"cert_type": "VCEK", "data": list(vlek)}]}
    with pytest.raises(VekUnavailable):
        _verifier(amd=amd).verify(_request(as_vcek))


def test_report_without_cpuid_takes_the_generation_from_the_vek_issuer(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    zeros: dict[str, bytes | int] = {"cpuid_fam_id": 0, "cpuid_mod_id": 0, "cpuid_step": 0}
    good, der = _resigned(e2e, amd, fields=zeros)
    assert _verifier(amd=amd).verify(_request(good))
    bare, _ = _resigned(e2e, amd, fields=zeros, chain=False)
    with pytest.raises(VekUnavailable):  # the KDS product name is unknown
        _verifier(amd=amd, fetcher=RecordingFetcher(der)).verify(_request(bare))
    with pytest.raises(ProcessorUnsupported):  # no pinned ASK issued this VCEK
        _verifier().verify(_request(good))


_TURIN_TCB = bytes([1, 2, 0, 6, 0, 0, 0, 82])  # fmc 1, bl 2, tee 0, snp 6, ucode 82


def _turin_fields() -> dict[str, bytes | int]:
    fields: dict[str, bytes | int] = {"cpuid_fam_id": 0x1A, "cpuid_mod_id": 0x02}
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        fields[name] = _TURIN_TCB
    return fields


def test_turin_report_with_8_byte_hwid_and_kds(e2e: JsonObject) -> None:
    amd = synthetic_amd(Generation.TURIN)
    chip8 = bytes(e2e[R]["chip_id"])[:8]
    good, der = _resigned(e2e, amd, fields=_turin_fields(), hwid=chip8)
    [result] = _verifier(amd=amd).verify(_request(good))
    assert result.claims["reported_tcb_fmc"] == 1
    assert result.claims["reported_tcb_microcode"] == 82
    fetcher = RecordingFetcher(der)
    _verifier(amd=amd, fetcher=fetcher).verify(_request({**good, "cert_chain": None}))
    assert fetcher.urls == [
        f"https://kdsintf.amd.com/vcek/v1/Turin/{chip8.hex()}"
        "?fmcSPL=01&blSPL=02&teeSPL=00&snpSPL=06&ucodeSPL=82"
    ]


def test_turin_fmc_must_be_certified(e2e: JsonObject) -> None:
    amd = synthetic_amd(Generation.TURIN)
    wrong, _ = _resigned(e2e, amd, fields=_turin_fields(), extensions={OID_FMC_SPL: der_int(2)})
    with pytest.raises(TcbMismatch):
        _verifier(amd=amd).verify(_request(wrong))
    missing, _ = _resigned(e2e, amd, fields=_turin_fields(), extensions={OID_FMC_SPL: None})
    with pytest.raises(VekExtensionInvalid):
        _verifier(amd=amd).verify(_request(missing))


def test_8_byte_hwid_is_only_for_turin(e2e: JsonObject) -> None:
    amd = synthetic_amd()
    bad, _ = _resigned(e2e, amd, hwid=bytes(e2e[R]["chip_id"])[:8])
    with pytest.raises(HwIdMismatch):
        _verifier(amd=amd).verify(_request(bad))
