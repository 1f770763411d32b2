"""The vTPM steps shared by both Azure verifiers (vtpm.py): steps 4-7 and the vTPM claims."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from az_test_helpers import (
    CHALLENGE,
    V2_REPORT_DATA,
    flip,
    load_json,
    rsa_jwk,
    standalone_evidence,
    synthetic_quote,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from custodes.attestation.verifiers.azure.errors import (
    QuoteNonceMismatch,
    QuoteSignatureInvalid,
    UserDataMismatch,
)
from custodes.attestation.verifiers.azure.evidence import AzSnpEvidence, VtpmQuote
from custodes.attestation.verifiers.azure.hcl import HclReport, RuntimeData
from custodes.attestation.verifiers.azure.vtpm import (
    check_nonce,
    check_quote_signature,
    check_user_data,
    verify_vtpm,
    vtpm_claims,
)
from custodes.attestation.verifiers.tpm.errors import (
    PcrDigestMismatch,
    QuoteHeaderInvalid,
)
from custodes.attestation.verifiers.tpm.structures import TpmsAttest
from custodes.errors import InitDataMismatch


@pytest.fixture(scope="module")
def v1(vectors: Path) -> tuple[AzSnpEvidence, HclReport, TpmsAttest]:
    evidence = AzSnpEvidence.from_json(load_json(vectors, "az-snp-vtpm", "evidence-v1.json"))
    attest = TpmsAttest.from_bytes(evidence.tpm_quote.message)
    return evidence, HclReport.from_bytes(evidence.hcl_report), attest


@pytest.fixture(scope="module")
def v2_runtime(vectors: Path) -> RuntimeData:
    evidence = AzSnpEvidence.from_json(load_json(vectors, "az-snp-vtpm", "evidence-v2.json"))
    return HclReport.from_bytes(evidence.hcl_report).runtime_data


@pytest.fixture(scope="module")
def synthetic_ak() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def _runtime(ak: rsa.RSAPublicKey, user_data: str | None) -> RuntimeData:
    doc: dict[str, object] = {"keys": [rsa_jwk(ak)]}
    if user_data is not None:
        doc["user-data"] = user_data
    return RuntimeData.from_bytes(json.dumps(doc).encode())


# --- step 4 ------------------------------------------------------------------------------


def test_az_vtpm_quote_signed_by_the_hcl_ak(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest],
) -> None:
    evidence, hcl, attest = v1
    info = check_quote_signature(hcl.runtime_data.ak_public, evidence.tpm_quote, attest)
    assert len(info.pcr_select.selections[0].indices) == 24


def test_az_vtpm_standalone_quote_signed_by_the_standalone_hcl_ak(vectors: Path) -> None:
    evidence = AzSnpEvidence.from_json(standalone_evidence(vectors))
    runtime = HclReport.from_bytes(evidence.hcl_report).runtime_data
    attest = TpmsAttest.from_bytes(evidence.tpm_quote.message)
    claims = verify_vtpm(
        version=1,
        runtime=runtime,
        quote=evidence.tpm_quote,
        attest=attest,
        report_data=CHALLENGE,
        init_data_digest=None,
    )
    assert claims["tpm"]["pcr00"] == (
        "f3a7e99a5f819a034386bce753a48a73cfdaa0bea0ecfc124bedbf5a8c4799be"
    )


def test_az_vtpm_flipped_signature_is_refused(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest],
) -> None:
    evidence, hcl, attest = v1
    quote = evidence.tpm_quote
    for bad in (flip(quote.signature, 0), flip(quote.signature, 255), quote.signature[:-1]):
        with pytest.raises(QuoteSignatureInvalid):
            check_quote_signature(
                hcl.runtime_data.ak_public, dataclasses.replace(quote, signature=bad), attest
            )


def test_az_vtpm_other_ak_is_refused(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest], synthetic_ak: rsa.RSAPrivateKey
) -> None:
    evidence, _, attest = v1
    other = synthetic_ak.public_key()
    with pytest.raises(QuoteSignatureInvalid):
        check_quote_signature(other, evidence.tpm_quote, attest)


def test_az_vtpm_not_a_tpm_generated_quote_is_refused(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest],
) -> None:
    evidence, hcl, _ = v1
    message = flip(evidence.tpm_quote.message, 0)  # magic
    with pytest.raises(QuoteHeaderInvalid):
        check_quote_signature(
            hcl.runtime_data.ak_public,
            dataclasses.replace(evidence.tpm_quote, message=message),
            TpmsAttest.from_bytes(message),
        )


# --- step 5 ------------------------------------------------------------------------------


def test_az_vtpm_nonce_is_exact(v1: tuple[AzSnpEvidence, HclReport, TpmsAttest]) -> None:
    _, _, attest = v1
    check_nonce(attest, CHALLENGE)
    for bad in (CHALLENGE + bytes(55), CHALLENGE[:8], b"egnellahc", b""):
        with pytest.raises(QuoteNonceMismatch):
            check_nonce(attest, bad)


def test_az_vtpm_v2_user_data_starts_with_the_digest(v2_runtime: RuntimeData) -> None:
    assert v2_runtime.user_data is not None and v2_runtime.user_data.isupper()
    check_user_data(v2_runtime, V2_REPORT_DATA)  # upper-case hex in the vector
    check_user_data(v2_runtime, V2_REPORT_DATA[:32])  # a SHA-256 binding digest
    with pytest.raises(UserDataMismatch):
        check_user_data(v2_runtime, flip(V2_REPORT_DATA, 47))
    with pytest.raises(UserDataMismatch):
        check_user_data(v2_runtime, V2_REPORT_DATA + bytes(17))  # longer than user-data


def test_az_vtpm_user_data_absent_or_not_hex_is_refused(synthetic_ak: rsa.RSAPrivateKey) -> None:
    ak = synthetic_ak.public_key()
    for user_data in (None, "0g" * 32, "abc", ""):
        with pytest.raises(UserDataMismatch):
            check_user_data(_runtime(ak, user_data), CHALLENGE)


# --- steps 4-7 together, and the claims --------------------------------------------------


def test_az_vtpm_verify_returns_upstreams_claims(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest],
) -> None:
    evidence, hcl, attest = v1
    claims = verify_vtpm(
        version=1,
        runtime=hcl.runtime_data,
        quote=evidence.tpm_quote,
        attest=attest,
        report_data=CHALLENGE,
        init_data_digest=None,
    )
    assert sorted(claims) == ["init_data", "report_data", "tpm"]
    assert claims["report_data"] == CHALLENGE.hex()
    assert sorted(claims["tpm"]) == [f"pcr{i:02d}" for i in range(24)]
    assert claims["tpm"]["pcr00"] == evidence.tpm_quote.pcrs[0].hex()
    assert claims["init_data"] == claims["tpm"]["pcr08"]


def test_az_vtpm_changed_pcr_is_refused(v1: tuple[AzSnpEvidence, HclReport, TpmsAttest]) -> None:
    evidence, hcl, attest = v1
    pcrs = list(evidence.tpm_quote.pcrs)
    pcrs[11] = flip(pcrs[11], 0)
    with pytest.raises(PcrDigestMismatch):
        verify_vtpm(
            version=1,
            runtime=hcl.runtime_data,
            quote=dataclasses.replace(evidence.tpm_quote, pcrs=tuple(pcrs)),
            attest=attest,
            report_data=CHALLENGE,
            init_data_digest=None,
        )


def _synthetic(
    key: rsa.RSAPrivateKey, init_digest: bytes, report_data: bytes
) -> tuple[RuntimeData, VtpmQuote, TpmsAttest]:
    """A quote by a synthetic AK (no Azure vTPM here) whose PCR 8 holds one extend of
    ``init_digest``: the vectors' PCR 8 is all zeros, so no real init-data matches it."""
    pcrs = [bytes(32)] * 24
    pcrs[8] = hashlib.sha256(bytes(32) + init_digest).digest()
    quote = synthetic_quote(key, report_data, tuple(pcrs))
    return (
        _runtime(key.public_key(), report_data.hex()),
        quote,
        TpmsAttest.from_bytes(quote.message),
    )


