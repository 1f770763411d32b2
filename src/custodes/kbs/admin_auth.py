"""Admin API authentication: bearer JWTs signed with a registered key (EdDSA or ES256).

The algorithm comes from the registered key, never from the token alone, so ``alg: none``,
HS256-with-a-public-key and similar confusions cannot succeed. There is no allow-all mode: a
broker with no admin key refuses every admin call. Beyond the signature, a token must

* be short-lived: ``exp`` required, at most ``admin.max_token_lifetime_seconds`` after ``iat``
  (or after now, without ``iat``);
* name its audience: ``aud`` is the URL it was minted for, and must be one of this broker's
  base URLs with this tenant's path (:mod:`custodes._internal.admin_claims`), so a token
  minted for another broker or another tenant is refused here;
* be used once: ``jti`` required, remembered in the store (shared by replicas) until the token
  expires, and a second use refused;
* speak for its key's subject only: every registered key has one subject, and a ``sub`` that
  is not that subject is refused (an absent ``sub`` means the key's subject). So two admins
  of one tenant cannot sign each other's name into the audit log.

``iss`` is not used: the key and its registered subject say who signed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives import serialization

from custodes._internal.admin_claims import (
    OPERATOR_PATH,
    bound_origins,
    normalize,
    tenant_path,
)
from custodes._internal.clock import Clock
from custodes._internal.jws import verify_compact_with_key
from custodes.errors import AdminAuthError, ConfigError, TokenError
from custodes.kbs.keys import AdminPublicKey
from custodes.storage.base import Store

MAX_JTI_CHARS: Final = 256
MAX_SUBJECT_CHARS: Final = 256


class Role(StrEnum):
    """What an authenticated identity may do. A tenant's admin manages its resources,
    policies and reference values; its auditor only reads (policies, resource names, audit,
    denial explanations); the broker operator manages tenants and nothing inside them."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    OPERATOR = "operator"


class AdminForbidden(AdminAuthError):
    """Authenticated, but the identity's role does not allow this call (403)."""

    code = "admin-forbidden"


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    subject: str
    role: Role = Role.ADMIN


@dataclass(frozen=True, slots=True)
class RegisteredKey:
    """One identity: a public key, the one subject it speaks for, and its role."""

    public_key: AdminPublicKey
    subject: str
    role: Role


class ReplayGuard:
    """Remembers every accepted token's ``(sub, jti)`` until the token expires, in the store,
    so that replicas sharing the store refuse a token another replica accepted."""

    def __init__(self, store: Store, namespace: str, clock: Clock) -> None:
        self._store = store
        self._namespace = namespace
        self._clock = clock

    def first_use(self, subject: str, jti: str, expires_at: float) -> bool:
        """``True`` the first time, ``False`` for a replay (nothing is written then)."""
        # Hashed: fixed-length keys whatever the (signed, but client-chosen) jti holds.
        key = hashlib.sha256(f"{subject}\0{jti}".encode()).hexdigest()
        return self._store.insert(
            self._namespace, key, b"", now=self._clock.now(), expires_at=expires_at
        )


class Origins:
    """This broker's base URLs, which every admin and operator token's ``aud`` must name:
    ``server.public_urls`` when configured, else the address it listens on (known once it
    is listening; until then every admin token is refused)."""

    def __init__(self, configured: Sequence[str]) -> None:
        self._configured = tuple(normalize(u) for u in configured)
        self._bound: tuple[str, ...] = ()

    def listening_at(self, url: str) -> None:
        self._bound = bound_origins(url)

    def current(self) -> tuple[str, ...]:
        return self._configured or self._bound

    def for_tenant(self, tenant: str, default_tenant: str) -> Callable[[], frozenset[str]]:
        """The audiences of a tenant's admin tokens: its KBS base URLs."""
        path = tenant_path(tenant, default_tenant)
        return lambda: frozenset(o + path for o in self.current())

    def for_operator(self) -> Callable[[], frozenset[str]]:
        return lambda: frozenset(o + OPERATOR_PATH for o in self.current())


