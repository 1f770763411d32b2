"""The az-snp-vtpm verifier end to end on upstream's vectors, one negative per checklist step.

Every test runs the full ``verify`` with the pinned AMD roots at a frozen clock inside the
vector VCEKs' validity windows; the negatives change one thing in real evidence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from az_test_helpers import (
    CHALLENGE,
    FROZEN_NOW,
    SNP_IN_HCL,
    V2_REPORT_DATA,
    flip,
    load_json,
    standalone_evidence,
    var_data,
    with_var_data,
)

from custodes._internal.b64 import b64std_decode
from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzSnpVtpmVerifier, AzureVerifierConfig
from custodes.attestation.verifiers.azure.errors import (
    EvidenceVersionUnsupported,
    HclBindingMismatch,
    HclReportInvalid,
    QuoteNonceMismatch,
    QuoteSignatureInvalid,
    UserDataMismatch,
)
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence
from custodes.attestation.verifiers.azure.snp_verifier import az_snp_claims
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest
from custodes.attestation.verifiers.snp.errors import (
    HwIdMismatch,
    ProcessorUnsupported,
    ReportSignatureInvalid,
    ReportVersionUnsupported,
    SignatureAlgorithmUnsupported,
    TcbMismatch,
    VekChainInvalid,
    VmplNotZero,
)
from custodes.attestation.verifiers.snp.report import SnpReport
from custodes.attestation.verifiers.tpm.errors import PcrDigestMismatch
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.errors import InitDataMismatch, MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

SNP = "az-snp-vtpm"


@pytest.fixture(scope="module")
def verifier() -> AzSnpVtpmVerifier:
    return AzSnpVtpmVerifier(AzureVerifierConfig(clock=FrozenClock(FROZEN_NOW)))


@pytest.fixture(scope="module")
def v1(vectors: Path) -> AzSnpEvidence:
    return AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v1.json"))


def _verify(
    verifier: AzSnpVtpmVerifier,
    evidence: Any,
    report_data: bytes = CHALLENGE,
    init_data_digest: bytes | None = None,
) -> JsonObject:
    if isinstance(evidence, AzSnpEvidence):
        evidence = evidence.to_json()
    request = VerificationRequest(Tee.AZ_SNP_VTPM, evidence, report_data, init_data_digest)
    [result] = verifier.verify(request)
    assert result.tee_class is TeeClass.CPU
    return result.claims


def _hcl_edit(evidence: AzSnpEvidence, offset: int, mask: int = 0x01) -> AzSnpEvidence:
    return dataclasses.replace(evidence, hcl_report=flip(evidence.hcl_report, offset, mask))


# --- every vector version verifies -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "report_data"),
    [
        ("evidence-v0.json", CHALLENGE),
        ("evidence-v1.json", CHALLENGE),
        ("evidence-v2.json", V2_REPORT_DATA),
    ],
)
def test_az_snp_vector_verifies(
    verifier: AzSnpVtpmVerifier, vectors: Path, name: str, report_data: bytes
) -> None:
    claims = _verify(verifier, load_json(vectors, SNP, name), report_data)
    assert claims["report_data"] == report_data.hex()


def test_az_snp_genoa_vector_verifies_under_the_genoa_roots(
    verifier: AzSnpVtpmVerifier, vectors: Path
) -> None:
    # The README gives no report data for this capture; its quote nonce is a 48-byte digest,
    # used here as the session's. Everything else (Genoa chain, signatures) is real.
    raw = load_json(vectors, SNP, "evidence-genoa.json")
    nonce = TpmsAttest.from_bytes(AzSnpEvidence.from_json(raw).tpm_quote.message).extra_data
    assert len(nonce) == 48
    claims = _verify(verifier, raw, nonce)
    assert claims["reported_tcb_bootloader"] == "10"
    assert claims["tpm"]["pcr08"] == claims["init_data"] != "00" * 32


def test_az_snp_standalone_pieces_have_a_version_2_report(
    verifier: AzSnpVtpmVerifier, vectors: Path
) -> None:
    # hcl-report.bin + tpm-quote-v1.json + vcek.pem: a 2023 capture whose SNP report is
    # version 2 (no CPUID). Upstream's az verifier does not check the version; custodes
    # refuses reports older than version 3 for every SNP evidence ("update the firmware").
    with pytest.raises(ReportVersionUnsupported):
        _verify(verifier, standalone_evidence(vectors))


def test_az_snp_golden_claims_v1(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    claims = _verify(verifier, v1)
    tpm = claims.pop("tpm")
    assert claims == {
        "policy_abi_major": "0",
        "policy_abi_minor": "31",
        "policy_smt_allowed": "true",
        "policy_migrate_ma": "false",
        "policy_debug_allowed": "false",
        "policy_single_socket": "false",
        "reported_tcb_bootloader": "4",
        "reported_tcb_tee": "0",
        "reported_tcb_snp": "24",
        "reported_tcb_microcode": "219",
        "platform_tsme_enabled": "false",
        "platform_smt_enabled": "true",
        "measurement": "agY76d159jcchC5ID43DtccllhNE5XEw6Ixa30no9/bHm3Wl63f8dplZ9K6y+UAe",
        "report_data": "6368616c6c656e6765",
        "init_data": "00" * 32,
    }
    assert len(tpm) == 24
    assert tpm["pcr00"] == "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"
    assert tpm["pcr11"] == "00" * 32
    hcl_report = SnpReport.from_bytes(v1.hcl_report[SNP_IN_HCL : SNP_IN_HCL + 1184])
    assert b64std_decode(claims["measurement"]) == hcl_report.measurement


def test_az_snp_claims_are_strings_for_the_default_policy(v1: AzSnpEvidence) -> None:
    report = SnpReport.from_bytes(v1.hcl_report[SNP_IN_HCL : SNP_IN_HCL + 1184])
    assert all(isinstance(value, str) for value in az_snp_claims(report).values())


def test_az_snp_v2_claims_measurement(verifier: AzSnpVtpmVerifier, vectors: Path) -> None:
    claims = _verify(verifier, load_json(vectors, SNP, "evidence-v2.json"), V2_REPORT_DATA)
    assert claims["measurement"] == (
        "WwzmStHB9jddvaX3YLmFJsobz5G4GVCRr8KOewJCUdaP4y4FrzQEjWYHZ4zSMoP/"
    )
    assert claims["tpm"]["pcr00"].startswith("84275b2f")


# --- (1) parse ---------------------------------------------------------------------------


def test_az_snp_unknown_evidence_version(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(EvidenceVersionUnsupported):
        _verify(verifier, dict(v1.to_json(), version=3))


def test_az_snp_extra_or_missing_hcl_byte(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    hcl = v1.hcl_report
    for bad in (hcl[:0x30] + b"\x00" + hcl[0x30:], hcl[:0x30] + hcl[0x31:], hcl + b"\x01"):
        with pytest.raises(HclReportInvalid):
            _verify(verifier, dataclasses.replace(v1, hcl_report=bad))


def test_az_snp_hcl_with_a_td_report_is_refused(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, vectors: Path
) -> None:
    tdx_hcl = load_json(vectors, "az-tdx-vtpm", "evidence-v0.json")["hcl_report"]
    with pytest.raises(HclReportInvalid):
        _verify(verifier, dataclasses.replace(v1, hcl_report=bytes(tdx_hcl)))


def test_az_snp_malformed_tpm_message(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    quote = dataclasses.replace(v1.tpm_quote, message=v1.tpm_quote.message + b"\x00")
    with pytest.raises(MalformedEvidence):
        _verify(verifier, dataclasses.replace(v1, tpm_quote=quote))


# --- (2) the SNP report -------------------------------------------------------------------


def test_az_snp_report_signature_flipped(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    for offset in (0x2A0, 0x2A0 + 72, 0x90):  # signature r, s; measurement
        with pytest.raises(ReportSignatureInvalid):
            _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + offset))


def test_az_snp_report_version_2_is_refused(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(ReportVersionUnsupported):
        _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + 0, 0x01))  # version 3 -> 2


def test_az_snp_report_signed_by_vlek_is_refused(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence
) -> None:
    with pytest.raises(SignatureAlgorithmUnsupported):
        _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + 0x48, 0x04))  # SIGNING_KEY = VLEK


def test_az_snp_report_from_vmpl1_is_refused(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence
) -> None:
    with pytest.raises(VmplNotZero):
        _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + 0x30))


def test_az_snp_vcek_of_another_generation(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, vectors: Path
) -> None:
    genoa = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-genoa.json"))
    with pytest.raises(VekChainInvalid):
        _verify(verifier, dataclasses.replace(v1, vcek=genoa.vcek))


def test_az_snp_vcek_not_a_certificate(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(VekChainInvalid):
        _verify(verifier, dataclasses.replace(v1, vcek=v1.vcek[:-10]))


def test_az_snp_unknown_processor(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(ProcessorUnsupported):
        _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + 0x188, 0x19 ^ 0x17))  # family 0x17


def test_az_snp_report_without_cpuid_takes_the_vceks_generation(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence
) -> None:
    # CPUID zeroed: the Milan ASK that issued the VCEK names the generation, the chain and the
    # extensions pass, and the signature (over the changed bytes) is what fails.
    hcl = bytearray(v1.hcl_report)
    hcl[SNP_IN_HCL + 0x188 : SNP_IN_HCL + 0x18B] = bytes(3)
    with pytest.raises(ReportSignatureInvalid):
        _verify(verifier, dataclasses.replace(v1, hcl_report=bytes(hcl)))


def test_az_snp_vcek_outside_its_validity(v1: AzSnpEvidence) -> None:
    early = AzSnpVtpmVerifier(AzureVerifierConfig(clock=FrozenClock(FROZEN_NOW - 200 * 86400)))
    with pytest.raises(VekChainInvalid):
        _verify(early, v1)


def test_az_snp_vcek_of_another_chip(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, vectors: Path
) -> None:
    v2 = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v2.json"))
    with pytest.raises(HwIdMismatch):
        _verify(verifier, dataclasses.replace(v1, vcek=v2.vcek))


def test_az_snp_reported_tcb_not_the_vceks(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(TcbMismatch):
        _verify(verifier, _hcl_edit(v1, SNP_IN_HCL + 0x186))  # REPORTED_TCB.snp


# --- (3) HCL binding ---------------------------------------------------------------------


def test_az_snp_tampered_var_data(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    runtime = var_data(v1.hcl_report)
    at = runtime.index(b'"vmUniqueId":"') + len(b'"vmUniqueId":"')
    tampered = runtime[:at] + (b"0" if runtime[at : at + 1] != b"0" else b"1") + runtime[at + 1 :]
    json.loads(tampered)  # still well-formed: only the binding can catch it
    evidence = dataclasses.replace(v1, hcl_report=with_var_data(v1.hcl_report, tampered))
    with pytest.raises(HclBindingMismatch):
        _verify(verifier, evidence)


def test_az_snp_runtime_data_of_another_vm(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, vectors: Path
) -> None:
    v2 = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v2.json"))
    spliced = with_var_data(v1.hcl_report, var_data(v2.hcl_report))
    with pytest.raises(HclBindingMismatch):
        _verify(verifier, dataclasses.replace(v1, hcl_report=spliced))


# --- (4)-(7) the vTPM quote --------------------------------------------------------------


def test_az_snp_flipped_quote_signature(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    quote = dataclasses.replace(v1.tpm_quote, signature=flip(v1.tpm_quote.signature, 0))
    with pytest.raises(QuoteSignatureInvalid):
        _verify(verifier, dataclasses.replace(v1, tpm_quote=quote))


def test_az_snp_quote_of_another_vm(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, vectors: Path
) -> None:
    v2 = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v2.json"))
    with pytest.raises(QuoteSignatureInvalid):
        _verify(verifier, dataclasses.replace(v1, tpm_quote=v2.tpm_quote))


@pytest.mark.parametrize(
    "report_data",
    [b"egnellahc", CHALLENGE + bytes(55), CHALLENGE[:8], hashlib.sha384(CHALLENGE).digest()],
)
def test_az_snp_wrong_report_data(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence, report_data: bytes
) -> None:
    with pytest.raises(QuoteNonceMismatch):
        _verify(verifier, v1, report_data)


def test_az_snp_v2_user_data_must_carry_the_digest(
    verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence
) -> None:
    # v1 evidence relabelled v2: the nonce matches but its user-data is all zeros.
    with pytest.raises(UserDataMismatch):
        _verify(verifier, dataclasses.replace(v1, version=2))


def test_az_snp_changed_pcr(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    pcrs = list(v1.tpm_quote.pcrs)
    pcrs[11] = flip(pcrs[11], 31)
    quote = dataclasses.replace(v1.tpm_quote, pcrs=tuple(pcrs))
    with pytest.raises(PcrDigestMismatch):
        _verify(verifier, dataclasses.replace(v1, tpm_quote=quote))


def test_az_snp_init_data_sha384_is_refused(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(InitDataMismatch):
        _verify(verifier, v1, init_data_digest=hashlib.sha384(b"init-data").digest())


def test_az_snp_init_data_not_in_pcr8(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(InitDataMismatch):
        _verify(verifier, v1, init_data_digest=hashlib.sha256(b"init-data").digest())


# --- the request -------------------------------------------------------------------------


def test_az_snp_verifier_refuses_other_tees(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    with pytest.raises(ValueError, match="az-snp-vtpm"):
        verifier.verify(VerificationRequest(Tee.SNP, v1.to_json(), CHALLENGE))


def test_az_snp_evidence_as_json_text(verifier: AzSnpVtpmVerifier, v1: AzSnpEvidence) -> None:
    claims = _verify(verifier, json.dumps(v1.to_json()))
    assert claims["report_data"] == CHALLENGE.hex()
