"""The TPM attester on a real, fresh swtpm, checked end to end by the ``tpm`` verifier."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_PUBLIC  # type: ignore[import-untyped]

from custodes._internal.b64 import b64std_encode
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tpm import TpmVerifier
from custodes.errors import BindingMismatch, InitDataMismatch
from custodes.guest.attester.base import Attester
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester, TpmAttesterError
from custodes.types.tee import Tee
from swtpm import Swtpm, running_swtpm

SHA384_DIGEST = hashlib.sha384(b"nonce and tee-pubkey").digest()
PERSISTENT_AK = 0x81010002


@pytest.fixture
def tpm() -> Iterator[Swtpm]:
    """A fresh swtpm per test: several tests extend PCRs."""
    with running_swtpm() as running:
        yield running


@pytest.fixture
def tcti(tpm: Swtpm) -> str:
    return tpm.tcti


def _claims(evidence: Any, report_data: bytes, init_data: bytes | None = None) -> Any:
    request = VerificationRequest(Tee.TPM, evidence, report_data, init_data)
    (result,) = TpmVerifier().verify(request)
    return result.claims


@pytest.mark.parametrize("algorithm", list(AkAlgorithm))
def test_round_trip(tcti: str, algorithm: AkAlgorithm) -> None:
    attester = TpmAttester(tcti, ak_algorithm=algorithm)
    evidence = attester.evidence(SHA384_DIGEST)
    assert set(evidence) == {"ak_public", "tpm_quote"}
    assert set(evidence["tpm_quote"]) == {"signature", "message", "pcrs"}
    claims = _claims(evidence, SHA384_DIGEST)
    assert claims["ak_public"] == b64std_encode(attester.ak_public_der())
    assert claims["report_data"] == SHA384_DIGEST[:32].hex()  # upstream's 32-byte layout
    assert claims["pcr11"] == "00" * 32
    assert len([k for k in claims if k.startswith("pcr")]) == 24
    with pytest.raises(BindingMismatch):
        _claims(evidence, hashlib.sha384(b"another session").digest())


def test_sha256_binding_is_exact(tcti: str) -> None:
    digest = hashlib.sha256(b"session").digest()
    claims = _claims(TpmAttester(tcti).evidence(digest), digest)
    assert claims["report_data"] == digest.hex()


def test_exact_nonce_quotes_whole_digest(tcti: str) -> None:
    attester = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC, exact_nonce=True)
    claims = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    assert claims["report_data"] == SHA384_DIGEST.hex()
    with pytest.raises(ValueError, match="does not fit"):
        attester.evidence(bytes(65))


def test_digest_shorter_than_upstream_layout_refused(tcti: str) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        TpmAttester(tcti).evidence(bytes(20))


def test_extend_pcr11_changes_claim(tcti: str) -> None:
    attester = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC)
    before = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    measured = attester.extend_pcr(11, b"x")
    assert measured == hashlib.sha256(b"x").digest()
    after = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    assert before["pcr11"] == "00" * 32
    assert after["pcr11"] == hashlib.sha256(bytes(32) + measured).hexdigest()
    assert {k: v for k, v in after.items() if k != "pcr11"} == {
        k: v for k, v in before.items() if k != "pcr11"
    }
    assert attester.read_pcrs()[11].hex() == after["pcr11"]


def test_init_data_bound_in_pcr8(tcti: str) -> None:
    init_digest = hashlib.sha256(b'version = "0.1.0"\nalgorithm = "sha256"\n').digest()
    attester = TpmAttester(tcti)
    attester.bind_init_data(init_digest)
    evidence = attester.evidence(SHA384_DIGEST)
    claims = _claims(evidence, SHA384_DIGEST, init_digest)
    assert claims["init_data"] == hashlib.sha256(bytes(32) + init_digest).hexdigest()
    with pytest.raises(InitDataMismatch):
        _claims(evidence, SHA384_DIGEST, hashlib.sha256(b"other init-data").digest())
    with pytest.raises(ValueError, match="sha256"):
        attester.bind_init_data(hashlib.sha384(b"toml").digest())


def test_pcr_subset(tcti: str) -> None:
    attester = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC, pcr_selection=[11, 0, 11])
    evidence = attester.evidence(SHA384_DIGEST)
    assert len(evidence["tpm_quote"]["pcrs"]) == 24
    claims = _claims(evidence, SHA384_DIGEST)
    assert sorted(k for k in claims if k.startswith("pcr")) == ["pcr00", "pcr11"]
    with pytest.raises(InitDataMismatch):
        _claims(evidence, SHA384_DIGEST, hashlib.sha256(b"toml").digest())


def test_ak_is_stable_and_objects_are_flushed(tcti: str) -> None:
    # swtpm holds 3 transient objects; a leak would make the later quotes fail.
    first = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC)
    keys = {first.ak_public_der()}
    for _ in range(5):
        _claims(first.evidence(SHA384_DIGEST), SHA384_DIGEST)
    second = TpmAttester(tcti, ak_algorithm=AkAlgorithm.ECC)
    keys.add(second.ak_public_der())
    assert len(keys) == 1  # a primary key derives from the endorsement seed
    assert TpmAttester(tcti).ak_public_der() not in keys  # the RSA AK is another key


def test_ak_survives_a_tpm_reset(tpm: Swtpm) -> None:
    attester = TpmAttester(tpm.tcti, ak_algorithm=AkAlgorithm.ECC)
    attester.extend_pcr(11, b"x")
    before = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    tpm.reset()  # the saved AK context no longer loads: the attester derives the key again
    after = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    assert after["ak_public"] == before["ak_public"]
    assert before["pcr11"] != "00" * 32
    assert after["pcr11"] == "00" * 32


def _make_persistent(tcti: str, attributes: str) -> None:
    template = TPM2B_PUBLIC.parse("rsa2048:rsassa-sha256:null", objectAttributes=attributes)
    with ESAPI(tcti) as ectx:
        handle, _, _, _, _ = ectx.create_primary(None, template, ESYS_TR.OWNER)
        try:
            ectx.evict_control(ESYS_TR.OWNER, handle, PERSISTENT_AK)
        finally:
            ectx.flush_context(handle)


def test_persistent_ak(tcti: str) -> None:
    _make_persistent(tcti, "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign")
    attester = TpmAttester(tcti, ak_handle=PERSISTENT_AK, ak_algorithm=AkAlgorithm.ECC)
    claims = _claims(attester.evidence(SHA384_DIGEST), SHA384_DIGEST)
    # The key at the handle decides the type, whatever ak_algorithm says.
    assert claims["ak_public"].startswith("MIIBIjANBgkqhkiG9w0BAQEF")  # RSA-2048 SPKI
    assert claims["ak_public"] == b64std_encode(attester.ak_public_der())


def test_persistent_key_that_is_not_an_ak_refused(tcti: str) -> None:
    _make_persistent(tcti, "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")
    with pytest.raises(TpmAttesterError, match="restricted"):
        TpmAttester(tcti, ak_handle=PERSISTENT_AK).evidence(SHA384_DIGEST)


def test_tpm_refusals_are_attester_errors(tcti: str) -> None:
    attester = TpmAttester(tcti)
    with pytest.raises(TpmAttesterError):
        attester.extend_pcr(17, b"x")  # PCR 17 is not extendable from locality 0
    with pytest.raises(ValueError, match="PCR index"):
        attester.extend_pcr(24, b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        attester.extend_pcr_digest(10, b"short")


def test_unreachable_tpm() -> None:
    with running_swtpm() as tpm:
        gone = tpm.tcti
    with pytest.raises(TpmAttesterError):
        TpmAttester(gone).evidence(SHA384_DIGEST)


def test_implements_the_attester_interface() -> None:
    attester: Attester = TpmAttester("swtpm:host=127.0.0.1,port=1")  # checked by mypy
    assert attester.tee is Tee.TPM


def test_bad_selection() -> None:
    with pytest.raises(ValueError, match="empty"):
        TpmAttester("swtpm:host=127.0.0.1,port=1", pcr_selection=[])
    with pytest.raises(ValueError, match="PCR index"):
        TpmAttester("swtpm:host=127.0.0.1,port=1", pcr_selection=[24])
