"""The ``snp`` attester through configfs-tsm, checked against the broker's SNP parser/verifier.

There is no SEV-SNP hardware here, so configfs-tsm is ``fake_tsm.FakeTsm``: real file
operations on a temp directory plus the kernel's side effects. Its ``outblob`` is a recorded
REAL report (trustee's e2e Genoa report, its VLEK report, its v2 Milan report) and its
``auxblob`` a GHCB certificate table built here around the recorded VCEK/VLEK. The recorded
reports were not made for our report data, so the tests check the written ``inblob`` (the
padded digest), the evidence JSON's shape, that the broker's ``SnpEvidence.from_json`` accepts
it and re-encodes exactly the recorded report bytes, and, where the report allows (the e2e
report with its own 64-byte REPORT_DATA as our digest), full verification by ``SnpVerifier``.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp.errors import VmplNotZero
from custodes.attestation.verifiers.snp.evidence import (
    SnpEvidence,
    encode_report,
)
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.guest.attester.base import Attester
from custodes.guest.attester.snp import CERT_GUIDS, SnpAttester, cert_chain
from custodes.guest.attester.snp import report_to_json as guest_report_to_json
from custodes.guest.attester.tsm import TsmOutputInvalid, TsmProviderMismatch, TsmWriteRace
from custodes.types.tee import Tee
from fake_tsm import FakeTsm

E2E = Path("trustee/attestation-service/tests/e2e/evidence.json")
SNP_DATA = Path("trustee/deps/verifier/test_data/snp")
JAN_2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
GUID = {name: guid for guid, name in CERT_GUIDS.items()}
DIGEST = bytes(range(1, 49))
SERDE_KEYS = {
    "version", "guest_svn", "policy", "family_id", "image_id", "vmpl", "sig_algo",
    "current_tcb", "plat_info", "key_info", "report_data", "measurement", "host_data",
    "id_key_digest", "author_key_digest", "report_id", "report_id_ma", "reported_tcb",
    "cpuid_fam_id", "cpuid_mod_id", "cpuid_step", "chip_id", "committed_tcb", "current",
    "committed", "launch_tcb", "launch_mit_vector", "current_mit_vector", "signature",
}  # fmt: skip


def cert_table(entries: list[tuple[uuid.UUID, bytes]], *, pad: int = 0) -> bytes:
    """A GHCB certificate table: entries, an all-zero entry, the certificates, ``pad`` zeros."""
    header = b""
    body = b""
    offset = 24 * (len(entries) + 1)
    for guid, data in entries:
        header += guid.bytes + struct.pack("<II", offset + len(body), len(data))
        body += data
    return header + bytes(24) + body + bytes(pad)


@pytest.fixture
def e2e(vectors: Path) -> dict[str, Any]:
    evidence: dict[str, Any] = json.loads((vectors / E2E).read_text())
    return evidence


@pytest.fixture
def e2e_raw(e2e: dict[str, Any]) -> bytes:
    return encode_report(e2e["attestation_report"])


@pytest.fixture
def e2e_vcek(e2e: dict[str, Any]) -> bytes:
    return bytes(e2e["cert_chain"][0]["data"])


def _attester(fake: FakeTsm) -> SnpAttester:
    attester: Attester = SnpAttester(fake.tsm())
    assert attester.tee is Tee.SNP
    assert isinstance(attester, SnpAttester)
    return attester


# --- real reports through the broker --------------------------------------------------------


def test_real_genoa_report_verifies_with_the_broker(
    tmp_path: Path, e2e: dict[str, Any], e2e_raw: bytes, e2e_vcek: bytes
) -> None:
    table = cert_table([(GUID["VCEK"], e2e_vcek)], pad=4096 - 24 * 2 - len(e2e_vcek))
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw, auxblob=table)
    digest = bytes(e2e["attestation_report"]["report_data"])  # its own 64-byte REPORT_DATA
    evidence = _attester(fake).evidence(digest)
    assert fake.inblobs == [digest]
    assert set(evidence) == {"attestation_report", "cert_chain"}
    assert evidence["cert_chain"] == [{"cert_type": "VCEK", "data": list(e2e_vcek)}]
    evidence = json.loads(json.dumps(evidence))  # what goes over the wire
    [result] = SnpVerifier(SnpVerifierConfig(clock=FrozenClock(JAN_2026))).verify(
        VerificationRequest(Tee.SNP, evidence, digest, None)
    )
    assert result.tee_class is TeeClass.CPU
    assert result.claims["report_data"] == digest.hex()
    assert fake.items() == []


def test_evidence_matches_upstreams_serde_form(
    tmp_path: Path, e2e: dict[str, Any], e2e_raw: bytes, e2e_vcek: bytes
) -> None:
    """The e2e file is what upstream's guest (``sev`` crate serde) sent for this report."""
    table = cert_table([(GUID["VCEK"], e2e_vcek)])
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw, auxblob=table)
    evidence = _attester(fake).evidence(DIGEST)
    report = evidence["attestation_report"]
    assert set(report) == SERDE_KEYS
    upstream = e2e["attestation_report"]
    assert {key: report[key] for key in upstream} == upstream
    # The mitigation vectors exist from report version 5; this sev crate version omitted them.
    assert set(report) - set(upstream) == {"launch_mit_vector", "current_mit_vector"}
    assert report["launch_mit_vector"] is None
    assert report["current_mit_vector"] is None
    assert evidence["cert_chain"] == e2e["cert_chain"]


