"""The ``tpm`` verifier checklist, step by step, on upstream's vector and on a real swtpm.

About the upstream vector: it was produced by an older upstream guest that zero-padded the
binding digest to 64 bytes, and the nonce and TEE key it was bound to are not published, so the
binding digest cannot be recomputed. Its steps other than the binding are verified by passing
the quoted ``extraData`` itself as the expected digest (the exact-equality rule); that its
padded layout is refused for its apparent 48-byte digest is tested separately.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from tpm2_pytss import (  # type: ignore[import-untyped]
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2B_DATA,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMT_SIG_SCHEME,
)

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, Verifier
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.attestation.verifiers.tpm.errors import (
    AkPublicKeyInvalid,
    PcrDigestMismatch,
    PcrSelectionUnsupported,
    QuoteHeaderInvalid,
    SignatureSchemeUnsupported,
)
from custodes.errors import (
    BindingMismatch,
    CustodesError,
    InitDataMismatch,
    MalformedEvidence,
    SignatureInvalid,
)
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester
from custodes.types.tee import Tee
from swtpm import running_swtpm

Evidence = dict[str, Any]
_EXTRA_DATA_OFFSET = 4 + 2 + 2 + 34 + 2  # magic, type, qualifiedSigner, extraData size


@pytest.fixture(scope="module")
def vector(vectors: Path) -> Evidence:
    data: Evidence = json.loads(
        (vectors / "trustee/deps/verifier/test_data/tpm_evidence.json").read_text()
    )
    return data


@pytest.fixture(scope="module")
def nonce(vector: Evidence) -> bytes:
    """The vector's quoted extraData (64 bytes)."""
    message = b64std_decode(vector["tpm_quote"]["message"])
    return message[_EXTRA_DATA_OFFSET : _EXTRA_DATA_OFFSET + 64]


def _verify(evidence: object, report_data: bytes, init_data: bytes | None = None) -> Any:
    request = VerificationRequest(Tee.TPM, evidence, report_data, init_data)
    return TpmVerifier().verify(request)


def _refused(
    error: type[CustodesError], evidence: object, report_data: bytes, init: bytes | None = None
) -> None:
    with pytest.raises(error) as info:
        _verify(evidence, report_data, init)
    assert info.type is error


def _edit(evidence: Evidence, field: str, edit: Any) -> Evidence:
    """A copy with ``tpm_quote[field]`` (base64) decoded, edited and re-encoded."""
    changed = copy.deepcopy(evidence)
    raw = bytearray(b64std_decode(changed["tpm_quote"][field]))
    edit(raw)
    changed["tpm_quote"][field] = b64std_encode(bytes(raw))
    return changed


def _spki(key: Any) -> str:
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64std_encode(der)


# --- the upstream vector ------------------------------------------------------------------


def test_implements_the_verifier_interface() -> None:
    verifier: Verifier = TpmVerifier()  # checked by mypy
    assert verifier.tee is Tee.TPM


def test_vector_verifies_with_claims(vector: Evidence, nonce: bytes) -> None:
    (result,) = _verify(vector, nonce)
    assert result.tee_class is TeeClass.CPU
    claims = result.claims
    assert [k for k in claims if k.startswith("pcr")] == [f"pcr{i:02d}" for i in range(24)]
    assert claims["pcr11"] == "00" * 32
    assert claims["pcr17"] == "ff" * 32
    assert claims["ak_public"] == vector["ak_public"]
    assert claims["report_data"] == nonce.hex()
    assert claims["init_data"] == "00" * 32
    # Evidence given as JSON text is the same evidence.
    assert _verify(json.dumps(vector), nonce) == [result]


def test_vector_zero_padded_layout_refused(vector: Evidence, nonce: bytes) -> None:
    digest = nonce[:48]  # what the older guest padded with 16 zero bytes
    assert nonce[48:] == bytes(16)
    _refused(BindingMismatch, vector, digest)


@pytest.mark.parametrize(
    "report_data", [b"", b"\x11" * 48, b"\x11" * 32], ids=["empty", "48", "32"]
)
def test_wrong_nonce(vector: Evidence, nonce: bytes, report_data: bytes) -> None:
    _refused(BindingMismatch, vector, report_data)


