"""Sealing: sign a payload into the ``sealed.…`` string that a Kubernetes Secret carries.

The header is written as upstream's CLI writes it, ``{"b64":true,"alg":"ES256","kid":…}``,
and the payload as compact JSON in upstream's member order, so a secret sealed here reads the
same as one sealed by upstream's ``secret`` tool (apart from the random ECDSA signature).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.jws import ES256, sign_compact
from custodes.sealed.errors import InvalidSigningKey, SealedHeaderError, UnsupportedSealedVersion
from custodes.sealed.format import MAX_KID_LENGTH, PREFIX
from custodes.sealed.keys import is_p256
from custodes.sealed.payload import VERSION, EnvelopePayload, VaultPayload


def seal(
    payload: VaultPayload | EnvelopePayload, signing_key: ec.EllipticCurvePrivateKey, kid: str
) -> str:
    """The sealed string of ``payload``, signed with ``signing_key`` and naming ``kid``."""
    key: object = signing_key  # checked as an object: callers are not all type-checked
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not is_p256(key):
        raise InvalidSigningKey("sealed secrets are signed with an EC P-256 key (ES256)")
    if not kid or len(kid) > MAX_KID_LENGTH:
        raise SealedHeaderError(f"kid must be a non-empty string of at most {MAX_KID_LENGTH}")
    # A guest refuses any other version, so sealing one would only produce a dud.
    if payload.version != VERSION:
        raise UnsupportedSealedVersion(f"payload version {payload.version!r} is not {VERSION}")
    header = {"b64": True, "alg": ES256, "kid": kid}
    return PREFIX + sign_compact(header, payload.to_json(), signing_key)
