"""How an init-data digest is bound into each TEE's launch measurement, with exact lengths.

The host puts a value derived from the digest into a field the TEE measures at launch; the
guest's attestation agent checks it before starting (or extends it, on a TPM), and the broker's
verifier compares it again from the evidence. Upstream fits any digest into any field by zero
padding or *truncation*; custodes never truncates, so every digest bit is bound:

=================  ==========================  ========  =================================
TEE                field                       size      rule
=================  ==========================  ========  =================================
snp                HOST_DATA                   32 bytes  sha256 digest, as is; sha384 and
                                                         sha512 refused (upstream truncates)
tdx                MRCONFIGID                  48 bytes  sha384 digest, as is; sha256
                                                         zero-padded to 48 (the documented
                                                         rule); sha512 refused (upstream
                                                         truncates)
tpm, az-snp-vtpm,  PCR 8 (SHA-256 bank)        32 bytes  SHA-256(32 zero bytes || digest):
az-tdx-vtpm                                              one extend of a fresh PCR; sha256
                                                         digest only (upstream's verifier
                                                         panics on other lengths)
=================  ==========================  ========  =================================

A refusal is :class:`~custodes.initdata.errors.InitDataNotBindable` naming the algorithm, the
field and the algorithm to use instead. Other TEEs have no init-data binding here (CCA's
64-byte personalisation value is not covered yet). The algorithm is read from the digest
length (32, 48, 64 bytes), which is all the TEE field can tell either.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from custodes.errors import InitDataMismatch
from custodes.initdata.errors import InitDataNotBindable
from custodes.initdata.format import HashAlgorithmName
from custodes.types.tee import Tee

_BY_LENGTH: Final[dict[int, HashAlgorithmName]] = {32: "sha256", 48: "sha384", 64: "sha512"}


@dataclass(frozen=True, slots=True)
class BindingField:
    """The TEE field that carries the init-data binding."""

    name: str
    size: int
    # Digest algorithms accepted, the first one being the natural fit.
    algorithms: tuple[HashAlgorithmName, ...]


SNP_HOSTDATA: Final = BindingField("HOST_DATA", 32, ("sha256",))
TDX_MRCONFIGID: Final = BindingField("MRCONFIGID", 48, ("sha384", "sha256"))
TPM_PCR8: Final = BindingField("PCR8", 32, ("sha256",))
INIT_DATA_PCR: Final = 8

_FIELDS: Final[dict[Tee, BindingField]] = {
    Tee.SNP: SNP_HOSTDATA,
    Tee.TDX: TDX_MRCONFIGID,
    Tee.TPM: TPM_PCR8,
    Tee.AZ_SNP_VTPM: TPM_PCR8,
    Tee.AZ_TDX_VTPM: TPM_PCR8,
}
BINDABLE_TEES: Final[tuple[Tee, ...]] = tuple(_FIELDS)


def algorithm_of(digest: bytes) -> HashAlgorithmName:
    """The init-data algorithm a digest of this length comes from."""
    try:
        return _BY_LENGTH[len(digest)]
    except KeyError:
        raise InitDataNotBindable(
            f"a {len(digest)}-byte value is not a sha256, sha384 or sha512 digest"
        ) from None


def binding_field(tee: Tee) -> BindingField:
    """The field of ``tee`` that carries init-data, or ``InitDataNotBindable``."""
    try:
        return _FIELDS[tee]
    except KeyError:
        names = ", ".join(t.value for t in BINDABLE_TEES)
        raise InitDataNotBindable(
            f"TEE {tee.value!r} has no init-data binding (supported: {names})"
        ) from None


def binding_value(tee: Tee, digest: bytes) -> bytes:
    """The exact value ``tee``'s field must hold for an init-data ``digest``."""
    field = binding_field(tee)
    algorithm = algorithm_of(digest)
    if algorithm not in field.algorithms:
        raise InitDataNotBindable(
            f"a {algorithm} init-data digest ({len(digest)} bytes) cannot be bound in "
            f"{tee.value} {field.name} ({field.size} bytes) without truncating it; "
            f"use algorithm = {field.algorithms[0]!r}"
        )
    if field is TPM_PCR8:
        # The value of a SHA-256 PCR that started at zero after one extend with the digest.
        return hashlib.sha256(bytes(field.size) + digest).digest()
    # Only a shorter digest reaches here (sha256 into MRCONFIGID): zero-padded.
    return digest + bytes(field.size - len(digest))


def check_binding(tee: Tee, digest: bytes, observed: bytes) -> None:
    """``InitDataMismatch`` unless the field value ``observed`` binds ``digest`` exactly."""
    expected = binding_value(tee, digest)
    field = binding_field(tee)
    if len(observed) != field.size:
        raise InitDataMismatch(
            f"{tee.value} {field.name} is {len(observed)} bytes, expected {field.size}"
        )
    if not hmac.compare_digest(expected, observed):
        raise InitDataMismatch(f"{tee.value} {field.name} does not match the init-data digest")
