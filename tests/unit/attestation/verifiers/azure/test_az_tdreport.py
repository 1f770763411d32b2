"""The TDREPORT parser (tdreport.py) on the az-tdx-vtpm HCL vector."""

from __future__ import annotations

from pathlib import Path

import pytest
from az_test_helpers import flip, vector_dir

from custodes.attestation.verifiers.azure.hcl import HclReport
from custodes.attestation.verifiers.azure.tdreport import TdReport
from custodes.attestation.verifiers.tdx import TdxQuote
from custodes.errors import MalformedEvidence


@pytest.fixture(scope="module")
def td_report_bytes(vectors: Path) -> bytes:
    hcl = (vector_dir(vectors) / "az-tdx-vtpm" / "hcl-report.bin").read_bytes()
    return HclReport.from_bytes(hcl).hw_report


@pytest.fixture(scope="module")
def td_quote(vectors: Path) -> TdxQuote:
    return TdxQuote.from_bytes((vector_dir(vectors) / "az-tdx-vtpm" / "td-quote.bin").read_bytes())


def test_az_tdreport_fields_match_the_quoted_body(
    td_report_bytes: bytes, td_quote: TdxQuote
) -> None:
    report, body = TdReport.from_bytes(td_report_bytes), td_quote.body
    assert (report.report_type, report.report_subtype) == (0x81, 0)
    assert report.report_data == body.report_data
    assert report.tee_tcb_svn == body.tcb_svn
    assert (report.mr_seam, report.mrsigner_seam) == (body.mr_seam, body.mrsigner_seam)
    assert report.seam_attributes == body.seam_attributes
    assert (report.td_attributes, report.xfam) == (body.td_attributes, body.xfam)
    assert (report.mr_td, report.mr_config_id) == (body.mr_td, body.mr_config_id)
    assert (report.mr_owner, report.mr_owner_config) == (body.mr_owner, body.mr_owner_config)
    assert report.rtmrs == body.rtmrs
    assert report.xfam.hex() == "e718060000000000"


def test_az_tdreport_wrong_size_is_malformed(td_report_bytes: bytes) -> None:
    for bad in (td_report_bytes[:-1], td_report_bytes + b"\x00"):
        with pytest.raises(MalformedEvidence):
            TdReport.from_bytes(bad)


def test_az_tdreport_other_report_type_is_malformed(td_report_bytes: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        TdReport.from_bytes(flip(td_report_bytes, 0, 0xFF))
