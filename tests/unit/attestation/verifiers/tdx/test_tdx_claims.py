"""TDX claims against trustee's golden ``parse_tdx_claims_expected.json``.

trustee's quotes come without collateral for their platforms (FMSPC 50806F000000,
90C06F000000, 00A06D080000), so they cannot pass DCAP verification here: these tests cover
parsing and claim building; the full path is tested with dcap-qvl's sample quote in
``test_tdx_verifier.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custodes.attestation.eventlog import CcEventLog
from custodes.attestation.verifiers.tdx import _dcap
from custodes.attestation.verifiers.tdx._dcap import QvlResult
from custodes.attestation.verifiers.tdx.claims import parsed_claims, tcb_claims
from custodes.attestation.verifiers.tdx.quote import TdxQuote


@pytest.fixture(scope="module")
def test_data(vectors: Path) -> Path:
    return vectors / "trustee" / "deps" / "verifier" / "test_data"


def test_tdx_claims_equal_upstream_golden(test_data: Path) -> None:
    raw = (test_data / "tdx_quote_4.dat").read_bytes()
    claims = parsed_claims(
        TdxQuote.from_bytes(raw),
        CcEventLog.from_bytes((test_data / "CCEL_data").read_bytes()),
        _dcap.pck_info(raw),
    )
    expected = json.loads((test_data / "parse_tdx_claims_expected.json").read_text())
    assert claims == expected


def test_tdx_claims_platform_instance_id_is_reversed_as_upstream(test_data: Path) -> None:
    raw = (test_data / "tdx_quote_4.dat").read_bytes()
    pck = _dcap.pck_info(raw)
    assert pck.platform_instance_id is not None
    assert pck.platform_instance_id.hex() == "021ac64d355ba904e2d5948d228d5482"
    claims = parsed_claims(TdxQuote.from_bytes(raw), None, pck)
    assert claims["platform_instance_id"] == "82548d228d94d5e204a95b354dc61a02"


def test_tdx_claims_without_event_log_have_no_uefi_event_logs(test_data: Path) -> None:
    claims = parsed_claims(TdxQuote.from_bytes((test_data / "tdx_quote_6.dat").read_bytes()), None)
    assert "uefi_event_logs" not in claims
    assert "platform_instance_id" not in claims
    assert claims["init_data"] == claims["quote"]["body"]["mr_config_id"]


def test_tdx_claims_v5_quote_has_type_and_size(test_data: Path) -> None:
    claims = parsed_claims(TdxQuote.from_bytes((test_data / "tdx_quote_5.dat").read_bytes()), None)
    assert claims["quote"]["type"] == "0300"
    assert claims["quote"]["size"] == "88020000"
    assert claims["td_attributes"]["debug"] is False


def test_tdx_tcb_claims_shape() -> None:
    # The shape of dcap-qvl's claims JSON, reduced to the fields read (values from its sample).
    qvl = {
        "tcb": {"status": "UpToDate", "advisory_ids": [], "eval_data_number": 17},
        "platform": {
            "tcb_date_tag": 1710288000,
            "pck": {
                "ppid": [0x81, 0x1D],
                "sgx_type": 1,
                "dynamic_platform": "True",
                "cached_keys": "False",
                "smt_enabled": "True",
            },
            "root_key_id": [0x46, 0xE4],
            "pck_crl_num": 1,
            "root_ca_crl_num": 2,
        },
        "earliest_issue_date": 1526899510,
        "latest_issue_date": 1750329147,
        "earliest_expiration_date": 1752919235,
    }
    claims = tcb_claims(QvlResult("UpToDate", ("INTEL-SA-00001",), qvl), "UpToDate")
    assert claims == {
        "tcb_status": "UpToDate",
        "advisory_ids": ["INTEL-SA-00001"],
        "collateral_expiration_status": "0",
        "tcb_date": "2024-03-13T00:00:00Z",
        "earliest_issue_date": "2018-05-21T10:45:10Z",
        "latest_issue_date": "2025-06-19T10:32:27Z",
        "earliest_expiration_date": "2025-07-19T10:00:35Z",
        "pck_crl_num": 1,
        "root_ca_crl_num": 2,
        "tcb_eval_num": 17,
        "platform_provider_id": "811d",
        "sgx_type": "Scalable",
        "is_dynamic_platform": True,
        "is_cached_keys": False,
        "is_smt_enabled": True,
        "root_key_id": "46e4",
    }


def test_tdx_tcb_claims_standard_platform_has_no_scalable_flags() -> None:
    qvl = {"platform": {"pck": {"sgx_type": 0}}}
    claims = tcb_claims(QvlResult("OutOfDate", (), qvl), "OutOfDate")
    assert claims["sgx_type"] == "Standard"
    assert "is_dynamic_platform" not in claims
