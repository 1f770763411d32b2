"""TDX collateral sources: dcap-qvl JSON file, PcsClientTool JSON file, PCS/PCCS with a cache.

All collateral comes from dcap-qvl's sample (the only real quote with real collateral); the
PcsClientTool file and the PCS responses are that same collateral in those forms. The PCS
fetcher is a fake: no network can be reached from tests, so it answers from a table of URLs.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from urllib.parse import quote as urlquote

import httpx
import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tdx import (
    PcsResponse,
    TdxVerifier,
    TdxVerifierConfig,
    httpx_fetcher,
)
from custodes.attestation.verifiers.tdx.collateral import (
    Collateral,
    FileCollateralSource,
    PccsCollateralSource,
    _signed_part,
)
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.errors import CollateralError, ConfigError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

FMSPC = "B0C06F000000"
BASE = "https://pccs.example:8081"
ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def sample(vectors: Path) -> Path:
    return vectors / "dcap-qvl"


@pytest.fixture(scope="module")
def qvl_json(sample: Path) -> JsonObject:
    doc: JsonObject = json.loads((sample / "tdx_quote_collateral.json").read_text())
    return doc


@pytest.fixture(scope="module")
def quote(sample: Path) -> bytes:
    return (sample / "tdx_quote").read_bytes()


@pytest.fixture(scope="module")
def now(qvl_json: JsonObject) -> float:
    return _ts(json.loads(qvl_json["tcb_info"])["issueDate"]) + 3600


def _request(quote: bytes) -> VerificationRequest:
    evidence = {"quote": base64.b64encode(quote).decode()}
    return VerificationRequest(
        tee=Tee.TDX, evidence=evidence, report_data=TdxQuote.from_bytes(quote).report_data
    )


def _signed(c: JsonObject, key: str, name: str) -> JsonObject:
    return {name: json.loads(c[key]), "signature": c[f"{key}_signature"]}


def _pcs_client_tool(c: JsonObject) -> JsonObject:
    """The sample collateral in Intel PcsClientTool's form (issuer chain of the PCK CRL left
    out: it then comes from the quote's own PCK chain)."""
    return {
        "collaterals": {
            "tcbinfos": [
                {"fmspc": FMSPC.lower(), "tdx_tcbinfo": _signed(c, "tcb_info", "tcbInfo")}
            ],
            "pckcacrl": {"processorCrl": c["pck_crl"], "platformCrl": c["pck_crl"]},
            "tdqeidentity": _signed(c, "qe_identity", "enclaveIdentity"),
            "certificates": {
                "TCB-Info-Issuer-Chain": urlquote(c["tcb_info_issuer_chain"]),
                "SGX-Enclave-Identity-Issuer-Chain": c["qe_identity_issuer_chain"],
            },
            "rootcacrl": c["root_ca_crl"],
        }
    }


# --- files -------------------------------------------------------------------------------


def test_tdx_collateral_dcap_qvl_file_verifies(sample: Path, quote: bytes, now: float) -> None:
    config = TdxVerifierConfig(
        collateral_path=sample / "tdx_quote_collateral.json", clock=FrozenClock(now)
    )
    [result] = TdxVerifier(config).verify(_request(quote))
    assert result.claims["tcb_status"] == "UpToDate"


def test_tdx_collateral_pcs_client_tool_file_verifies(
    qvl_json: JsonObject, quote: bytes, now: float, tmp_path: Path
) -> None:
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(_pcs_client_tool(qvl_json)))
    config = TdxVerifierConfig(collateral_path=path, clock=FrozenClock(now))
    [result] = TdxVerifier(config).verify(_request(quote))
    assert result.claims["tcb_status"] == "UpToDate"


def test_tdx_collateral_pcs_client_tool_prefers_early_tcb_info(
    qvl_json: JsonObject, quote: bytes, now: float, tmp_path: Path
) -> None:
    doc = _pcs_client_tool(qvl_json)
    entry = doc["collaterals"]["tcbinfos"][0]
    entry["tdx_tcbinfo_early"] = entry["tdx_tcbinfo"]
    entry["tdx_tcbinfo"] = {**entry["tdx_tcbinfo"], "signature": "00" * 64}  # bad signature
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(doc))
    early = TdxVerifierConfig(collateral_path=path, clock=FrozenClock(now))
    assert TdxVerifier(early).verify(_request(quote))[0].claims["tcb_status"] == "UpToDate"
    standard = TdxVerifierConfig(
        collateral_path=path, clock=FrozenClock(now), tcb_update="standard"
    )
    with pytest.raises(CollateralError):
        TdxVerifier(standard).verify(_request(quote))


def test_tdx_collateral_pcs_client_tool_unknown_fmspc(
    qvl_json: JsonObject, quote: bytes, tmp_path: Path
) -> None:
    doc = _pcs_client_tool(qvl_json)
    doc["collaterals"]["tcbinfos"][0]["fmspc"] = "00A06D080000"
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CollateralError):
        FileCollateralSource(path).collateral_for(
            fmspc=FMSPC, ca="platform", pck_chain_pem=b"", now=0.0
        )


