"""TPM wire structures: the upstream vector parses field by field; bad layouts raise one error."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from custodes._internal.b64 import b64std_decode
from custodes.attestation.verifiers.tpm.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_HMAC,
    TPM_ALG_NULL,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    TpmlPcrSelection,
    TpmsAttest,
    TpmsPcrSelection,
    TpmsSignatureEcc,
    TpmsSignatureRsa,
    TpmtHa,
    TpmtSignature,
)
from custodes.errors import MalformedEvidence


@pytest.fixture(scope="module")
def quote(vectors: Path) -> dict[str, str]:
    evidence = json.loads(
        (vectors / "trustee/deps/verifier/test_data/tpm_evidence.json").read_text()
    )
    tpm_quote: dict[str, str] = evidence["tpm_quote"]
    return tpm_quote


def test_vector_attest_fields(quote: dict[str, str]) -> None:
    attest = TpmsAttest.from_bytes(b64std_decode(quote["message"]))
    assert attest.magic == TPM_GENERATED_VALUE
    assert attest.type == TPM_ST_ATTEST_QUOTE
    assert len(attest.qualified_signer) == 34
    assert attest.qualified_signer[:2] == b"\x00\x0b"  # nameAlg SHA-256
    # Older upstream guests zero-padded the binding digest to 64 bytes.
    assert len(attest.extra_data) == 64
    assert attest.extra_data[48:] == bytes(16)
    assert attest.clock_info.reset_count == 2
    assert attest.clock_info.safe is True
    assert attest.other_attested == b""
    assert attest.quote is not None
    (selection,) = attest.quote.pcr_select.selections
    assert selection.hash_alg == TPM_ALG_SHA256
    assert selection.indices == tuple(range(24))
    assert len(attest.quote.pcr_digest) == 32


def test_vector_signature_is_rsassa_sha256(quote: dict[str, str]) -> None:
    signature = TpmtSignature.from_bytes(b64std_decode(quote["signature"]))
    assert signature.sig_alg == TPM_ALG_RSASSA
    assert signature.hash_alg == TPM_ALG_SHA256
    assert isinstance(signature.detail, TpmsSignatureRsa)
    assert len(signature.detail.sig) == 256


def test_attest_truncated_or_trailing(quote: dict[str, str]) -> None:
    message = b64std_decode(quote["message"])
    with pytest.raises(MalformedEvidence):
        TpmsAttest.from_bytes(message[:-1])
    with pytest.raises(MalformedEvidence):
        TpmsAttest.from_bytes(message + b"\x00")
    with pytest.raises(MalformedEvidence):
        TpmsAttest.from_bytes(b"")


def test_attest_oversized_tpm2b(quote: dict[str, str]) -> None:
    message = bytearray(b64std_decode(quote["message"]))
    message[6:8] = struct.pack(">H", 67)  # qualifiedSigner larger than a TPM2B_NAME
    with pytest.raises(MalformedEvidence):
        TpmsAttest.from_bytes(bytes(message))


def test_attest_safe_must_be_yes_no(quote: dict[str, str]) -> None:
    message = bytearray(b64std_decode(quote["message"]))
    safe_offset = 6 + 2 + 34 + 2 + 64 + 8 + 4 + 4
    assert message[safe_offset] == 1
    message[safe_offset] = 2
    with pytest.raises(MalformedEvidence):
        TpmsAttest.from_bytes(bytes(message))


def test_attest_other_type_keeps_body_unparsed(quote: dict[str, str]) -> None:
    message = bytearray(b64std_decode(quote["message"]))
    message[4:6] = struct.pack(">H", 0x8017)  # TPM_ST_ATTEST_CERTIFY
    attest = TpmsAttest.from_bytes(bytes(message))
    assert attest.quote is None
    assert attest.other_attested.endswith(b64std_decode(quote["message"])[-10:])


def test_pcr_selection_indices_and_bounds() -> None:
    parsed = TpmlPcrSelection.from_bytes(b"\x00\x00\x00\x01" + b"\x00\x0b\x03" + b"\x01\x08\x80")
    assert parsed.selections == (TpmsPcrSelection(TPM_ALG_SHA256, b"\x01\x08\x80"),)
    assert parsed.selections[0].indices == (0, 11, 23)
    with pytest.raises(MalformedEvidence):
        TpmlPcrSelection.from_bytes(b"\x00\x00\x00\x02" + b"\x00\x0b\x03\x01\x08\x80")
    with pytest.raises(MalformedEvidence):
        TpmlPcrSelection.from_bytes(b"\x00\x00\x01\x00")  # 256 banks
    with pytest.raises(MalformedEvidence):
        TpmlPcrSelection.from_bytes(b"\x00\x00\x00\x01\x00\x0b\x21" + bytes(33))


def test_signature_layouts() -> None:
    ecdsa = struct.pack(">HHH", TPM_ALG_ECDSA, TPM_ALG_SHA256, 2) + b"\x01\x02" + b"\x00\x01\x03"
    parsed = TpmtSignature.from_bytes(ecdsa)
    assert parsed.detail == TpmsSignatureEcc(TPM_ALG_SHA256, b"\x01\x02", b"\x03")
    hmac_sig = struct.pack(">HH", TPM_ALG_HMAC, TPM_ALG_SHA256) + bytes(32)
    assert TpmtSignature.from_bytes(hmac_sig).detail == TpmtHa(TPM_ALG_SHA256, bytes(32))
    null = TpmtSignature.from_bytes(struct.pack(">H", TPM_ALG_NULL))
    assert null.detail is None
    assert null.hash_alg == TPM_ALG_NULL


@pytest.mark.parametrize(
    "data",
    [
        b"",
        struct.pack(">H", 0x7777),  # unknown sigAlg
        struct.pack(">HH", TPM_ALG_HMAC, 0x7777),  # unknown HMAC hash
        struct.pack(">HHH", TPM_ALG_RSASSA, TPM_ALG_SHA256, 4) + b"abc",  # short
        struct.pack(">HHH", TPM_ALG_RSASSA, TPM_ALG_SHA256, 513) + bytes(513),  # oversized
        struct.pack(">HHH", TPM_ALG_RSASSA, TPM_ALG_SHA256, 1) + b"ab",  # trailing
    ],
)
def test_signature_malformed(data: bytes) -> None:
    with pytest.raises(MalformedEvidence):
        TpmtSignature.from_bytes(data)
