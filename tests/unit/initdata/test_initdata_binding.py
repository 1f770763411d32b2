"""Per-TEE binding values: exact lengths, no truncation, one refusal class."""

from __future__ import annotations

import hashlib

import pytest

from custodes.errors import InitDataMismatch
from custodes.initdata.binding import (
    BINDABLE_TEES,
    SNP_HOSTDATA,
    TDX_MRCONFIGID,
    TPM_PCR8,
    algorithm_of,
    binding_field,
    binding_value,
    check_binding,
)
from custodes.initdata.errors import InitDataError, InitDataNotBindable
from custodes.types.tee import Tee

SHA256 = hashlib.sha256(b"init-data").digest()
SHA384 = hashlib.sha384(b"init-data").digest()
SHA512 = hashlib.sha512(b"init-data").digest()
PCR_TEES = (Tee.TPM, Tee.AZ_SNP_VTPM, Tee.AZ_TDX_VTPM)


def test_fields() -> None:
    assert binding_field(Tee.SNP) == SNP_HOSTDATA and SNP_HOSTDATA.size == 32
    assert binding_field(Tee.TDX) == TDX_MRCONFIGID and TDX_MRCONFIGID.size == 48
    for tee in PCR_TEES:
        assert binding_field(tee) == TPM_PCR8 and TPM_PCR8.size == 32
    assert set(BINDABLE_TEES) == {Tee.SNP, Tee.TDX, *PCR_TEES}


def test_snp_hostdata_is_the_sha256_digest() -> None:
    assert binding_value(Tee.SNP, SHA256) == SHA256


@pytest.mark.parametrize("digest", [SHA384, SHA512])
def test_snp_refuses_longer_digests(digest: bytes) -> None:
    with pytest.raises(InitDataNotBindable):
        binding_value(Tee.SNP, digest)


def test_tdx_mrconfigid_is_the_sha384_digest() -> None:
    assert binding_value(Tee.TDX, SHA384) == SHA384


def test_tdx_zero_pads_a_sha256_digest() -> None:
    value = binding_value(Tee.TDX, SHA256)
    assert len(value) == 48 and value == SHA256 + bytes(16)


def test_tdx_refuses_sha512() -> None:
    with pytest.raises(InitDataNotBindable):
        binding_value(Tee.TDX, SHA512)


@pytest.mark.parametrize("tee", PCR_TEES)
def test_pcr8_is_one_extend_of_a_zero_pcr(tee: Tee) -> None:
    assert binding_value(tee, SHA256) == hashlib.sha256(bytes(32) + SHA256).digest()


@pytest.mark.parametrize("tee", PCR_TEES)
@pytest.mark.parametrize("digest", [SHA384, SHA512])
def test_pcr8_refuses_non_sha256(tee: Tee, digest: bytes) -> None:
    with pytest.raises(InitDataNotBindable):
        binding_value(tee, digest)


@pytest.mark.parametrize("tee", [Tee.SAMPLE, Tee.CCA, Tee.SE, Tee.SGX, Tee.NVIDIA])
def test_tees_without_a_binding(tee: Tee) -> None:
    with pytest.raises(InitDataNotBindable):
        binding_value(tee, SHA256)


@pytest.mark.parametrize("size", [0, 20, 31, 33, 47, 49, 63, 65])
def test_not_a_digest_length(size: int) -> None:
    with pytest.raises(InitDataNotBindable):
        algorithm_of(bytes(size))
    with pytest.raises(InitDataNotBindable):
        binding_value(Tee.TDX, bytes(size))


def test_algorithm_of() -> None:
    assert [algorithm_of(d) for d in (SHA256, SHA384, SHA512)] == ["sha256", "sha384", "sha512"]


def test_not_bindable_is_an_init_data_error() -> None:
    assert issubclass(InitDataNotBindable, InitDataError)


def test_check_binding_accepts_the_exact_value() -> None:
    check_binding(Tee.SNP, SHA256, SHA256)
    check_binding(Tee.TDX, SHA256, SHA256 + bytes(16))
    check_binding(Tee.TDX, SHA384, SHA384)
    check_binding(Tee.TPM, SHA256, hashlib.sha256(bytes(32) + SHA256).digest())


def test_check_binding_mismatch() -> None:
    other = hashlib.sha256(b"other").digest()
    with pytest.raises(InitDataMismatch):
        check_binding(Tee.SNP, SHA256, other)
    with pytest.raises(InitDataMismatch):
        check_binding(Tee.TPM, SHA256, SHA256)  # the digest itself is not the PCR value
    with pytest.raises(InitDataMismatch):
        # Upstream's truncating comparison would accept this for a sha384 digest.
        check_binding(Tee.TDX, SHA256, SHA256 + b"\x01" + bytes(15))


def test_check_binding_wrong_field_size() -> None:
    with pytest.raises(InitDataMismatch):
        check_binding(Tee.TDX, SHA256, SHA256)  # unpadded: 32 bytes where 48 are measured
    with pytest.raises(InitDataMismatch):
        check_binding(Tee.SNP, SHA256, SHA256 + bytes(32))


def test_check_binding_refuses_unbindable_digest() -> None:
    with pytest.raises(InitDataNotBindable):
        check_binding(Tee.SNP, SHA384, SHA384[:32])