@pytest.mark.parametrize(
    "content",
    [None, "not json", "[]", '{"tcb_info": "x"}', '{"collaterals": {"tcbinfos": 3}}'],
)
def test_tdx_collateral_bad_file_is_config_error(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "collateral.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError):
        FileCollateralSource(path)


def test_tdx_collateral_window_is_checked(qvl_json: JsonObject) -> None:
    collateral = Collateral.from_dcap_qvl_json(qvl_json)
    not_before, not_after = collateral.window()
    # The PCK CRL expires first; the QE identity was issued last.
    assert not_after == _ts("2025-07-19T10:00:35Z")
    assert not_before == _ts(json.loads(qvl_json["qe_identity"])["issueDate"])
    collateral.check(not_before)
    with pytest.raises(CollateralError):
        collateral.check(not_after)
    with pytest.raises(CollateralError):
        collateral.check(not_before - 1)


def test_tdx_collateral_signed_part_is_cut_from_the_text() -> None:
    body = '{ "tcbInfo" : {"b": 1, "a":[2, {"x":"}"}]} ,"signature":"0a0b" }'
    text, signature = _signed_part(body, "tcbInfo")
    assert text == '{"b": 1, "a":[2, {"x":"}"}]}'
    assert signature == b"\x0a\x0b"
    with pytest.raises(CollateralError):
        _signed_part('{"tcbInfo": {}}', "tcbInfo")
    with pytest.raises(CollateralError):
        _signed_part('{"tcbInfo": {}, "signature": "00"} trailing', "tcbInfo")


# --- PCS / PCCS --------------------------------------------------------------------------


class FakePcs:
    """Answers PCS/PCCS URLs from the sample collateral and counts the requests."""

    def __init__(self, c: JsonObject) -> None:
        tcb = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
        qe = (
            '{"enclaveIdentity":' + c["qe_identity"]
            + ',"signature":"' + c["qe_identity_signature"] + '"}'
        )  # fmt: skip
        self.routes: dict[str, PcsResponse] = {
            f"{BASE}/tdx/certification/v4/tcb?fmspc={FMSPC}&update=early": PcsResponse(
                tcb.encode(), {"tcb-info-issuer-chain": urlquote(c["tcb_info_issuer_chain"])}
            ),
            f"{BASE}/tdx/certification/v4/qe/identity?update=early": PcsResponse(
                qe.encode(),
                {"SGX-Enclave-Identity-Issuer-Chain": urlquote(c["qe_identity_issuer_chain"])},
            ),
            f"{BASE}/sgx/certification/v4/pckcrl?ca=platform&encoding=der": PcsResponse(
                bytes.fromhex(c["pck_crl"]),
                {"SGX-PCK-CRL-Issuer-Chain": urlquote(c["pck_crl_issuer_chain"])},
            ),
            ROOT_CRL_URL: PcsResponse(c["root_ca_crl"].encode()),  # hex, as a PCCS serves it
        }
        self.requests: list[str] = []

    def __call__(self, url: str) -> PcsResponse:
        self.requests.append(url)
        if url not in self.routes:
            raise OSError(f"404 {url}")
        return self.routes[url]


def test_tdx_collateral_from_pccs_verifies_and_is_cached(
    qvl_json: JsonObject, quote: bytes, now: float
) -> None:
    fetcher = FakePcs(qvl_json)
    clock = FrozenClock(now)
    config = TdxVerifierConfig(pccs_url=BASE + "/", fetcher=fetcher, clock=clock, cache_ttl=3600)
    verifier = TdxVerifier(config)
    assert verifier.verify(_request(quote))[0].claims["tcb_status"] == "UpToDate"
    assert sorted(fetcher.requests) == sorted(fetcher.routes)
    verifier.verify(_request(quote))
    assert len(fetcher.requests) == 4  # served from the cache
    clock.advance(3601)
    verifier.verify(_request(quote))
    assert len(fetcher.requests) == 8  # the cache entry expired after cache_ttl


def test_tdx_collateral_from_pccs_equals_file_form(qvl_json: JsonObject, quote: bytes) -> None:
    source = PccsCollateralSource(BASE, FakePcs(qvl_json))
    pck_chain = TdxQuote.from_bytes(quote).signature_data.pck_chain_pem
    fetched = source.collateral_for(fmspc=FMSPC, ca="platform", pck_chain_pem=pck_chain, now=0.0)
    assert fetched == Collateral.from_dcap_qvl_json(qvl_json)


def test_tdx_collateral_pccs_failure_is_collateral_error(
    qvl_json: JsonObject, quote: bytes, now: float
) -> None:
    fetcher = FakePcs(qvl_json)
    del fetcher.routes[ROOT_CRL_URL]
    config = TdxVerifierConfig(pccs_url=BASE, fetcher=fetcher, clock=FrozenClock(now))
    with pytest.raises(CollateralError):
        TdxVerifier(config).verify(_request(quote))


def test_tdx_collateral_pccs_missing_issuer_header_is_collateral_error(
    qvl_json: JsonObject, quote: bytes, now: float
) -> None:
    fetcher = FakePcs(qvl_json)
    url = f"{BASE}/tdx/certification/v4/tcb?fmspc={FMSPC}&update=early"
    fetcher.routes[url] = PcsResponse(fetcher.routes[url].body, {})
    config = TdxVerifierConfig(pccs_url=BASE, fetcher=fetcher, clock=FrozenClock(now))
    with pytest.raises(CollateralError):
        TdxVerifier(config).verify(_request(quote))


def test_tdx_collateral_pccs_url_must_be_http() -> None:
    with pytest.raises(ConfigError):
        PccsCollateralSource("file:///etc/collateral.json", lambda url: PcsResponse(b""))


def test_tdx_collateral_httpx_fetcher_returns_body_and_headers() -> None:
    # httpx with a mock transport: the real client code, no network.
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/missing":
            return httpx.Response(404)
        return httpx.Response(200, content=b"body", headers={"TCB-Info-Issuer-Chain": "x"})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        fetch = httpx_fetcher(client)
        response = fetch(f"{BASE}/tdx/certification/v4/tcb")
        assert response.body == b"body"
        assert response.header("tcb-info-issuer-chain") == "x"
        with pytest.raises(httpx.HTTPStatusError):
            fetch(f"{BASE}/missing")
