"""Admin API authentication: bearer JWTs signed with a configured key (EdDSA or ES256).

The algorithm comes from the configured key, never from the token alone, so ``alg: none``,
HS256-with-a-public-key and similar confusions cannot succeed. ``exp`` is required and a
token may not live longer than ``admin.max_token_lifetime_seconds``. There is no allow-all
mode: a broker with no admin key refuses every admin call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from custodes._internal.clock import Clock
from custodes._internal.jws import verify_compact_with_key
from custodes.errors import AdminAuthError, TokenError
from custodes.kbs.keys import AdminPublicKey


class Role(StrEnum):
    """What an authenticated identity may do. A tenant's admin manages its resources,
    policies and reference values; its auditor only reads (policies, resource names, audit,
    denial explanations); the broker operator manages tenants and nothing inside them."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    subject: str
    role: Role = Role.ADMIN


class AdminAuthenticator:
    def __init__(
        self,
        keys: Sequence[AdminPublicKey],
        *,
        clock: Clock,
        leeway_seconds: int = 60,
        max_lifetime_seconds: int = 24 * 3600,
        roles: Sequence[Role] | None = None,
        subjects: Sequence[str | None] | None = None,
    ) -> None:
        """``roles``/``subjects`` run parallel to ``keys`` (default: admin, any subject). A key
        registered with a subject accepts only tokens whose ``sub`` is that subject."""
        self._keys = list(keys)
        self._roles = list(roles) if roles is not None else [Role.ADMIN] * len(self._keys)
        self._subjects = list(subjects) if subjects is not None else [None] * len(self._keys)
        if len(self._roles) != len(self._keys) or len(self._subjects) != len(self._keys):
            raise ValueError("keys, roles and subjects must have the same length")
        self._clock = clock
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

    def authenticate(self, authorization: str | None) -> AdminIdentity:
        if not self._keys:
            raise AdminAuthError("the admin API is disabled: no admin public key is configured")
        if not authorization:
            raise AdminAuthError("admin endpoint: missing 'Authorization: Bearer <JWT>' header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AdminAuthError("admin endpoint: expected 'Authorization: Bearer <JWT>'")
        try:
            _, claims, key = verify_compact_with_key(token.strip(), self._keys)
        except TokenError as e:
            raise AdminAuthError(f"admin token rejected: {e}") from e
        now = self._clock.now()
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise AdminAuthError("admin token rejected: 'exp' claim missing or not an integer")
        if exp + self._leeway <= now:
            raise AdminAuthError("admin token rejected: expired")
        iat = claims.get("iat")
        if iat is not None:
            if not isinstance(iat, int) or isinstance(iat, bool):
                raise AdminAuthError("admin token rejected: 'iat' is not an integer")
            if iat > now + self._leeway:
                raise AdminAuthError("admin token rejected: issued in the future")
            if exp - iat > self._max_lifetime:
                raise AdminAuthError(f"admin token rejected: lifetime over {self._max_lifetime} s")
        elif exp - now > self._max_lifetime:
            raise AdminAuthError(f"admin token rejected: lifetime over {self._max_lifetime} s")
        nbf = claims.get("nbf")
        if nbf is not None and (
            not isinstance(nbf, int) or isinstance(nbf, bool) or nbf > now + self._leeway
        ):
            raise AdminAuthError("admin token rejected: not yet valid")
        index = next(i for i, k in enumerate(self._keys) if k is key)
        bound = self._subjects[index]
        subject = claims.get("sub", bound or "admin")
        if not isinstance(subject, str):
            raise AdminAuthError("admin token rejected: 'sub' is not a string")
        if bound is not None and subject != bound:
            raise AdminAuthError("admin token rejected: 'sub' is not the key's registered subject")
        return AdminIdentity(subject, self._roles[index])