def test_prefix_of_nonce_refused(vector: Evidence, nonce: bytes) -> None:
    _refused(BindingMismatch, vector, nonce[:32])


def test_flipped_signature_byte(vector: Evidence, nonce: bytes) -> None:
    def flip(raw: bytearray) -> None:
        raw[-1] ^= 1

    _refused(SignatureInvalid, _edit(vector, "signature", flip), nonce)


def test_tampered_message(vector: Evidence, nonce: bytes) -> None:
    def bump_clock(raw: bytearray) -> None:
        raw[_EXTRA_DATA_OFFSET + 64] ^= 1

    _refused(SignatureInvalid, _edit(vector, "message", bump_clock), nonce)


def test_wrong_ak(vector: Evidence, nonce: bytes) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    changed = {**vector, "ak_public": _spki(other)}
    _refused(SignatureInvalid, changed, nonce)


@pytest.mark.parametrize(
    ("offset", "value"),
    [(0, b"\xff\x54\x43\x48"), (4, b"\x80\x17")],
    ids=["magic", "type"],
)
def test_wrong_magic_or_type(vector: Evidence, nonce: bytes, offset: int, value: bytes) -> None:
    def patch(raw: bytearray) -> None:
        raw[offset : offset + len(value)] = value

    _refused(QuoteHeaderInvalid, _edit(vector, "message", patch), nonce)


@pytest.mark.parametrize(
    "signature",
    [
        struct.pack(">HH", 0x0016, 0x000B),  # RSAPSS layout with the same signature bytes
        struct.pack(">HH", 0x0014, 0x0004),  # RSASSA with SHA-1
    ],
    ids=["rsapss", "sha1"],
)
def test_wrong_scheme_for_rsa_ak(vector: Evidence, nonce: bytes, signature: bytes) -> None:
    def relabel(raw: bytearray) -> None:
        raw[:4] = signature

    _refused(SignatureSchemeUnsupported, _edit(vector, "signature", relabel), nonce)


def test_ecdsa_signature_with_rsa_ak(vector: Evidence, nonce: bytes) -> None:
    changed = copy.deepcopy(vector)
    ecdsa = struct.pack(">HHH", 0x0018, 0x000B, 32) + b"\x01" * 32 + struct.pack(">H", 32)
    changed["tpm_quote"]["signature"] = b64std_encode(ecdsa + b"\x02" * 32)
    _refused(SignatureSchemeUnsupported, changed, nonce)


def test_pcr_value_changed(vector: Evidence, nonce: bytes) -> None:
    changed = copy.deepcopy(vector)
    changed["tpm_quote"]["pcrs"][11] = "01" * 32
    _refused(PcrDigestMismatch, changed, nonce)


@pytest.mark.parametrize("count", [23, 25])
def test_wrong_pcr_count(vector: Evidence, nonce: bytes, count: int) -> None:
    changed = copy.deepcopy(vector)
    changed["tpm_quote"]["pcrs"] = (changed["tpm_quote"]["pcrs"] * 2)[:count]
    _refused(MalformedEvidence, changed, nonce)


def test_wrong_pcr_length(vector: Evidence, nonce: bytes) -> None:
    changed = copy.deepcopy(vector)
    changed["tpm_quote"]["pcrs"][0] = "00" * 48
    _refused(MalformedEvidence, changed, nonce)


def test_truncated_message(vector: Evidence, nonce: bytes) -> None:
    def truncate(raw: bytearray) -> None:
        del raw[-1]

    _refused(MalformedEvidence, _edit(vector, "message", truncate), nonce)


def test_init_data_digest_of_48_bytes_refused(vector: Evidence, nonce: bytes) -> None:
    _refused(InitDataMismatch, vector, nonce, hashlib.sha384(b"toml").digest())


def test_pcr8_mismatch(vector: Evidence, nonce: bytes) -> None:
    _refused(InitDataMismatch, vector, nonce, hashlib.sha256(b"toml").digest())