def _raw(key: AdminPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _int_claim(claims: Mapping[str, object], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise AdminAuthError(f"admin token rejected: '{name}' is not an integer")
    return value


class AdminAuthenticator:
    def __init__(
        self,
        identities: Sequence[RegisteredKey],
        *,
        audiences: Callable[[], Collection[str]],
        replay: ReplayGuard,
        clock: Clock,
        leeway_seconds: int = 60,
        max_lifetime_seconds: int = 900,
    ) -> None:
        """``audiences`` gives the normalized ``aud`` values accepted now (the broker learns
        its own URL when it starts listening)."""
        self._identities = list(identities)
        self._raw = [_raw(i.public_key) for i in self._identities]
        self._audiences = audiences
        self._replay = replay
        self._clock = clock
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds

    def authenticate(self, authorization: str | None) -> AdminIdentity:
        if not self._identities:
            raise AdminAuthError("the admin API is disabled: no admin public key is configured")
        if not authorization:
            raise AdminAuthError("admin endpoint: missing 'Authorization: Bearer <JWT>' header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AdminAuthError("admin endpoint: expected 'Authorization: Bearer <JWT>'")
        try:
            _, claims, key = verify_compact_with_key(
                token.strip(), [i.public_key for i in self._identities]
            )
        except TokenError as e:
            raise AdminAuthError(f"admin token rejected: {e}") from e
        exp = self._check_times(claims)
        identity = self._identity(key, claims.get("sub"))
        self._check_audience(claims.get("aud"))
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise AdminAuthError(
                f"admin token rejected: 'jti' claim missing or not a string of 1-{MAX_JTI_CHARS} "
                "characters (every admin token is used once)"
            )
        if not self._replay.first_use(identity.subject, jti, exp + self._leeway):
            raise AdminAuthError("admin token rejected: already used (replayed 'jti')")
        return identity

    def _check_times(self, claims: Mapping[str, object]) -> int:
        now = self._clock.now()
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise AdminAuthError("admin token rejected: 'exp' claim missing or not an integer")
        if exp + self._leeway <= now:
            raise AdminAuthError("admin token rejected: expired")
        iat = _int_claim(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise AdminAuthError("admin token rejected: issued in the future")
        if exp - (iat if iat is not None else now) > self._max_lifetime:
            raise AdminAuthError(f"admin token rejected: lifetime over {self._max_lifetime} s")
        nbf = _int_claim(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise AdminAuthError("admin token rejected: not yet valid")
        return exp

    def _identity(self, key: AdminPublicKey, sub: object) -> AdminIdentity:
        """The identity of the key that signed, chosen by ``sub`` when one key is registered
        under several subjects; a ``sub`` the key is not registered for is refused."""
        if sub is not None and (not isinstance(sub, str) or len(sub) > MAX_SUBJECT_CHARS):
            raise AdminAuthError("admin token rejected: 'sub' is not a string")
        raw = _raw(key)
        matching = [i for i, r in zip(self._identities, self._raw, strict=True) if r == raw]
        if sub is None:
            if len(matching) != 1:
                raise AdminAuthError("admin token rejected: 'sub' is required for this key")
            chosen = matching[0]
        else:
            found = [i for i in matching if i.subject == sub]
            if not found:
                raise AdminAuthError(
                    "admin token rejected: 'sub' is not the key's registered subject"
                )
            chosen = found[0]
        return AdminIdentity(chosen.subject, chosen.role)

    def _check_audience(self, aud: object) -> None:
        accepted = self._audiences()
        if aud is None:
            raise AdminAuthError(
                "admin token rejected: 'aud' claim missing; it must name this broker and "
                f"tenant ({_shown(accepted)})"
            )
        if not isinstance(aud, str):
            raise AdminAuthError("admin token rejected: 'aud' must be one URL (a string)")
        try:
            normalized = normalize(aud)
        except ConfigError as e:
            raise AdminAuthError(f"admin token rejected: 'aud' is not a URL: {e}") from e
        if normalized not in accepted:
            raise AdminAuthError(
                f"admin token rejected: 'aud' {normalized} is not this broker and tenant "
                f"({_shown(accepted)})"
            )


def _shown(accepted: Collection[str]) -> str:
    if not accepted:
        return "this broker does not know its own URL: set server.public_urls"
    return "accepted: " + ", ".join(sorted(accepted))
