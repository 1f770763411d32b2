"""TPM2_MakeCredential in software, checked against tpm2-pytss's implementation (same seed, same
bytes) and against a real TPM, which activates it and refuses every tampered variant."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import tpm2_pytss.utils  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss import TPM2_ALG, TPM2B_NAME
from tpm2_pytss.internal.crypto import _kdfa  # type: ignore[import-untyped]
from tpm2_pytss.internal.crypto import kdfe as pytss_kdfe
from tpm2_pytss.utils import NoSuchIndex, create_ek_template

from custodes.attestation.verifiers.tpm.credential import (
    IDENTITY_LABEL,
    credential_blob,
    kdfa,
    kdfe,
    make_credential,
    tpm2b,
)
from custodes.attestation.verifiers.tpm.public import TpmtPublic
from custodes.guest.attester.tpm import AkAlgorithm, TpmAttester, TpmAttesterError
from swtpm import Swtpm, ek_public_key, running_swtpm

SECRET = bytes(range(32))


@pytest.fixture(scope="module")
def tpm() -> Iterator[Swtpm]:
    with running_swtpm() as running:
        yield running


def _name(attester: TpmAttester) -> bytes:
    return TpmtPublic.from_bytes(attester.ak_public_area()).name


@pytest.mark.parametrize(
    ("label", "u", "v", "bits"),
    [(b"STORAGE", b"\x00\x0b" + bytes(32), b"", 128), (b"INTEGRITY", b"", b"", 256)],
)
def test_kdfa_matches_tpm2_pytss(label: bytes, u: bytes, v: bytes, bits: int) -> None:
    key = os.urandom(32)
    assert kdfa(key, label, u, v, bits) == _kdfa(TPM2_ALG.SHA256, key, label, u, v, bits)


def test_kdfe_matches_tpm2_pytss() -> None:
    z, u, v = os.urandom(32), os.urandom(32), os.urandom(32)
    expected = pytss_kdfe(TPM2_ALG.SHA256, z, IDENTITY_LABEL, u, v, 256)
    assert kdfe(z, IDENTITY_LABEL, u, v, 256) == expected


def test_blob_matches_tpm2_pytss_for_the_same_seed(
    tpm: Swtpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tpm2-pytss's make_credential (needs the C TSS, so only in tests) with its random seed
    replaced by ours gives the very same TPM2B_ID_OBJECT."""
    seed = os.urandom(32)
    monkeypatch.setattr(tpm2_pytss.utils, "_generate_seed", lambda public, label: (seed, b"x"))
    _, template = create_ek_template("EK-RSA2048", _no_index)
    name = _name(TpmAttester(tpm.tcti))
    theirs, _ = tpm2_pytss.utils.make_credential(template, SECRET, TPM2B_NAME(name))
    assert credential_blob(seed, name, SECRET) == bytes(theirs.marshal())


def _no_index(index: int) -> bytes:
    raise NoSuchIndex(index)


@pytest.mark.parametrize("ek", ["rsa", "ecc"])
@pytest.mark.parametrize("ak", list(AkAlgorithm))
def test_the_tpm_activates_it(tpm: Swtpm, ek: str, ak: AkAlgorithm) -> None:
    attester = TpmAttester(tpm.tcti, ak_algorithm=ak)
    key = ek_public_key(tpm, ek)
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    made = make_credential(key, _name(attester), SECRET)
    recovered = attester.activate_credential(
        made.credential_blob, made.encrypted_secret, AkAlgorithm(ek)
    )
    assert recovered == SECRET


def _rsa_ek(tpm: Swtpm) -> rsa.RSAPublicKey:
    key = ek_public_key(tpm, "rsa")
    assert isinstance(key, rsa.RSAPublicKey)
    return key


@pytest.mark.parametrize("offset", [2, 4, 2 + 2 + 32, -1])
def test_a_tampered_blob_is_refused_by_the_tpm(tpm: Swtpm, offset: int) -> None:
    """A flipped bit in the integrity HMAC (offsets 4..35) or in encIdentity fails the TPM's
    integrity check; in the size fields it no longer unmarshals."""
    attester = TpmAttester(tpm.tcti)
    made = make_credential(_rsa_ek(tpm), _name(attester), SECRET)
    blob = bytearray(made.credential_blob)
    blob[offset] ^= 0x01
    with pytest.raises(TpmAttesterError):
        attester.activate_credential(bytes(blob), made.encrypted_secret)


def test_a_credential_for_another_name_is_refused_by_the_tpm(tpm: Swtpm) -> None:
    rsa_ak = TpmAttester(tpm.tcti, ak_algorithm=AkAlgorithm.RSA)
    ecc_ak = TpmAttester(tpm.tcti, ak_algorithm=AkAlgorithm.ECC)
    made = make_credential(_rsa_ek(tpm), _name(ecc_ak), SECRET)
    with pytest.raises(TpmAttesterError, match="TPM command failed"):
        rsa_ak.activate_credential(made.credential_blob, made.encrypted_secret)


def test_a_secret_for_another_ek_is_refused_by_the_tpm(tpm: Swtpm) -> None:
    attester = TpmAttester(tpm.tcti)
    other = rsa.generate_private_key(65537, 2048).public_key()
    made = make_credential(other, _name(attester), SECRET)
    with pytest.raises(TpmAttesterError, match="TPM command failed"):
        attester.activate_credential(made.credential_blob, made.encrypted_secret)


def test_trailing_bytes_are_refused_by_the_guest(tpm: Swtpm) -> None:
    attester = TpmAttester(tpm.tcti)
    made = make_credential(_rsa_ek(tpm), _name(attester), SECRET)
    with pytest.raises(TpmAttesterError, match="trailing"):
        attester.activate_credential(made.credential_blob + b"\x00", made.encrypted_secret)
    with pytest.raises(TpmAttesterError, match="trailing"):
        attester.activate_credential(made.credential_blob, made.encrypted_secret + b"\x00")


def test_layout() -> None:
    seed, name = os.urandom(32), b"\x00\x0b" + os.urandom(32)
    blob = credential_blob(seed, name, SECRET)
    # TPM2B(TPM2B(32-byte HMAC) || AES-CFB(TPM2B(32-byte secret))): 2 + 2 + 32 + 2 + 32
    assert len(blob) == 70 and blob[:4] == b"\x00\x44\x00\x20"
    assert tpm2b(b"ab") == b"\x00\x02ab"


@pytest.mark.parametrize(
    ("seed", "name", "credential", "why"),
    [
        (bytes(32), b"\x00\x04" + bytes(32), SECRET, "34-byte SHA-256 Name"),
        (bytes(32), b"\x00\x0b" + bytes(31), SECRET, "34-byte SHA-256 Name"),
        (bytes(31), b"\x00\x0b" + bytes(32), SECRET, "seed"),
        (bytes(32), b"\x00\x0b" + bytes(32), b"", "1 to 32"),
        (bytes(32), b"\x00\x0b" + bytes(32), bytes(33), "1 to 32"),
    ],
)
def test_inputs_are_checked(seed: bytes, name: bytes, credential: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        credential_blob(seed, name, credential)


def test_an_ecc_ek_off_p256_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ValueError, match="P-256 only"):
        make_credential(key, b"\x00\x0b" + bytes(32), SECRET)
