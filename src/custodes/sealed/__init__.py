"""Sealed secrets: ES256-signed ``sealed.…`` strings that stand in for a Kubernetes Secret.

The workload admin seals (:func:`seal`), the cluster stores only the sealed string, and the
guest unseals it inside the TEE (:func:`unseal`), fetching the value (vault) or the key that
opens it (envelope) from the broker after attestation. See ``docs/sealed-secrets.md``.
"""

from __future__ import annotations

from custodes.sealed.envelope import open_envelope, seal_envelope
from custodes.sealed.errors import SealedSecretError
from custodes.sealed.format import SealedSecret
from custodes.sealed.keys import (
    generate_signing_key,
    load_signing_key,
    load_verification_key,
    private_jwk,
    public_jwk,
)
from custodes.sealed.kids import (
    BrokerKidResolver,
    DirectoryKidResolver,
    KidResolver,
    RoutingKidResolver,
)
from custodes.sealed.payload import EnvelopePayload, VaultPayload, parse_payload
from custodes.sealed.seal import seal
from custodes.sealed.unseal import unseal, verified_payload, verify_signature

__all__ = [
    "BrokerKidResolver",
    "DirectoryKidResolver",
    "EnvelopePayload",
    "KidResolver",
    "RoutingKidResolver",
    "SealedSecret",
    "SealedSecretError",
    "VaultPayload",
    "generate_signing_key",
    "load_signing_key",
    "load_verification_key",
    "open_envelope",
    "parse_payload",
    "private_jwk",
    "public_jwk",
    "seal",
    "seal_envelope",
    "unseal",
    "verified_payload",
    "verify_signature",
]
