"""Fuzz the Azure vTPM parsers: the HCL report and its runtime data, the TDREPORT inside it,
and the az-snp-vtpm / az-tdx-vtpm evidence JSON (versions 0, 1 and 2)."""

from __future__ import annotations

import json

from fuzz_support import (
    FUZZ,
    KEEP_FAILURES_READABLE,
    byte_inputs,
    check,
    json_or_text_inputs,
    mutated_member,
    vector,
)
from hypothesis import given
from hypothesis import strategies as st

from custodes.attestation.verifiers.azure.evidence import (
    AzSnpEvidence,
    AzTdxEvidence,
    b64url_decode_any_padding,
    b64url_encode_padded,
)
from custodes.attestation.verifiers.azure.hcl import HclReport, HwReportType, RuntimeData
from custodes.attestation.verifiers.azure.tdreport import TdReport
from custodes.attestation.verifiers.tdx.quote import TdxQuote

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

_BASE = "trustee/deps/verifier/test_data"
HCL_REPORTS = [
    vector(f"{_BASE}/az-snp-vtpm/hcl-report.bin"),
    vector(f"{_BASE}/az-tdx-vtpm/hcl-report.bin"),
]
VAR_DATA = [HclReport.from_bytes(r).var_data for r in HCL_REPORTS]
TD_REPORTS = [
    HclReport.from_bytes(r).hw_report
    for r in HCL_REPORTS
    if HclReport.from_bytes(r).report_type is HwReportType.TDX
]
SNP_EVIDENCE = [
    json.loads(vector(f"{_BASE}/az-snp-vtpm/evidence-{v}.json")) for v in ("v0", "v1", "v2")
]
TDX_EVIDENCE = [json.loads(vector(f"{_BASE}/az-tdx-vtpm/evidence-{v}.json")) for v in ("v0", "v1")]


def _hcl(data: bytes) -> HclReport:
    report = HclReport.from_bytes(data)
    assert len(report.var_data_sha256) == 32
    if report.report_type is HwReportType.TDX:
        TdReport.from_bytes(report.hw_report)
    return report


def test_seeds_parse() -> None:
    assert all(isinstance(_hcl(r), HclReport) for r in HCL_REPORTS)
    assert TD_REPORTS and all(isinstance(TdReport.from_bytes(r), TdReport) for r in TD_REPORTS)
    assert [AzSnpEvidence.from_json(e).version for e in SNP_EVIDENCE] == [0, 1, 2]
    assert [AzTdxEvidence.from_json(e).version for e in TDX_EVIDENCE] == [0, 1]


@FUZZ
@given(data=byte_inputs(HCL_REPORTS))
def test_fuzz_azure_hcl_report(data: bytes) -> None:
    check("azure.hcl_report", _hcl, data, HclReport)


@FUZZ
@given(data=byte_inputs(VAR_DATA))
def test_fuzz_azure_runtime_data(data: bytes) -> None:
    check("azure.runtime_data", RuntimeData.from_bytes, data, RuntimeData)


@FUZZ
@given(data=byte_inputs(TD_REPORTS))
def test_fuzz_azure_td_report(data: bytes) -> None:
    check("azure.td_report", TdReport.from_bytes, data, TdReport)


@FUZZ
@given(
    evidence=st.one_of(
        json_or_text_inputs(SNP_EVIDENCE),
        mutated_member(
            SNP_EVIDENCE[2], ("hcl_report",), b64url_decode_any_padding, b64url_encode_padded
        ),
        mutated_member(SNP_EVIDENCE[2], ("tpm_quote", "message"), bytes.fromhex, bytes.hex),
        mutated_member(SNP_EVIDENCE[0], ("report",), bytes, list),
    )
)
def test_fuzz_azure_snp_evidence(evidence: object) -> None:
    def parse(value: object) -> AzSnpEvidence:
        parsed = AzSnpEvidence.from_json(value)
        _hcl(parsed.hcl_report)
        parsed.to_json()
        return parsed

    check("azure.snp_evidence", parse, evidence, AzSnpEvidence)


@FUZZ
@given(
    evidence=st.one_of(
        json_or_text_inputs(TDX_EVIDENCE),
        mutated_member(
            TDX_EVIDENCE[1], ("hcl_report",), b64url_decode_any_padding, b64url_encode_padded
        ),
        mutated_member(
            TDX_EVIDENCE[1], ("td_quote",), b64url_decode_any_padding, b64url_encode_padded
        ),
    )
)
def test_fuzz_azure_tdx_evidence(evidence: object) -> None:
    def parse(value: object) -> AzTdxEvidence:
        parsed = AzTdxEvidence.from_json(value)
        _hcl(parsed.hcl_report)
        TdxQuote.from_bytes(parsed.td_quote)
        parsed.to_json()
        return parsed

    check("azure.tdx_evidence", parse, evidence, AzTdxEvidence)
