"""SnpReport.from_bytes against trustee's real reports and the derived field decode."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from snp_synthetic_pki import patch

from custodes.attestation.verifiers.snp.report import (
    LAYOUT,
    REPORT_SIZE,
    SIGNED_SIZE,
    SigningKey,
    SnpReport,
)
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion
from custodes.errors import MalformedEvidence

SNP_DATA = Path("trustee/deps/verifier/test_data/snp")


def _raw(vectors: Path, name: str) -> bytes:
    return (vectors / SNP_DATA / name).read_bytes()


def _decoded(vectors: Path) -> dict[str, dict[str, Any]]:
    with (vectors / "trustee/derived/snp_report_parsed.json").open() as f:
        reports = json.load(f)["reports"]
    return {Path(r["file"]).name: r for r in reports}


def _tcb(t: TcbVersion) -> dict[str, int]:
    return {"bootloader": t.bootloader, "tee": t.tee, "snp": t.snp, "microcode": t.microcode}


@pytest.mark.parametrize("name", ["test-report.bin", "test-vlek-report.bin"])
def test_every_field_matches_the_derived_decode(vectors: Path, name: str) -> None:
    expected = _decoded(vectors)[name]
    report = SnpReport.from_bytes(_raw(vectors, name))
    assert report.version == expected["version"]
    assert report.guest_svn == expected["guest_svn"]
    assert report.policy.raw == int(expected["policy_hex"], 16)
    assert report.vmpl == expected["vmpl"]
    assert report.signature_algo == expected["signature_algo"]
    assert _tcb(report.current_tcb) == expected["current_tcb"]
    assert report.platform_info.raw == int(expected["platform_info_hex"], 16)
    assert report.key_info.raw == int(expected["flags_0x48_hex"], 16)
    assert report.report_data.hex() == expected["report_data_hex"]
    assert report.measurement.hex() == expected["measurement_hex"]
    assert report.host_data.hex() == expected["host_data_hex"]
    assert _tcb(report.reported_tcb) == expected["reported_tcb"]
    assert report.chip_id.hex() == expected["chip_id_hex"]
    assert _tcb(report.committed_tcb) == expected["committed_tcb"]
    assert _tcb(report.launch_tcb) == expected["launch_tcb"]
    current = [report.current_build, report.current_minor, report.current_major]
    committed = [report.committed_build, report.committed_minor, report.committed_major]
    assert current == expected["current_build_minor_major"]
    assert committed == expected["committed_build_minor_major"]
    assert report.signature_r.hex() == expected["signature_r_le_hex"]
    assert report.signature_s.hex() == expected["signature_s_le_hex"]
    if report.version >= 3:
        assert report.cpuid_fam_id == expected["cpuid_fam_id"]
        assert report.cpuid_mod_id == expected["cpuid_mod_id"]
        assert report.cpuid_step == expected["cpuid_step"]


def test_v2_report_has_no_cpuid_and_no_generation(vectors: Path) -> None:
    report = SnpReport.from_bytes(_raw(vectors, "test-report.bin"))
    assert (report.cpuid_fam_id, report.cpuid_mod_id, report.cpuid_step) == (None, None, None)
    assert report.generation is None
    assert not report.cpuid_known
    assert report.launch_mit_vector is None and report.current_mit_vector is None


def test_v3_vlek_report_decodes_key_info_and_generation(vectors: Path) -> None:
    report = SnpReport.from_bytes(_raw(vectors, "test-vlek-report.bin"))
    assert report.key_info.signing_key == SigningKey.VLEK
    assert not report.key_info.author_key_en and not report.key_info.mask_chip_key
    assert report.generation is Generation.MILAN
    assert report.chip_id == bytes(64)  # MASK_CHIP_ID


def test_keeps_raw_and_signed_bytes(vectors: Path) -> None:
    raw = _raw(vectors, "test-report.bin")
    report = SnpReport.from_bytes(raw)
    assert report.raw == raw
    assert report.signed_bytes == raw[:SIGNED_SIZE] and len(report.signed_bytes) == 0x2A0
    r, s = report.signature_ints
    assert r == int.from_bytes(raw[0x2A0:0x2E8], "little")
    assert s == int.from_bytes(raw[0x2E8:0x330], "little")


@pytest.mark.parametrize("size", [0, REPORT_SIZE - 1, REPORT_SIZE + 1, 4000])
def test_exact_length_is_required(vectors: Path, size: int) -> None:
    raw = _raw(vectors, "test-report.bin")
    data = (raw + bytes(size))[:size]
    with pytest.raises(MalformedEvidence):
        SnpReport.from_bytes(data)


def test_non_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        SnpReport.from_bytes("00" * REPORT_SIZE)  # type: ignore[arg-type]


def test_turin_family_selects_the_turin_tcb_layout(vectors: Path) -> None:
    raw = patch(_raw(vectors, "test-vlek-report.bin"), "cpuid_fam_id", 0x1A)
    tcb = bytes([7, 4, 0, 24, 0, 0, 0, 217])  # fmc, bl, tee, snp, rsvd x3, ucode
    report = SnpReport.from_bytes(patch(raw, "reported_tcb", tcb))
    assert report.generation is Generation.TURIN
    assert report.reported_tcb == TcbVersion.from_parts(
        fmc=7, bootloader=4, tee=0, snp=24, microcode=217
    )
    # The same bytes on Milan mean something else (byte 6 is snp there).
    milan = SnpReport.from_bytes(patch(_raw(vectors, "test-vlek-report.bin"), "reported_tcb", tcb))
    assert (milan.reported_tcb.bootloader, milan.reported_tcb.snp, milan.reported_tcb.fmc) == (
        7,
        0,
        None,
    )


def test_v5_report_has_mitigation_vectors(vectors: Path) -> None:
    raw = patch(_raw(vectors, "test-vlek-report.bin"), "version", 5)
    raw = patch(raw, "launch_mit_vector", 0x11)
    report = SnpReport.from_bytes(patch(raw, "current_mit_vector", 0x22))
    assert (report.launch_mit_vector, report.current_mit_vector) == (0x11, 0x22)


def test_policy_and_platform_flags(vectors: Path) -> None:
    policy = 0x3_001F | 1 << 18 | 1 << 19 | 1 << 20 | 1 << 21 | 1 << 25
    raw = patch(_raw(vectors, "test-report.bin"), "policy", policy)
    report = SnpReport.from_bytes(patch(raw, "platform_info", 0b10_0110))
    p = report.policy
    assert (p.abi_major, p.abi_minor) == (0, 0x1F)
    assert p.smt_allowed and p.migrate_ma and p.debug_allowed and p.single_socket
    assert p.cxl_allowed and p.page_swap_disabled
    assert not (p.mem_aes_256_xts or p.rapl_disabled or p.ciphertext_hiding)
    i = report.platform_info
    assert not i.smt_enabled and i.tsme_enabled and i.ecc_enabled
    assert not i.rapl_disabled and not i.ciphertext_hiding_enabled and i.alias_check_complete


def test_layout_is_contiguous_where_the_spec_has_no_reserved_gap() -> None:
    spans = sorted(LAYOUT.values())
    assert spans[0].offset == 0
    assert spans[-1].offset + spans[-1].size == 0x330  # signature r and s; rest reserved
    assert all(a.offset + a.size <= b.offset for a, b in itertools.pairwise(spans))
