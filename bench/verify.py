"""Evidence verification throughput per TEE, as a ratio to a cryptographic floor measured in
the same run.

For each TEE's real vector, the real verifier's ``verify()`` (evidence already parsed from
JSON, as the broker hands it over; caches warm, as in a running broker) against the floor, the
cryptography that cannot be avoided:

* snp: one ECDSA P-384 verify of the report with the (already parsed) VCEK public key;
* tdx: ``dcap_qvl.verify`` alone on the same quote and collateral (dcap-qvl's sample);
* tpm: one signature verify of the quote with the AK;
* az-snp-vtpm: one ECDSA P-384 verify (SNP report) and one RSA verify (vTPM quote);
* nvidia: one ECDSA P-384 verify of the GPU's SPDM report with the (already parsed) leaf key
  (upstream's recorded H100 report, pinned NVIDIA root; the device chain is cached as SNP's).

Verifier and floor run in alternating short slices, so that both see the same machine load.
Prints TEE, verifications/s, floor/s and the ratio (verifier / floor; 1.0 = no overhead).

Usage: .venv/bin/python bench/verify.py [--seconds 2] [--only snp,tdx] [--profile TEE]
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import json
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzSnpVtpmVerifier, AzureVerifierConfig
from custodes.attestation.verifiers.azure.snp_verifier import ParsedAzSnp
from custodes.attestation.verifiers.base import VerificationRequest, Verifier
from custodes.attestation.verifiers.nvidia import HopperReport, NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.snp import SnpEvidence, SnpVerifier, SnpVerifierConfig
from custodes.attestation.verifiers.snp.certs import load_der_certificate
from custodes.attestation.verifiers.tdx import TdxQuote, TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.attestation.verifiers.tpm.evidence import TpmEvidence
from custodes.attestation.verifiers.tpm.structures import (
    TpmsAttest,
    TpmsSignatureRsa,
    TpmtSignature,
)
from custodes.types.tee import Tee

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VECTORS = REPO / "tests" / "vectors"
TEST_DATA = Path("trustee/deps/verifier/test_data")
# Inside the SNP/Azure VCEKs' validity windows.
SNP_NOW = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
# README "Azure vTPM" row: the report data of az-snp-vtpm/evidence-v2.json.
AZ_V2_REPORT_DATA = bytes.fromhex(
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
SLICE_SECONDS = 0.05


@dataclass
class Case:
    tee: str
    verify: Callable[[], object]
    floor: Callable[[], object]
    floor_what: str


def _snp(vectors: Path) -> Case:
    evidence = json.loads(
        (vectors / "trustee/attestation-service/tests/e2e/evidence.json").read_text()
    )
    report = SnpEvidence.from_json(evidence).report
    verifier = SnpVerifier(SnpVerifierConfig(clock=FrozenClock(SNP_NOW)))
    request = VerificationRequest(Tee.SNP, evidence, report.report_data)
    vcek = load_der_certificate(bytes(evidence["cert_chain"][0]["data"]), "VCEK").public_key()
    assert isinstance(vcek, ec.EllipticCurvePublicKey)
    signature = encode_dss_signature(*report.signature_ints)
    signed = report.signed_bytes

    def floor() -> None:
        vcek.verify(signature, signed, ec.ECDSA(hashes.SHA384()))

    return Case("snp", _verifier_call(verifier, request), floor, "1 ECDSA P-384 verify")


def _tdx(vectors: Path) -> Case:
    quote = (vectors / "dcap-qvl/tdx_quote").read_bytes()
    collateral_path = vectors / "dcap-qvl/tdx_quote_collateral.json"
    collateral_text = collateral_path.read_text()
    issued = json.loads(json.loads(collateral_text)["tcb_info"])["issueDate"]
    now = datetime.fromisoformat(issued.replace("Z", "+00:00")).timestamp() + 3600
    verifier = TdxVerifier(
        TdxVerifierConfig(collateral_path=collateral_path, clock=FrozenClock(now))
    )
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
    request = VerificationRequest(Tee.TDX, evidence, TdxQuote.from_bytes(quote).report_data)
    collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)

    def floor() -> None:
        dcap_qvl.verify(quote, collateral, int(now))

    return Case("tdx", _verifier_call(verifier, request), floor, "dcap_qvl.verify")


def _tpm(vectors: Path) -> Case:
    raw = json.loads((vectors / TEST_DATA / "tpm_evidence.json").read_text())
    parsed = TpmEvidence.from_json(raw)
    extra_data = TpmsAttest.from_bytes(parsed.quote.message).extra_data
    request = VerificationRequest(Tee.TPM, raw, extra_data)
    ak = load_der_public_key(parsed.ak_public)
    detail = TpmtSignature.from_bytes(parsed.quote.signature).detail
    assert isinstance(ak, rsa.RSAPublicKey) and isinstance(detail, TpmsSignatureRsa)
    signature, message = detail.sig, parsed.quote.message

    def floor() -> None:
        ak.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())

    return Case("tpm", _verifier_call(TpmVerifier(), request), floor, "1 RSA-2048 verify")


def _az_snp(vectors: Path) -> Case:
    raw = json.loads((vectors / TEST_DATA / "az-snp-vtpm/evidence-v2.json").read_text())
    parsed = ParsedAzSnp.from_json(raw)
    verifier = AzSnpVtpmVerifier(AzureVerifierConfig(clock=FrozenClock(SNP_NOW)))
    request = VerificationRequest(Tee.AZ_SNP_VTPM, raw, AZ_V2_REPORT_DATA)
    vcek = load_der_certificate(parsed.evidence.vcek, "VCEK").public_key()
    assert isinstance(vcek, ec.EllipticCurvePublicKey)
    report = parsed.snp_report
    signature = encode_dss_signature(*report.signature_ints)
    signed = report.signed_bytes
    ak = parsed.hcl.runtime_data.ak_public
    quote = parsed.evidence.tpm_quote

    def floor() -> None:
        vcek.verify(signature, signed, ec.ECDSA(hashes.SHA384()))
        ak.verify(quote.signature, quote.message, padding.PKCS1v15(), hashes.SHA256())

    return Case(
        "az-snp-vtpm", _verifier_call(verifier, request), floor, "1 P-384 + 1 RSA-2048 verify"
    )


def _nvidia(vectors: Path) -> Case:
    folder = vectors / TEST_DATA / "nvidia"
    report = bytes.fromhex((folder / "hopperAttestationReport.txt").read_text())
    chain = (folder / "hopper_cert_chain_case1.txt").read_bytes()
    evidence = {
        "device_evidence_list": [
            {
                "arch": "HOPPER",
                "uuid": "GPU-bench",
                "evidence": report.hex(),
                "certificate": base64.b64encode(chain).decode(),
            }
        ]
    }
    parsed = HopperReport.parse(report)
    request = VerificationRequest(Tee.NVIDIA, evidence, parsed.request.nonce)
    verifier = NvidiaVerifier(NvidiaVerifierConfig(clock=FrozenClock(SNP_NOW)))
    leaf = x509.load_pem_x509_certificates(chain)[0].public_key()
    assert isinstance(leaf, ec.EllipticCurvePublicKey)
    half = len(parsed.response.signature) // 2
    signature = encode_dss_signature(
        int.from_bytes(parsed.response.signature[:half], "big"),
        int.from_bytes(parsed.response.signature[half:], "big"),
    )
    signed = parsed.signed_bytes

    def floor() -> None:
        leaf.verify(signature, signed, ec.ECDSA(hashes.SHA384()))

    return Case("nvidia", _verifier_call(verifier, request), floor, "1 ECDSA P-384 verify")


def _verifier_call(verifier: Verifier, request: VerificationRequest) -> Callable[[], object]:
    def call() -> object:
        return verifier.verify(request)

    return call


CASES: dict[str, Callable[[Path], Case]] = {
    "snp": _snp,
    "tdx": _tdx,
    "tpm": _tpm,
    "az-snp-vtpm": _az_snp,
    "nvidia": _nvidia,
}


def _slice(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        fn()
        count += 1
        now = time.perf_counter()
    return count, now - start


def measure(case: Case, seconds: float) -> tuple[float, float]:
    """(verifier/s, floor/s), alternating slices for ``seconds`` in all."""
    case.verify()  # warm: chain caches, imports, first-call costs
    case.floor()
    counts = [0, 0]
    elapsed = [0.0, 0.0]
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for i, fn in enumerate((case.verify, case.floor)):
            n, t = _slice(fn, SLICE_SECONDS)
            counts[i] += n
            elapsed[i] += t
    return counts[0] / elapsed[0], counts[1] / elapsed[1]


def profile(case: Case, seconds: float, top: int) -> None:
    case.verify()
    profiler = cProfile.Profile()
    profiler.enable()
    _slice(case.verify, seconds)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per TEE (default 2)")
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS)
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--profile", choices=list(CASES), help="cProfile one TEE's verifier")
    parser.add_argument("--top", type=int, default=20, help="rows of the profile")
    args = parser.parse_args()
    if args.profile:
        profile(CASES[args.profile](args.vectors), args.seconds, args.top)
        return 0
    names = args.only.split(",") if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown TEE {', '.join(unknown)}")
    print(f"{'TEE':<12} {'verifier/s':>11} {'floor/s':>10} {'ratio':>6}  floor")
    for name in names:
        case = CASES[name](args.vectors)
        verifier_rate, floor_rate = measure(case, args.seconds)
        print(
            f"{case.tee:<12} {verifier_rate:>11.0f} {floor_rate:>10.0f} "
            f"{verifier_rate / floor_rate:>6.2f}  {case.floor_what}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
