"""The az-tdx-vtpm verifier on upstream's vectors.

Step 2 (DCAP verification of the TD quote) needs collateral for the quote's platform (FMSPC
00806F050000), which the vectors do not have. So: ``verify`` is run to its refusals (no
collateral; collateral of another platform); step 2's success path is run with dcap-qvl's
sample quote and its collateral (a genuine quote, which then fails the HCL binding); and steps
1 and 3-8 run on the vectors through :func:`verify_after_td_quote`, with the quote's parsed
claims standing in for step 2's output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from az_test_helpers import CHALLENGE, SNP_IN_HCL, flip, load_json, var_data, with_var_data

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzTdxVtpmVerifier, AzureVerifierConfig
from custodes.attestation.verifiers.azure.errors import (
    EvidenceVersionUnsupported,
    HclBindingMismatch,
    HclReportInvalid,
    QuoteNonceMismatch,
    QuoteSignatureInvalid,
    TdQuoteUnverified,
    UserDataMismatch,
)
from custodes.attestation.verifiers.azure.evidence import AzTdxEvidence
from custodes.attestation.verifiers.azure.tdx_verifier import (
    ParsedAzTdx,
    check_td_binding,
    verify_after_td_quote,
)
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tdx.claims import parsed_claims
from custodes.attestation.verifiers.tpm.errors import PcrDigestMismatch
from custodes.errors import CollateralError, InitDataMismatch, MalformedEvidence
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

TDX = "az-tdx-vtpm"
PCR00 = "782b20b10f55cc46e2142cc2145d548698073e5beb82752c8d7f9279f0d8a273"
TD_INFO_IN_HCL = SNP_IN_HCL + 512  # TDINFO inside the HCL's TDREPORT


@pytest.fixture(scope="module")
def v1(vectors: Path) -> AzTdxEvidence:
    return AzTdxEvidence.from_json(load_json(vectors, TDX, "evidence-v1.json"))


@pytest.fixture(scope="module")
def sample(vectors: Path) -> Path:
    return vectors / "dcap-qvl"


@pytest.fixture(scope="module")
def sample_now(sample: Path) -> float:
    """One hour after the dcap-qvl sample's TCB info was issued: inside its window."""
    collateral = json.loads((sample / "tdx_quote_collateral.json").read_text())
    issued = json.loads(collateral["tcb_info"])["issueDate"].replace("Z", "+00:00")
    return datetime.fromisoformat(issued).timestamp() + 3600


def _request(evidence: Any, report_data: bytes = CHALLENGE, init: bytes | None = None) -> Any:
    if isinstance(evidence, AzTdxEvidence):
        evidence = evidence.to_json()
    return VerificationRequest(Tee.AZ_TDX_VTPM, evidence, report_data, init)


def _after_td_quote(
    evidence: Any, report_data: bytes = CHALLENGE, init: bytes | None = None
) -> JsonObject:
    """Steps 1 and 3-8 (step 2 cannot run on these vectors, see the module docstring)."""
    request = _request(evidence, report_data, init)
    parsed = ParsedAzTdx.from_json(request.evidence)
    return verify_after_td_quote(parsed, request, parsed_claims(parsed.td_quote, None))


# --- steps 1, 3-8 on the vectors ---------------------------------------------------------


@pytest.mark.parametrize("name", ["evidence-v0.json", "evidence-v1.json"])
def test_az_tdx_vector_passes_steps_after_the_td_quote(vectors: Path, name: str) -> None:
    claims = _after_td_quote(load_json(vectors, TDX, name))
    assert claims["report_data"] == CHALLENGE.hex()
    assert claims["tpm"]["pcr00"] == PCR00
    assert claims["init_data"] == claims["tpm"]["pcr08"] == "00" * 32


