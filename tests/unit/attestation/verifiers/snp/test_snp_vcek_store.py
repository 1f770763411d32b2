"""The offline VCEK store with several VCEKs per chip (upstream trustee #1498 / ``fd73d5ae``),
and the ``chip_id`` claim (``8b1e4060``).

A chip has one VCEK per firmware level (TCB). The store keeps them side by side, named by
TCB (``vcek/<hwid>/bl<BL>_tee<TEE>_snp<SNP>_ucode<UCODE>_vcek.der``), so a firmware update can
be provisioned before it is rolled out; the verifier picks the VCEK of the report's
REPORTED_TCB. The reports are the real e2e Genoa report with REPORTED_TCB changed, re-signed
by VCEKs of the synthetic AMD PKI (no AMD key can sign a changed report).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from snp_synthetic_pki import E2E_EVIDENCE, SyntheticAmd, evidence, load_json, patch, sign
from snp_synthetic_pki import synthetic_amd as make_amd

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.snp import SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp.collateral import tcb_file_prefix
from custodes.attestation.verifiers.snp.errors import TcbMismatch, VekUnavailable
from custodes.attestation.verifiers.snp.evidence import SnpEvidence
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.attestation.verifiers.snp.tcb import TcbVersion
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

JAN_2026 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
OLD = TcbVersion.from_parts(bootloader=10, tee=0, snp=23, microcode=25)
NEW = TcbVersion.from_parts(bootloader=10, tee=0, snp=24, microcode=26)
UNKNOWN = TcbVersion.from_parts(bootloader=11, tee=0, snp=24, microcode=26)


@pytest.fixture(scope="module")
def amd() -> SyntheticAmd:
    return make_amd()


@pytest.fixture
def e2e(vectors: Path) -> JsonObject:
    return load_json(vectors / E2E_EVIDENCE)


class Chip:
    """One chip's reports at several TCBs, each signed by that TCB's VCEK."""

    def __init__(self, e2e: JsonObject, amd: SyntheticAmd) -> None:
        self.raw = SnpEvidence.from_json(e2e).report.raw
        self.chip_id = SnpReport.from_bytes(self.raw).chip_id
        self.amd = amd
        self.vceks: dict[bytes, tuple[bytes, ec.EllipticCurvePrivateKey]] = {}

    def vcek(self, tcb: TcbVersion) -> bytes:
        if tcb.raw not in self.vceks:
            self.vceks[tcb.raw] = self.amd.vek(tcb, hwid=self.chip_id)
        return self.vceks[tcb.raw][0]

    def evidence(self, tcb: TcbVersion) -> JsonObject:
        """A bare report (no cert_chain) at ``tcb``, signed by that TCB's VCEK."""
        self.vcek(tcb)
        key = self.vceks[tcb.raw][1]
        raw = sign(patch(self.raw, "reported_tcb", tcb.raw), key)
        return evidence(raw, None)


def _verify(chip: Chip, store: Path, ev: JsonObject) -> JsonObject:
    verifier = SnpVerifier(
        SnpVerifierConfig(vcek_store_dir=store, clock=FrozenClock(JAN_2026)),
        roots={chip.amd.generation: chip.amd.roots},
    )
    report = SnpEvidence.from_json(ev).report
    [result] = verifier.verify(VerificationRequest(Tee.SNP, ev, report.report_data, None))
    return result.claims


def _folder(store: Path, chip: Chip) -> Path:
    folder = store / "vcek" / chip.chip_id.hex()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_vcek_of_the_reported_tcb_is_picked(
    e2e: JsonObject, amd: SyntheticAmd, tmp_path: Path
) -> None:
    chip = Chip(e2e, amd)
    folder = _folder(tmp_path, chip)
    for tcb in (OLD, NEW):
        (folder / f"{tcb_file_prefix(tcb)}_vcek.der").write_bytes(chip.vcek(tcb))
    assert tcb_file_prefix(NEW) == "bl10_tee00_snp24_ucode26"
    old = _verify(chip, tmp_path, chip.evidence(OLD))
    new = _verify(chip, tmp_path, chip.evidence(NEW))
    assert (old["reported_tcb_snp"], new["reported_tcb_snp"]) == (23, 24)
    # Each report needed its own VCEK: swap the files and both fail.
    a, b = (folder / f"{tcb_file_prefix(t)}_vcek.der" for t in (OLD, NEW))
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(TcbMismatch, match="the VEK certifies snp SPL 24, the report says 23"):
        _verify(chip, tmp_path, chip.evidence(OLD))


def test_no_vcek_for_the_reported_tcb_is_a_clear_error(
    e2e: JsonObject, amd: SyntheticAmd, tmp_path: Path
) -> None:
    chip = Chip(e2e, amd)
    folder = _folder(tmp_path, chip)
    for tcb in (OLD, NEW):
        (folder / f"{tcb_file_prefix(tcb)}_vcek.der").write_bytes(chip.vcek(tcb))
    with pytest.raises(VekUnavailable) as info:
        _verify(chip, tmp_path, chip.evidence(UNKNOWN))
    message = str(info.value)
    assert f"at TCB {tcb_file_prefix(UNKNOWN)}" in message
    assert f"chip {chip.chip_id.hex()[:16]}…" in message
    assert str(folder / "bl11_tee00_snp24_ucode26_vcek.der") in message
    assert "nor vcek.der" in message


def test_the_flat_file_serves_any_tcb_it_certifies(
    e2e: JsonObject, amd: SyntheticAmd, tmp_path: Path
) -> None:
    # Upstream's legacy layout: one vcek.der, used when no TCB-named file exists.
    chip = Chip(e2e, amd)
    folder = _folder(tmp_path, chip)
    (folder / "vcek.der").write_bytes(chip.vcek(NEW))
    assert _verify(chip, tmp_path, chip.evidence(NEW))["reported_tcb_microcode"] == 26
    with pytest.raises(TcbMismatch):  # it certifies NEW only
        _verify(chip, tmp_path, chip.evidence(OLD))
    # A TCB-named file wins over the flat one.
    (folder / f"{tcb_file_prefix(OLD)}_vcek.der").write_bytes(chip.vcek(OLD))
    assert _verify(chip, tmp_path, chip.evidence(OLD))["reported_tcb_snp"] == 23


def test_chip_id_claim(e2e: JsonObject, amd: SyntheticAmd, tmp_path: Path) -> None:
    chip = Chip(e2e, amd)
    (_folder(tmp_path, chip) / "vcek.der").write_bytes(chip.vcek(OLD))
    claims = _verify(chip, tmp_path, chip.evidence(OLD))
    assert claims["chip_id"] == chip.chip_id.hex()
    assert len(claims["chip_id"]) == 128