def test_az_vtpm_init_data_in_pcr8_accepted(synthetic_ak: rsa.RSAPrivateKey) -> None:
    digest = hashlib.sha256(b'version = "0.1.0"\nalgorithm = "sha256"\n').digest()
    runtime, quote, attest = _synthetic(synthetic_ak, digest, CHALLENGE)
    claims = verify_vtpm(
        version=2,
        runtime=runtime,
        quote=quote,
        attest=attest,
        report_data=CHALLENGE,
        init_data_digest=digest,
    )
    assert claims["init_data"] == hashlib.sha256(bytes(32) + digest).hexdigest()


def test_az_vtpm_init_data_wrong_or_sha384_is_refused(synthetic_ak: rsa.RSAPrivateKey) -> None:
    digest = hashlib.sha256(b"init-data").digest()
    runtime, quote, attest = _synthetic(synthetic_ak, digest, CHALLENGE)
    for bad in (flip(digest, 0), hashlib.sha384(b"init-data").digest(), digest + bytes(16)):
        with pytest.raises(InitDataMismatch):
            verify_vtpm(
                version=1,
                runtime=runtime,
                quote=quote,
                attest=attest,
                report_data=CHALLENGE,
                init_data_digest=bad,
            )


def test_az_vtpm_claims_only_for_quoted_pcrs(
    v1: tuple[AzSnpEvidence, HclReport, TpmsAttest],
) -> None:
    evidence, _, attest = v1
    claims = vtpm_claims(evidence.tpm_quote, attest, (0, 11))
    assert sorted(claims["tpm"]) == ["pcr00", "pcr11"]
    assert "init_data" not in claims