def test_az_tdx_golden_claims(v1: AzTdxEvidence) -> None:
    claims = _after_td_quote(v1)
    assert claims["quote"]["header"]["tee_type"] == "81000000"
    assert claims["quote"]["header"]["vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"
    assert claims["quote"]["body"]["xfam"] == "e718060000000000"
    assert claims["quote"]["body"]["mr_td"].startswith("024a32b070383331")
    assert claims["td_attributes"]["debug"] is False
    assert len(claims["tpm"]) == 24


def test_az_tdx_binding_of_the_vector(v1: AzTdxEvidence) -> None:
    parsed = ParsedAzTdx.from_json(v1.to_json())
    assert parsed.td_quote.report_data[:32] == hashlib.sha256(var_data(v1.hcl_report)).digest()
    check_td_binding(parsed)


# --- step 2 ------------------------------------------------------------------------------


def test_az_tdx_without_collateral_is_refused(v1: AzTdxEvidence) -> None:
    with pytest.raises(TdQuoteUnverified):
        AzTdxVtpmVerifier().verify(_request(v1))


def test_az_tdx_collateral_of_another_platform_is_refused(
    v1: AzTdxEvidence, sample: Path, sample_now: float
) -> None:
    config = AzureVerifierConfig(
        clock=FrozenClock(sample_now), tdx_collateral_path=sample / "tdx_quote_collateral.json"
    )
    with pytest.raises(CollateralError):
        AzTdxVtpmVerifier(config).verify(_request(v1))


def test_az_tdx_genuine_td_quote_not_binding_the_hcl(
    v1: AzTdxEvidence, sample: Path, sample_now: float
) -> None:
    # dcap-qvl's sample quote passes the real DCAP step (2) but binds no HCL report (3).
    config = AzureVerifierConfig(
        clock=FrozenClock(sample_now), tdx_collateral_path=sample / "tdx_quote_collateral.json"
    )
    verifier = AzTdxVtpmVerifier(config)
    evidence = dataclasses.replace(v1, td_quote=(sample / "tdx_quote").read_bytes())
    td_claims = verifier.verify_td_quote(ParsedAzTdx.from_json(evidence.to_json()))
    assert td_claims["tcb_status"] == "UpToDate"
    assert td_claims["quote"]["header"]["tee_type"] == "81000000"
    with pytest.raises(HclBindingMismatch):
        verifier.verify(_request(evidence))


# --- (1) parse ---------------------------------------------------------------------------


def test_az_tdx_unknown_evidence_version(v1: AzTdxEvidence) -> None:
    with pytest.raises(EvidenceVersionUnsupported):
        AzTdxVtpmVerifier().verify(_request(dict(v1.to_json(), version="2")))


def test_az_tdx_extra_or_missing_hcl_byte(v1: AzTdxEvidence) -> None:
    hcl = v1.hcl_report
    for bad in (hcl[:0x40] + b"\x00" + hcl[0x40:], hcl[:0x40] + hcl[0x41:]):
        with pytest.raises(HclReportInvalid):
            AzTdxVtpmVerifier().verify(_request(dataclasses.replace(v1, hcl_report=bad)))


def test_az_tdx_hcl_with_an_snp_report_is_refused(v1: AzTdxEvidence, vectors: Path) -> None:
    snp_hcl = bytes(load_json(vectors, "az-snp-vtpm", "evidence-v0.json")["report"])
    with pytest.raises(HclReportInvalid):
        AzTdxVtpmVerifier().verify(_request(dataclasses.replace(v1, hcl_report=snp_hcl)))


def test_az_tdx_truncated_td_quote_is_malformed(v1: AzTdxEvidence) -> None:
    with pytest.raises(MalformedEvidence):
        AzTdxVtpmVerifier().verify(_request(dataclasses.replace(v1, td_quote=v1.td_quote[:600])))


# --- (3) HCL binding ---------------------------------------------------------------------


def test_az_tdx_tampered_var_data(v1: AzTdxEvidence) -> None:
    runtime = var_data(v1.hcl_report)
    spaced = runtime.replace(b'"secure-boot":true', b'"secure-boot": true')
    assert spaced != runtime  # same JSON meaning, other bytes: only the binding catches it
    hcl = with_var_data(v1.hcl_report, spaced)
    with pytest.raises(HclBindingMismatch):
        _after_td_quote(dataclasses.replace(v1, hcl_report=hcl))


@pytest.mark.parametrize(
    "offset",
    [
        SNP_IN_HCL + 128,  # REPORTMACSTRUCT.REPORTDATA
        TD_INFO_IN_HCL + 16,  # MRTD
        TD_INFO_IN_HCL + 208 + 3 * 48,  # RTMR3
        SNP_IN_HCL + 256 + 24,  # TEE_TCB_INFO.MRSEAM
    ],
)
def test_az_tdx_hcl_td_report_not_the_quoted_one(v1: AzTdxEvidence, offset: int) -> None:
    with pytest.raises(HclBindingMismatch):
        _after_td_quote(dataclasses.replace(v1, hcl_report=flip(v1.hcl_report, offset)))


# --- (4)-(7) the vTPM quote --------------------------------------------------------------


def test_az_tdx_flipped_quote_signature(v1: AzTdxEvidence) -> None:
    quote = dataclasses.replace(v1.tpm_quote, signature=flip(v1.tpm_quote.signature, 100))
    with pytest.raises(QuoteSignatureInvalid):
        _after_td_quote(dataclasses.replace(v1, tpm_quote=quote))


def test_az_tdx_wrong_report_data(v1: AzTdxEvidence) -> None:
    for report_data in (b"egnellahc", CHALLENGE + bytes(55)):
        with pytest.raises(QuoteNonceMismatch):
            _after_td_quote(v1, report_data)


def test_az_tdx_v2_user_data_must_carry_the_digest(v1: AzTdxEvidence) -> None:
    with pytest.raises(UserDataMismatch):
        _after_td_quote(dataclasses.replace(v1, version=2))


def test_az_tdx_changed_pcr(v1: AzTdxEvidence) -> None:
    pcrs = list(v1.tpm_quote.pcrs)
    pcrs[0] = flip(pcrs[0], 0)
    quote = dataclasses.replace(v1.tpm_quote, pcrs=tuple(pcrs))
    with pytest.raises(PcrDigestMismatch):
        _after_td_quote(dataclasses.replace(v1, tpm_quote=quote))


def test_az_tdx_init_data(v1: AzTdxEvidence) -> None:
    with pytest.raises(InitDataMismatch):
        _after_td_quote(v1, init=hashlib.sha384(b"init-data").digest())
    with pytest.raises(InitDataMismatch):
        _after_td_quote(v1, init=hashlib.sha256(b"init-data").digest())


def test_az_tdx_verifier_refuses_other_tees(v1: AzTdxEvidence) -> None:
    with pytest.raises(ValueError, match="az-tdx-vtpm"):
        AzTdxVtpmVerifier().verify(VerificationRequest(Tee.TDX, v1.to_json(), CHALLENGE))
