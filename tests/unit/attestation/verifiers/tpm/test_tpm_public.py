"""TPMT_PUBLIC and Names: real public areas from a swtpm parse to the TPM's own Name and key;
bad layouts raise MalformedEvidence."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_PUBLIC  # type: ignore[import-untyped]
from tpm2_pytss.utils import NoSuchIndex, create_ek_template  # type: ignore[import-untyped]

from custodes.attestation.verifiers.tpm.public import (
    TPM_ALG_ECC,
    TPM_ALG_RSA,
    ObjectAttributes,
    TpmtPublic,
)
from custodes.errors import MalformedEvidence
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester
from swtpm import Swtpm, running_swtpm

AK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"


@pytest.fixture(scope="module")
def tpm() -> Iterator[Swtpm]:
    with running_swtpm() as running:
        yield running


def _no_index(index: int) -> bytes:
    raise NoSuchIndex(index)


def _primary(tpm: Swtpm, template: Any) -> tuple[bytes, bytes]:
    """(marshalled TPMT_PUBLIC, Name) of a primary key created by the TPM from ``template``."""
    ectx = ESAPI(tpm.tcti)
    try:
        handle, public, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        name = bytes(ectx.tr_get_name(handle))
        ectx.flush_context(handle)
        return bytes(public.publicArea.marshal()), name
    finally:
        ectx.close()


@pytest.mark.parametrize("algorithm", list(AkAlgorithm))
def test_ak_public_area_gives_the_tpm_name_and_key(tpm: Swtpm, algorithm: AkAlgorithm) -> None:
    attester = TpmAttester(tpm.tcti, ak_algorithm=algorithm)
    raw = attester.ak_public_area()
    template = {
        AkAlgorithm.RSA: "rsa2048:rsassa-sha256:null",
        AkAlgorithm.ECC: "ecc256:ecdsa-sha256:null",
    }[algorithm]
    same_raw, name = _primary(tpm, TPM2B_PUBLIC.parse(template, objectAttributes=AK_ATTRIBUTES))
    assert raw == same_raw  # a primary key from a fixed template: the same key again
    public = TpmtPublic.from_bytes(raw)
    assert public.name == name
    assert public.spki_der() == attester.ak_public_der()
    assert public.type == (TPM_ALG_RSA if algorithm is AkAlgorithm.RSA else TPM_ALG_ECC)
    assert public.attributes & ObjectAttributes.RESTRICTED
    assert public.attributes & ObjectAttributes.SIGN_ENCRYPT
    assert not public.attributes & ObjectAttributes.DECRYPT
    assert public.symmetric is None


@pytest.mark.parametrize("ek", ["EK-RSA2048", "EK-ECC256"])
def test_ek_public_area(tpm: Swtpm, ek: str) -> None:
    _, template = create_ek_template(ek, _no_index)
    raw, name = _primary(tpm, template)
    public = TpmtPublic.from_bytes(raw)
    assert public.name == name
    assert public.attributes & ObjectAttributes.DECRYPT
    assert public.symmetric is not None and public.symmetric.key_bits == 128
    assert len(public.auth_policy) == 32


def rsa_public(
    *,
    name_alg: int = 0x000B,
    attributes: int = 0x00050072,
    key_bits: int = 2048,
    modulus: bytes | None = None,
    obj_type: int = TPM_ALG_RSA,
) -> bytes:
    """A hand-marshalled RSA TPMT_PUBLIC (RSASSA/SHA-256, no symmetric)."""
    modulus = modulus if modulus is not None else b"\xc5" * (key_bits // 8)
    return (
        struct.pack(">HHI", obj_type, name_alg, attributes)
        + struct.pack(">H", 0)  # authPolicy
        + struct.pack(">H", 0x0010)  # symmetric: NULL
        + struct.pack(">HH", 0x0014, 0x000B)  # scheme RSASSA, SHA-256
        + struct.pack(">HI", key_bits, 0)
        + struct.pack(">H", len(modulus))
        + modulus
    )


def test_hand_marshalled_rsa_public_parses() -> None:
    public = TpmtPublic.from_bytes(rsa_public())
    assert public.key.key_size == 2048
    assert public.name[:2] == b"\x00\x0b" and len(public.name) == 34


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (rsa_public()[:-1], "truncated"),
        (rsa_public() + b"\x00", "trailing"),
        (rsa_public(obj_type=0x0008), "neither RSA nor ECC"),
        (rsa_public(modulus=b"\xc5" * 255), "modulus"),
        (rsa_public(modulus=b"\x00" + b"\xc5" * 255), "modulus"),
        (rsa_public(key_bits=0, modulus=b""), "modulus"),
        (b"", "truncated"),
    ],
)
def test_bad_layouts_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedEvidence, match=why):
        TpmtPublic.from_bytes(data)


def test_ecc_point_checks(tpm: Swtpm) -> None:
    raw, _ = _primary(
        tpm, TPM2B_PUBLIC.parse("ecc256:ecdsa-sha256:null", objectAttributes=AK_ATTRIBUTES)
    )
    # The point is the last 2 + 32 + 2 + 32 bytes, after curveID and a NULL kdf (2 + 2).
    curve_at = len(raw) - 68 - 2 - 2
    assert raw[curve_at : curve_at + 2] == b"\x00\x03"
    p384 = raw[:curve_at] + b"\x00\x04" + raw[curve_at + 2 :]
    with pytest.raises(MalformedEvidence, match="not NIST P-256"):
        TpmtPublic.from_bytes(p384)
    off_curve = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(MalformedEvidence, match="not on P-256"):
        TpmtPublic.from_bytes(off_curve)
    short_y = raw[:-34] + b"\x00\x1f" + raw[-31:]
    with pytest.raises(MalformedEvidence, match="32-byte coordinates"):
        TpmtPublic.from_bytes(short_y)


def test_a_name_needs_sha256() -> None:
    public = TpmtPublic.from_bytes(rsa_public(name_alg=0x0004))
    with pytest.raises(MalformedEvidence, match="not SHA-256"):
        public.name  # noqa: B018
