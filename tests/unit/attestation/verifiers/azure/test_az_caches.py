"""The az-snp-vtpm verifier's caches and one-pass decoders: bounded, equivalent to the slow
path, and never a way around a check.

Cached: the VCEK's ``VekInfo`` per verified VEK (on top of the ``snp`` chain cache, which
re-checks the validity windows against the clock on every call) and the HCL AK's RSA key per
JWK ``n``/``e``. One-pass: the vTPM quote's hex members and its 24 PCRs. All on upstream's
real vectors at a frozen clock.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from az_test_helpers import CHALLENGE, FROZEN_NOW, SNP_IN_HCL, flip, load_json

from custodes._internal.b64 import b64url_encode
from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.azure import AzSnpVtpmVerifier, AzureVerifierConfig
from custodes.attestation.verifiers.azure import hcl as hcl_module
from custodes.attestation.verifiers.azure.errors import HclReportInvalid, QuoteSignatureInvalid
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.snp import checks as snp_checks
from custodes.attestation.verifiers.snp.certs import VekInfo, load_der_certificate
from custodes.attestation.verifiers.snp.errors import TcbMismatch, VekChainInvalid
from custodes.errors import MalformedEvidence
from custodes.types.tee import Tee

SNP = "az-snp-vtpm"
REPORTED_TCB_SNP = 0x186  # REPORTED_TCB.snp in the SNP report


@pytest.fixture(scope="module")
def v1(vectors: Path) -> AzSnpEvidence:
    return AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v1.json"))


def _request(evidence: AzSnpEvidence) -> VerificationRequest:
    return VerificationRequest(Tee.AZ_SNP_VTPM, evidence.to_json(), CHALLENGE)


def _verifier(clock: FrozenClock) -> AzSnpVtpmVerifier:
    return AzSnpVtpmVerifier(AzureVerifierConfig(clock=clock))


# --- time-dependent checks still run on every call --------------------------------------


def test_az_snp_vcek_expiry_after_a_successful_verify_is_refused(v1: AzSnpEvidence) -> None:
    clock = FrozenClock(FROZEN_NOW)
    verifier = _verifier(clock)
    verifier.verify(_request(v1))  # fills the chain and VekInfo caches
    not_after = load_der_certificate(v1.vcek, "VCEK").not_valid_after_utc.timestamp()
    clock.advance(not_after + 1 - clock.now())
    with pytest.raises(VekChainInvalid):
        verifier.verify(_request(v1))


def test_az_snp_vcek_not_yet_valid_after_a_successful_verify_is_refused(
    v1: AzSnpEvidence,
) -> None:
    clock = FrozenClock(FROZEN_NOW)
    verifier = _verifier(clock)
    verifier.verify(_request(v1))
    not_before = load_der_certificate(v1.vcek, "VCEK").not_valid_before_utc.timestamp()
    clock.advance(not_before - 1 - clock.now())
    with pytest.raises(VekChainInvalid):
        verifier.verify(_request(v1))


# --- the VekInfo cache -------------------------------------------------------------------


def test_az_snp_vek_info_is_cached_once_per_vek(v1: AzSnpEvidence) -> None:
    verifier = _verifier(FrozenClock(FROZEN_NOW))
    verifier.verify(_request(v1))
    verifier.verify(_request(v1))
    [(vek, info)] = verifier._vek_extensions.cache.values()
    assert info == VekInfo.from_certificate(vek.certificate)


def test_az_snp_cached_vek_info_is_still_compared_with_the_report(v1: AzSnpEvidence) -> None:
    verifier = _verifier(FrozenClock(FROZEN_NOW))
    verifier.verify(_request(v1))
    edited = dataclasses.replace(v1, hcl_report=flip(v1.hcl_report, SNP_IN_HCL + REPORTED_TCB_SNP))
    with pytest.raises(TcbMismatch):
        verifier.verify(_request(edited))


def test_az_snp_vek_info_cache_is_bounded(
    v1: AzSnpEvidence, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert snp_checks.MAX_CACHED_VEK_INFOS == 1024
    monkeypatch.setattr(snp_checks, "MAX_CACHED_VEK_INFOS", 2)
    verifier = _verifier(FrozenClock(FROZEN_NOW))
    verifier.verify(_request(v1))
    [(vek, _)] = verifier._vek_extensions.cache.values()
    # Other VerifiedVek objects (as the chain cache would hand out after evicting one).
    others = [dataclasses.replace(vek) for _ in range(3)]
    for other in others:
        verifier._vek_extensions.info(other)
    assert len(verifier._vek_extensions.cache) == 2
    assert [entry[0] for entry in verifier._vek_extensions.cache.values()] == others[1:]


# --- the AK cache ------------------------------------------------------------------------


def test_az_cached_ak_does_not_skip_the_quote_signature(v1: AzSnpEvidence) -> None:
    verifier = _verifier(FrozenClock(FROZEN_NOW))
    verifier.verify(_request(v1))
    hits = hcl_module._rsa_ak.cache_info().hits
    quote = dataclasses.replace(v1.tpm_quote, signature=flip(v1.tpm_quote.signature, 5))
    with pytest.raises(QuoteSignatureInvalid):
        verifier.verify(_request(dataclasses.replace(v1, tpm_quote=quote)))
    assert hcl_module._rsa_ak.cache_info().hits > hits


def test_az_refused_ak_is_never_cached() -> None:
    before = hcl_module._rsa_ak.cache_info()
    for _ in range(2):
        with pytest.raises(HclReportInvalid):
            hcl_module._rsa_ak("AQAB", "AQAB")  # a 17-bit modulus
        with pytest.raises(HclReportInvalid):
            hcl_module._rsa_ak("not base64url!", "AQAB")
    after = hcl_module._rsa_ak.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (4, 0)


def test_az_ak_cache_is_bounded(v1: AzSnpEvidence) -> None:
    assert hcl_module._rsa_ak.cache_info().maxsize == hcl_module.MAX_CACHED_AKS
    keys = hcl_module.HclReport.from_bytes(v1.hcl_report).runtime_data.keys
    [n] = [k["n"] for k in keys if k.get("kid") == hcl_module.AK_KID]
    assert isinstance(n, str)
    # Distinct keys without generating RSA keys: the vector AK's modulus with other odd
    # public exponents (valid RSA public keys, never used to verify anything).
    for i in range(hcl_module.MAX_CACHED_AKS + 3):
        e = b64url_encode((3 + 2 * i).to_bytes(2, "big"))
        assert hcl_module._rsa_ak(n, e).public_numbers().e == 3 + 2 * i
    assert hcl_module._rsa_ak.cache_info().currsize == hcl_module.MAX_CACHED_AKS


# --- the one-pass hex decoders accept exactly what the regex did -------------------------


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("signature", "ab cd"),  # whitespace that bytes.fromhex alone would skip
        ("signature", "abcd "),
        ("signature", "\tabcd"),
        ("message", "abc"),
        ("message", "ab\u0660\u0660"),  # non-ASCII digits
        ("message", "0x00"),
        ("pcrs", 5),
    ],
)
def test_az_quote_hex_members_refuse_what_the_regex_refused(
    vectors: Path, member: str, value: Any
) -> None:
    raw = load_json(vectors, SNP, "evidence-v1.json")
    raw["tpm_quote"][member] = value
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(raw)


@pytest.mark.parametrize(
    "pcr",
    ["0" * 63 + " ", " " + "0" * 63, "00 " + "0" * 61, "0" * 63 + "\uff10", "0" * 62, None],
)
def test_az_quote_pcr_refuses_what_the_regex_refused(vectors: Path, pcr: Any) -> None:
    raw = load_json(vectors, SNP, "evidence-v1.json")
    for index in (0, 23):
        edited = copy.deepcopy(raw)
        edited["tpm_quote"]["pcrs"][index] = pcr
        with pytest.raises(MalformedEvidence):
            AzSnpEvidence.from_json(edited)


def test_az_quote_hex_accepts_either_case(vectors: Path, v1: AzSnpEvidence) -> None:
    raw = load_json(vectors, SNP, "evidence-v1.json")
    quote = raw["tpm_quote"]
    quote["signature"] = quote["signature"].upper()
    quote["pcrs"] = [p.upper() for p in quote["pcrs"]]
    assert AzSnpEvidence.from_json(raw) == v1


@pytest.mark.parametrize("value", [True, False, 256, -1, 1.0, "1"])
def test_az_v0_byte_arrays_refuse_non_bytes(vectors: Path, value: Any) -> None:
    raw = load_json(vectors, SNP, "evidence-v0.json")
    raw["quote"]["message"][0] = value
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(raw)
