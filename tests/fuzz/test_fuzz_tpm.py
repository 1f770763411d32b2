"""Fuzz the TPM parsers: TPMS_ATTEST, TPMT_SIGNATURE, TPML_PCR_SELECTION, the AK public key
(DER SPKI) and the evidence JSON."""

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

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.verifiers.tpm.evidence import TpmEvidence
from custodes.attestation.verifiers.tpm.structures import (
    TpmlPcrSelection,
    TpmsAttest,
    TpmtSignature,
)
from custodes.attestation.verifiers.tpm.verifier import parse_ak_public

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

EVIDENCE = json.loads(vector("trustee/deps/verifier/test_data/tpm_evidence.json"))
MESSAGES = [
    b64std_decode(EVIDENCE["tpm_quote"]["message"]),
    vector("trustee/deps/verifier/test_data/az-snp-vtpm/tpm-quote.msg"),
]
SIGNATURES = [b64std_decode(EVIDENCE["tpm_quote"]["signature"])]
AK_PUBLIC = [b64std_decode(EVIDENCE["ak_public"])]
# count 1; SHA-256 bank, 3 select bytes, PCRs 0-23 / count 2 with a SHA-1 bank of PCR 8.
PCR_SELECTIONS = [
    bytes.fromhex("00000001000b03ffffff"),
    bytes.fromhex("00000002000b03ffffff000403000100"),
]


def test_seeds_parse() -> None:
    evidence = TpmEvidence.from_json(EVIDENCE)
    assert isinstance(TpmsAttest.from_bytes(evidence.quote.message), TpmsAttest)
    assert all(isinstance(TpmsAttest.from_bytes(m), TpmsAttest) for m in MESSAGES)
    assert isinstance(TpmtSignature.from_bytes(SIGNATURES[0]), TpmtSignature)
    assert all(isinstance(TpmlPcrSelection.from_bytes(s), TpmlPcrSelection) for s in PCR_SELECTIONS)
    assert parse_ak_public(AK_PUBLIC[0]) is not None


@FUZZ
@given(data=byte_inputs(MESSAGES))
def test_fuzz_tpm_attest(data: bytes) -> None:
    check("tpm.attest", TpmsAttest.from_bytes, data, TpmsAttest)


@FUZZ
@given(data=byte_inputs(SIGNATURES))
def test_fuzz_tpm_signature(data: bytes) -> None:
    check("tpm.signature", TpmtSignature.from_bytes, data, TpmtSignature)


@FUZZ
@given(data=byte_inputs(PCR_SELECTIONS, max_random=64))
def test_fuzz_tpm_pcr_selection(data: bytes) -> None:
    check("tpm.pcr_selection", TpmlPcrSelection.from_bytes, data, TpmlPcrSelection)


@FUZZ
@given(data=byte_inputs(AK_PUBLIC))
def test_fuzz_tpm_ak_public(data: bytes) -> None:
    check("tpm.ak_public", parse_ak_public, data, object)


@FUZZ
@given(
    evidence=st.one_of(
        json_or_text_inputs([EVIDENCE]),
        mutated_member(EVIDENCE, ("tpm_quote", "message"), b64std_decode, b64std_encode),
        mutated_member(EVIDENCE, ("tpm_quote", "signature"), b64std_decode, b64std_encode),
        mutated_member(EVIDENCE, ("tpm_quote", "pcrs", 0), bytes.fromhex, bytes.hex),
    )
)
def test_fuzz_tpm_evidence(evidence: object) -> None:
    def parse(value: object) -> TpmEvidence:
        parsed = TpmEvidence.from_json(value)
        TpmsAttest.from_bytes(parsed.quote.message)
        TpmtSignature.from_bytes(parsed.quote.signature)
        return parsed

    check("tpm.evidence", parse, evidence, TpmEvidence)