def test_written_inblob_is_the_padded_digest(tmp_path: Path, e2e_raw: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw)
    _attester(fake).evidence(DIGEST)
    assert fake.inblobs == [DIGEST + bytes(16)]


@pytest.mark.parametrize("name", ["test-vlek-report.bin", "test-report.bin"])
def test_broker_parser_yields_the_recorded_report_bytes(
    tmp_path: Path, vectors: Path, name: str
) -> None:
    raw = (vectors / SNP_DATA / name).read_bytes()
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=raw)
    evidence = _attester(fake).evidence(DIGEST)
    assert evidence["cert_chain"] is None
    parsed = SnpEvidence.from_json(json.dumps(evidence))
    assert parsed.report.raw == raw
    assert parsed.cert_chain is None
    # The JSON fields are those the broker's report parser decodes from the same bytes.
    sent, report = evidence["attestation_report"], SnpReport.from_bytes(raw)
    assert sent["chip_id"] == list(report.chip_id)
    assert sent["measurement"] == list(report.measurement)
    assert sent["reported_tcb"] == report.reported_tcb.to_json()
    assert sent["policy"] == report.policy.raw


def test_v2_report_has_no_cpuid(tmp_path: Path, vectors: Path) -> None:
    raw = (vectors / SNP_DATA / "test-report.bin").read_bytes()
    report = _attester(FakeTsm(tmp_path, provider="sev_guest", outblob=raw)).evidence(DIGEST)[
        "attestation_report"
    ]
    assert report["version"] == 2
    assert (report["cpuid_fam_id"], report["cpuid_mod_id"], report["cpuid_step"]) == (
        None,
        None,
        None,
    )
    assert report["current_tcb"]["fmc"] is None


def test_vlek_report_and_chain_reach_the_verifiers_vmpl_check(
    tmp_path: Path, vectors: Path
) -> None:
    """The VLEK report is signed at VMPL 1: parsing and the chain pass, the VMPL step refuses."""
    raw = (vectors / SNP_DATA / "test-vlek-report.bin").read_bytes()
    vlek = (vectors / SNP_DATA / "test-vlek.der").read_bytes()
    fake = FakeTsm(
        tmp_path, provider="sev_guest", outblob=raw, auxblob=cert_table([(GUID["VLEK"], vlek)])
    )
    evidence = _attester(fake).evidence(DIGEST)
    parsed = SnpEvidence.from_json(evidence)
    assert parsed.entries("VLEK") == [vlek]
    digest = parsed.report.report_data
    with pytest.raises(VmplNotZero):
        SnpVerifier(SnpVerifierConfig(clock=FrozenClock(JAN_2026))).verify(
            VerificationRequest(Tee.SNP, evidence, digest, None)
        )


