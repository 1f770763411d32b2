"""Fuzz the SEV-SNP parsers: the 1184-byte attestation report and upstream's evidence JSON."""

from __future__ import annotations

import json
from typing import cast

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

from custodes.attestation.verifiers.snp import SnpReport
from custodes.attestation.verifiers.snp.evidence import SnpEvidence

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

REPORTS = [
    vector("trustee/deps/verifier/test_data/snp/test-report.bin"),
    vector("trustee/deps/verifier/test_data/snp/test-vlek-report.bin"),
]
EVIDENCE = json.loads(vector("trustee/attestation-service/tests/e2e/evidence.json"))


def _exercise_report(data: bytes) -> SnpReport:
    report = SnpReport.from_bytes(data)
    # What the verifier derives from a parsed report before any signature check.
    assert report.generation is None or report.generation
    assert isinstance(report.cpuid_known, bool)
    assert all(0 <= n for n in report.signature_ints)
    assert report.signed_bytes
    return report


def test_seeds_parse() -> None:
    for raw in REPORTS:
        assert isinstance(_exercise_report(raw), SnpReport)
    assert isinstance(SnpEvidence.from_json(EVIDENCE), SnpEvidence)


@FUZZ
@given(data=byte_inputs(REPORTS))
def test_fuzz_snp_report(data: bytes) -> None:
    check("snp.report", _exercise_report, data, SnpReport)


def _report_bytes(value: object) -> bytes:
    return bytes(cast(list[int], value))


@FUZZ
@given(
    evidence=json_or_text_inputs([EVIDENCE])
    | mutated_member(EVIDENCE, ("cert_chain", 0, "data"), _report_bytes, list)
)
def test_fuzz_snp_evidence(evidence: object) -> None:
    def parse(value: object) -> SnpEvidence:
        parsed = SnpEvidence.from_json(value)
        parsed.to_json()
        return parsed

    check("snp.evidence", parse, evidence, SnpEvidence)