@pytest.mark.parametrize("kind", ["garbage", "rsa1024", "p384", "ed25519", "p256-compressed"])
def test_ak_public_invalid(vector: Evidence, nonce: bytes, kind: str) -> None:
    if kind == "garbage":
        ak = b64std_encode(b"\x30\x03\x02\x01\x01")
    elif kind == "rsa1024":
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        ak = _spki(small.public_key())
    elif kind == "p384":
        ak = _spki(ec.generate_private_key(ec.SECP384R1()).public_key())
    elif kind == "ed25519":
        ak = _spki(ed25519.Ed25519PrivateKey.generate().public_key())
    else:
        point = ec.generate_private_key(ec.SECP256R1()).public_key()
        compressed = point.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
        )
        # SPKI with the same algorithm header as the uncompressed form, compressed point.
        der = _spki_with_point(compressed)
        assert serialization.load_der_public_key(der) == point
        ak = b64std_encode(der)
    _refused(AkPublicKeyInvalid, {**vector, "ak_public": ak}, nonce)


def _spki_with_point(point: bytes) -> bytes:
    algorithm = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
    bit_string = b"\x03" + bytes([len(point) + 1, 0]) + point
    body = algorithm + bit_string
    return b"\x30" + bytes([len(body)]) + body


# --- a real TPM (swtpm): ECDSA, selections the upstream vector does not have --------------


@pytest.fixture(scope="module")
def tcti() -> Iterator[str]:
    with running_swtpm() as tpm:
        yield tpm.tcti


def test_swtpm_ecc_quote_verifies_and_detects_tampering(tcti: str) -> None:
    attester = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC)
    digest = hashlib.sha384(b"session").digest()
    evidence = attester.evidence(digest)
    (result,) = _verify(evidence, digest)
    assert result.claims["ak_public"] == b64std_encode(attester.ak_public_der())
    assert result.claims["report_data"] == digest[:32].hex()

    def flip_s(raw: bytearray) -> None:
        raw[-1] ^= 1

    _refused(SignatureInvalid, _edit(evidence, "signature", flip_s), digest)

    def relabel_ecschnorr(raw: bytearray) -> None:
        raw[:2] = b"\x00\x1c"  # same TPMS_SIGNATURE_ECC layout, another scheme

    _refused(SignatureSchemeUnsupported, _edit(evidence, "signature", relabel_ecschnorr), digest)

    def oversize_r(raw: bytearray) -> None:
        raw[4:6] = b"\x00\x21"
        raw[6:6] = b"\x00"

    _refused(SignatureInvalid, _edit(evidence, "signature", oversize_r), digest)


def _raw_quote(tcti: str, selection: str) -> Evidence:
    """A quote of ``selection`` by an ECC AK, made with tpm2-pytss directly (not the attester)."""
    template = TPM2B_PUBLIC.parse(
        "ecc256:ecdsa-sha256:null",
        objectAttributes="fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign",
    )
    with ESAPI(tcti) as ectx:
        handle, public, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        try:
            attest, signature = ectx.quote(
                handle,
                TPML_PCR_SELECTION.parse(selection) if selection else TPML_PCR_SELECTION(),
                TPM2B_DATA(b"\x07" * 32),
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            )
        finally:
            ectx.flush_context(handle)
        ak = bytes(public.publicArea.to_der())
    return {
        "ak_public": base64.b64encode(ak).decode(),
        "tpm_quote": {
            "signature": base64.b64encode(bytes(signature.marshal())).decode(),
            "message": base64.b64encode(bytes(attest)).decode(),
            "pcrs": ["00" * 32] * 24,
        },
    }


@pytest.mark.parametrize("selection", ["sha1:0,1", ""], ids=["sha1-bank", "empty"])
def test_swtpm_unsupported_selection(tcti: str, selection: str) -> None:
    evidence = _raw_quote(tcti, selection)
    _refused(PcrSelectionUnsupported, evidence, b"\x07" * 32)


def test_swtpm_subset_selection_reports_only_quoted_pcrs(tcti: str) -> None:
    evidence = _raw_quote(tcti, "sha256:0,11")
    (result,) = _verify(evidence, b"\x07" * 32)
    assert sorted(k for k in result.claims if k.startswith("pcr")) == ["pcr00", "pcr11"]
    assert "init_data" not in result.claims
    # Values of PCRs outside the selection are not signed: changing one changes nothing.
    evidence["tpm_quote"]["pcrs"][5] = "ab" * 32
    (again,) = _verify(evidence, b"\x07" * 32)
    assert again == result
    _refused(InitDataMismatch, evidence, b"\x07" * 32, hashlib.sha256(b"toml").digest())