def test_turin_v5_layout_round_trips_through_the_broker(vectors: Path) -> None:
    """Layout only (the signature no longer matches): Turin TCBs and v5 mitigation vectors."""
    raw = bytearray((vectors / SNP_DATA / "test-vlek-report.bin").read_bytes())
    raw[0:4] = (5).to_bytes(4, "little")
    raw[0x188:0x18B] = bytes([0x1A, 0x02, 0x01])
    for offset in (0x038, 0x180, 0x1E0, 0x1F0):
        raw[offset : offset + 8] = bytes([1, 2, 3, 4, 0, 0, 0, 5])  # fmc, bl, tee, snp, ucode
    raw[0x1F8:0x200] = (0x11).to_bytes(8, "little")
    raw[0x200:0x208] = (0x22).to_bytes(8, "little")
    report = guest_report_to_json(bytes(raw))
    assert report["current_tcb"] == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
    assert (report["launch_mit_vector"], report["current_mit_vector"]) == (0x11, 0x22)
    assert encode_report(report) == bytes(raw)


# --- certificate table ----------------------------------------------------------------------


def test_cert_table_names_and_order() -> None:
    other = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    entries = [
        (GUID["VCEK"], b"vcek"),
        (GUID["ASK"], b"ask"),
        (GUID["ARK"], b"ark"),
        (GUID["CRL"], b"crl"),
        (other, b"other"),
    ]
    chain = cert_chain(cert_table(entries, pad=100))
    assert chain == [
        {"cert_type": "VCEK", "data": list(b"vcek")},
        {"cert_type": "ASK", "data": list(b"ask")},
        {"cert_type": "ARK", "data": list(b"ark")},
        {"cert_type": "CRL", "data": list(b"crl")},
        {"cert_type": {"OTHER": str(other)}, "data": list(b"other")},
    ]


def test_unknown_guid_is_accepted_by_the_broker(tmp_path: Path, e2e_raw: bytes) -> None:
    other = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")
    fake = FakeTsm(
        tmp_path,
        provider="sev_guest",
        outblob=e2e_raw,
        auxblob=cert_table([(other, b"\x30\x00")]),
    )
    parsed = SnpEvidence.from_json(_attester(fake).evidence(DIGEST))
    assert parsed.cert_chain is not None
    [entry] = parsed.cert_chain
    assert (entry.cert_type, entry.guid, entry.data) == ("OTHER", str(other), b"\x30\x00")


def test_empty_cert_table_is_no_chain() -> None:
    assert cert_chain(cert_table([], pad=4000)) is None


def test_cert_table_without_terminator_is_invalid() -> None:
    table = cert_table([(GUID["VCEK"], b"vcek")])
    unterminated = table[:24] + b"\x01" * 20  # the terminating entry is cut and overwritten
    with pytest.raises(TsmOutputInvalid):
        cert_chain(unterminated)
    with pytest.raises(TsmOutputInvalid):
        cert_chain(b"")


def test_cert_table_entry_outside_the_table_is_invalid() -> None:
    entry = GUID["VCEK"].bytes + struct.pack("<II", 48, 4096)
    with pytest.raises(TsmOutputInvalid):
        cert_chain(entry + bytes(24) + b"short")


def test_truncated_cert_table_through_the_attester(tmp_path: Path, e2e_raw: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw, auxblob=b"\x01" * 30)
    with pytest.raises(TsmOutputInvalid):
        _attester(fake).evidence(DIGEST)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1183, 1185, 4000])
def test_outblob_of_wrong_size_is_invalid(tmp_path: Path, e2e_raw: bytes, size: int) -> None:
    outblob = (e2e_raw * 4)[:size]
    with pytest.raises(TsmOutputInvalid):
        _attester(FakeTsm(tmp_path, provider="sev_guest", outblob=outblob)).evidence(DIGEST)


@pytest.mark.parametrize("size", [0, 65])
def test_report_data_must_fit(tmp_path: Path, e2e_raw: bytes, size: int) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw)
    with pytest.raises(ValueError):
        _attester(fake).evidence(b"\x01" * size)
    assert fake.created == []


def test_tdx_provider_is_refused(tmp_path: Path, e2e_raw: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=e2e_raw)
    with pytest.raises(TsmProviderMismatch):
        _attester(fake).evidence(DIGEST)
    assert fake.inblobs == []


def test_generation_race_is_refused(tmp_path: Path, e2e_raw: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw, racer=True)
    with pytest.raises(TsmWriteRace):
        _attester(fake).evidence(DIGEST)
    assert fake.items() == []


def test_privlevel_is_written_when_asked(tmp_path: Path, e2e_raw: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=e2e_raw)
    evidence = SnpAttester(fake.tsm(), privlevel=0).evidence(DIGEST)
    assert fake.privlevels == [0]
    assert SnpEvidence.from_json(evidence).report.raw == e2e_raw
