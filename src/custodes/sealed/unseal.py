"""Unsealing: verify a sealed secret, then obtain its plaintext through the broker.

``fetch`` is the guest's way to the broker (an attested resource request); it is passed in,
so this module never talks to the network and can be driven by the data hub, the CLI or a
test. Steps, each with its own error:

1. parse the string form (:class:`~custodes.sealed.format.SealedSecret`);
2. verify the ES256 signature with the key the ``kid`` names; the legacy unsigned form is
   refused unless ``allow_unsigned`` (a signed secret is verified even then: custodes'
   "allow unsigned" is narrower than upstream's skip mode, which ignores every signature);
3. read the payload's fields, then require ``version`` ``0.1.0``;
4. vault: ``fetch(name)`` is the plaintext; envelope: ``fetch(key_id)`` is the KEK that
   opens it (:mod:`custodes.sealed.envelope`).
"""

from __future__ import annotations

import logging

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from custodes.errors import ConfigError
from custodes.protocol.resource import ResourceUri
from custodes.sealed.envelope import broker_resource, kek_uri, open_envelope
from custodes.sealed.errors import (
    InvalidSigningKey,
    SealedSignatureLength,
    SealedSignatureMismatch,
    UnsignedSealedSecret,
    UnsupportedSealedVersion,
)
from custodes.sealed.format import SIGNATURE_BYTES, SealedSecret
from custodes.sealed.keys import is_p256
from custodes.sealed.kids import (
    BrokerKidResolver,
    DirectoryKidResolver,
    Fetch,
    KidResolver,
    RoutingKidResolver,
)
from custodes.sealed.payload import VERSION, EnvelopePayload, Payload, VaultPayload, parse_payload
from custodes.types.secret import Secret

# The resolvers live in custodes.sealed.kids; they are re-exported here because the data hub
# imports the whole unseal API from this module.
__all__ = [
    "BrokerKidResolver",
    "DirectoryKidResolver",
    "Fetch",
    "KidResolver",
    "RoutingKidResolver",
    "unseal",
    "verified_payload",
    "verify_signature",
]

logger = logging.getLogger(__name__)

_HALF: int = SIGNATURE_BYTES // 2


def verify_signature(secret: SealedSecret, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check the raw ``r || s`` ES256 signature over the signing input, or raise."""
    key: object = public_key  # checked as an object: callers are not all type-checked
    if not isinstance(key, ec.EllipticCurvePublicKey) or not is_p256(key):
        raise InvalidSigningKey("sealed secrets verify with an EC P-256 key (ES256)")
    if not secret.is_signed:
        raise UnsignedSealedSecret("this is a legacy unsigned sealed secret; it has no signature")
    if len(secret.signature) != SIGNATURE_BYTES:
        raise SealedSignatureLength(f"signature is {len(secret.signature)} bytes, expected 64")
    r = int.from_bytes(secret.signature[:_HALF], "big")
    s = int.from_bytes(secret.signature[_HALF:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s), secret.signing_input, ec.ECDSA(hashes.SHA256())
        )
    except InvalidSignature as e:
        raise SealedSignatureMismatch("sealed secret signature does not verify") from e


def verified_payload(
    secret: SealedSecret, kids: KidResolver | None, *, allow_unsigned: bool = False
) -> Payload:
    """Steps 2 and 3: the payload of an authentic (or explicitly allowed) secret."""
    if secret.is_signed:
        kid = secret.kid
        if kid is None:  # parse() guarantees a kid on signed secrets; keep the check local.
            raise SealedSignatureMismatch("signed sealed secret without a kid")
        if kids is None:
            raise ConfigError("no verification keys are configured for sealed secrets")
        verify_signature(secret, kids.public_key(kid))
    elif allow_unsigned:
        logger.warning("INSECURE: accepting a legacy unsigned sealed secret (allow_unsigned)")
    else:
        raise UnsignedSealedSecret(
            "legacy unsigned sealed secrets are refused; reseal it with a signing key"
        )
    payload = parse_payload(secret.payload)
    if payload.version != VERSION:
        raise UnsupportedSealedVersion(
            f"sealed secret version {payload.version!r} is not {VERSION}"
        )
    return payload


def _vault_uri(payload: VaultPayload) -> ResourceUri:
    return broker_resource(
        payload.provider,
        payload.name,
        kind="vault",
        member="name",
        opens="unseals vault secrets held by the broker",
    )


def unseal(
    text: str,
    *,
    fetch: Fetch,
    kids: KidResolver | None,
    allow_unsigned: bool = False,
) -> Secret[bytes]:
    """The plaintext of a sealed secret; see the module docstring for the steps."""
    secret = SealedSecret.parse(text)
    payload = verified_payload(secret, kids, allow_unsigned=allow_unsigned)
    if isinstance(payload, EnvelopePayload):
        uri = kek_uri(payload)
        kek = Secret(fetch(uri))
        return Secret(open_envelope(payload, kek.reveal()))
    return Secret(fetch(_vault_uri(payload)))
