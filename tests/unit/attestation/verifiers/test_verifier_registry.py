"""The one verifier factory (``verifiers/registry.py``): every registered TEE builds, the broker
enables what its settings allow, offline verification never touches the network, and each
evidence error names its own checklist step.

The network checks run a real HTTP server on loopback standing in for AMD KDS (it serves the
real VCEK of trustee's Genoa evidence) and count what reaches it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure.errors import HclBindingMismatch, TdQuoteUnverified
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.nvidia.errors import (
    ArchitectureUnsupported,
    FwidMismatch,
    SpdmMessageInvalid,
)
from custodes.attestation.verifiers.registry import (
    REGISTRY,
    VerifierSettings,
    build_verifier,
    build_verifiers,
)
from custodes.attestation.verifiers.snp.errors import (
    HwIdMismatch,
    ProcessorUnsupported,
    ReportSignatureInvalid,
    ReportVersionUnsupported,
    SignatureAlgorithmUnsupported,
    TcbMismatch,
    VekChainInvalid,
    VekExtensionInvalid,
    VekUnavailable,
    VmplNotZero,
)
from custodes.attestation.verifiers.tdx.errors import RtmrReplayMismatch, UnsupportedQuote
from custodes.attestation.verifiers.tpm.errors import (
    AkPublicKeyInvalid,
    PcrDigestMismatch,
    PcrSelectionUnsupported,
    QuoteHeaderInvalid,
)
from custodes.errors import (
    BindingMismatch,
    ChainInvalid,
    CollateralError,
    ConfigError,
    EvidenceError,
    InitDataMismatch,
    MalformedEvidence,
    SignatureInvalid,
    TcbError,
    VerificationError,
)
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

CLOCK = FrozenClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
E2E_EVIDENCE = Path("trustee/attestation-service/tests/e2e/evidence.json")
TDX_COLLATERAL = Path("dcap-qvl/tdx_quote_collateral.json")
AZ_TDX_EVIDENCE = Path("trustee/deps/verifier/test_data/az-tdx-vtpm/evidence-v1.json")
TDX_TEES = {Tee.TDX, Tee.AZ_TDX_VTPM}


@pytest.mark.parametrize("tee", list(REGISTRY))
def test_every_registered_tee_builds_offline(tee: Tee, vectors: Path) -> None:
    settings = VerifierSettings(tdx_collateral=vectors / TDX_COLLATERAL)
    verifier = build_verifier(tee, settings, CLOCK)
    assert verifier.tee is tee


def test_the_cli_lists_the_registry_in_its_order() -> None:
    from custodes.cli._evidence_input import COLLATERAL_TEES, SUPPORTED_TEES, VCEK_STORE_TEES

    assert SUPPORTED_TEES == (
        Tee.SNP,
        Tee.TDX,
        Tee.TPM,
        Tee.AZ_SNP_VTPM,
        Tee.AZ_TDX_VTPM,
        Tee.NVIDIA,
        Tee.SAMPLE,
    )
    assert COLLATERAL_TEES == TDX_TEES
    assert VCEK_STORE_TEES == {Tee.SNP}


def test_an_unregistered_tee_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no verifier for sgx"):
        build_verifier(Tee.SGX, VerifierSettings(), CLOCK)


def test_the_broker_enables_tdx_only_with_a_collateral_source(vectors: Path) -> None:
    without = build_verifiers(VerifierSettings(), CLOCK)
    assert set(without) == set(REGISTRY) - TDX_TEES
    with_file = build_verifiers(VerifierSettings(tdx_collateral=vectors / TDX_COLLATERAL), CLOCK)
    assert set(with_file) == set(REGISTRY)
    with_pccs = build_verifiers(VerifierSettings(tdx_pccs_url="https://pccs.invalid"), CLOCK)
    assert set(with_pccs) == set(REGISTRY)


def test_offline_tdx_never_uses_the_pccs(vectors: Path) -> None:
    """A PCCS URL alone is no collateral source offline: the TDX verifier is refused at build
    time, and the az-tdx-vtpm verifier refuses every TD quote (none can be checked)."""
    settings = VerifierSettings(tdx_pccs_url="https://pccs.invalid")
    with pytest.raises(ConfigError, match="needs collateral_path or pccs_url"):
        build_verifier(Tee.TDX, settings, CLOCK, network=False)
    assert build_verifier(Tee.TDX, settings, CLOCK, network=True).tee is Tee.TDX
    evidence = json.loads((vectors / AZ_TDX_EVIDENCE).read_bytes())
    request = VerificationRequest(Tee.AZ_TDX_VTPM, evidence, b"challenge")
    with pytest.raises(TdQuoteUnverified):
        build_verifier(Tee.AZ_TDX_VTPM, settings, CLOCK, network=False).verify(request)


# --- SNP: AMD KDS only with network=True ---------------------------------------------------


class _Kds:
    """A loopback HTTP server that answers every GET with one DER body and counts them."""

    def __init__(self, body: bytes) -> None:
        self.hits = 0
        kds = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                kds.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def genoa(vectors: Path) -> JsonObject:
    evidence: JsonObject = json.loads((vectors / E2E_EVIDENCE).read_bytes())
    return evidence


@pytest.fixture
def kds(genoa: JsonObject) -> Iterator[_Kds]:
    chain = genoa["cert_chain"]
    assert isinstance(chain, list) and isinstance(chain[0], dict)
    data = chain[0]["data"]
    assert isinstance(data, list)
    server = _Kds(bytes(data))  # the VCEK, as KDS serves it: DER
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def _without_vcek(genoa: JsonObject) -> VerificationRequest:
    evidence = copy.deepcopy(genoa)
    evidence["cert_chain"] = None
    report = genoa["attestation_report"]
    assert isinstance(report, dict) and isinstance(report["report_data"], list)
    return VerificationRequest(Tee.SNP, evidence, bytes(report["report_data"]))


def test_snp_fetches_from_kds_only_with_network(genoa: JsonObject, kds: _Kds) -> None:
    settings = VerifierSettings(snp_kds_url=kds.url)
    offline = build_verifier(Tee.SNP, settings, CLOCK)  # network=False is the default
    with pytest.raises(VekUnavailable, match="no VCEK in the evidence"):
        offline.verify(_without_vcek(genoa))
    assert kds.hits == 0
    online = build_verifier(Tee.SNP, settings, CLOCK, network=True)
    [claims] = online.verify(_without_vcek(genoa))
    assert claims.claims["reported_tcb_snp"] == 23
    assert kds.hits == 1
    # The broker's set is built with the network on.
    build_verifiers(settings, CLOCK)[Tee.SNP].verify(_without_vcek(genoa))
    assert kds.hits == 2


# --- each error names its checklist step ---------------------------------------------------

STEPS = [
    (ReportVersionUnsupported, "report-version"),
    (SignatureAlgorithmUnsupported, "signature-algorithm"),
    (VmplNotZero, "vmpl"),
    (ProcessorUnsupported, "processor"),
    (VekUnavailable, "vcek"),
    (VekExtensionInvalid, "vcek-extensions"),
    (HwIdMismatch, "vcek-extensions"),
    (TcbMismatch, "vcek-extensions"),
    (VekChainInvalid, "certificate-chain"),
    (ReportSignatureInvalid, "signature"),
    (AkPublicKeyInvalid, "ak-public"),
    (QuoteHeaderInvalid, "quote-header"),
    (PcrSelectionUnsupported, "pcrs"),
    (PcrDigestMismatch, "pcrs"),
    (RtmrReplayMismatch, "event-log"),
    (UnsupportedQuote, "parse"),
    (ArchitectureUnsupported, "architecture"),
    (SpdmMessageInvalid, "spdm-message"),
    (FwidMismatch, "fwid"),
    (HclBindingMismatch, "hcl-binding"),
    (MalformedEvidence, "parse"),
    (CollateralError, "collateral"),
    (ChainInvalid, "certificate-chain"),
    (SignatureInvalid, "signature"),
    (TcbError, "tcb"),
    (BindingMismatch, "report-data"),
    (InitDataMismatch, "init-data"),
    (VerificationError, "verification"),
    (EvidenceError, "evidence"),
]


@pytest.mark.parametrize(("cls", "step"), STEPS, ids=[c.__name__ for c, _ in STEPS])
def test_each_error_names_its_step(cls: type[EvidenceError], step: str) -> None:
    assert cls("x").step == step
