"""Tenants: each workload admin is a tenant with its own identities, resources, policies,
reference values and audit stream, on one broker or on its own.

Isolation is by storage namespace: every per-tenant namespace is ``t/<tenant>/<name>``, except
the ``default`` tenant's, which keep their bare names (so a single-tenant broker's store is
the same as before tenants existed). Tokens carry the tenant they were issued for
(``custodes.tenant``) and are refused by every other tenant.

The broker operator creates and suspends tenants and registers a new tenant's first
identities; it has no identity inside any tenant, so it cannot read a tenant's secrets,
policies or audit stream, nor change its identities afterwards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import serialization

from custodes._internal.admin_claims import check_subject
from custodes._internal.clock import Clock
from custodes.errors import ConfigError, CustodesError, MalformedMessage, NotFound
from custodes.kbs.admin_auth import Role
from custodes.kbs.keys import AdminPublicKey
from custodes.storage.base import Store

DEFAULT_TENANT = "default"
TENANT_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
NS_TENANTS = "tenants"
TENANT_CLAIM = "custodes.tenant"
MAX_IDENTITIES = 64


class TenantSuspended(CustodesError):
    code = "tenant-suspended"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


def namespace(tenant: str, base: str) -> str:
    """The store namespace of ``base`` for ``tenant``."""
    return base if tenant == DEFAULT_TENANT else f"t/{tenant}/{base}"


def tenant_of(ns: str) -> str:
    """The tenant a store namespace belongs to (inverse of :func:`namespace`)."""
    if ns.startswith("t/"):
        return ns.split("/", 2)[1]
    return DEFAULT_TENANT


def check_tenant_id(tenant: str) -> str:
    if not TENANT_RE.fullmatch(tenant):
        raise MalformedMessage("a tenant id is 1-63 lower-case letters, digits and inner hyphens")
    return tenant


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    role: Role
    public_key: AdminPublicKey

    def to_json(self) -> dict[str, str]:
        pem = self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"subject": self.subject, "role": self.role.value, "public_key": pem.decode()}

    @classmethod
    def from_json(cls, obj: object) -> Identity:
        if not isinstance(obj, dict) or set(obj) != {"subject", "role", "public_key"}:
            raise MalformedMessage("an identity is {'subject', 'role', 'public_key' (PEM)}")
        subject, role, pem = obj["subject"], obj["role"], obj["public_key"]
        if not isinstance(subject, str):
            raise MalformedMessage("identity subject must be a string")
        try:
            check_subject(subject)
        except ConfigError as e:
            raise MalformedMessage(f"identity {e}") from e
        if role not in (Role.ADMIN.value, Role.AUDITOR.value):
            raise MalformedMessage("identity role must be 'admin' or 'auditor'")
        if not isinstance(pem, str):
            raise MalformedMessage("identity public_key must be a PEM string")
        try:
            key = serialization.load_pem_public_key(pem.encode())
        except (ValueError, TypeError) as e:
            raise MalformedMessage("identity public_key is not a PEM public key") from e
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        if not (
            isinstance(key, ed25519.Ed25519PublicKey)
            or (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1))
        ):
            raise MalformedMessage("identity keys must be Ed25519 or EC P-256")
        return cls(subject, Role(role), key)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    status: TenantStatus
    identities: tuple[Identity, ...]
    created: float

    def to_json(self, *, with_identities: bool = True) -> dict[str, object]:
        body: dict[str, object] = {
            "id": self.id,
            "status": self.status.value,
            "created": int(self.created),
        }
        if with_identities:
            body["identities"] = [i.to_json() for i in self.identities]
        return body


class TenantRegistry:
    """Tenants other than ``default`` (whose identities come from the broker config)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def _encode(self, tenant: Tenant) -> bytes:
        return json.dumps(tenant.to_json(), sort_keys=True).encode()

    def _decode(self, raw: bytes) -> Tenant:
        obj = json.loads(raw)
        return Tenant(
            id=obj["id"],
            status=TenantStatus(obj["status"]),
            identities=tuple(Identity.from_json(i) for i in obj["identities"]),
            created=float(obj["created"]),
        )

    def create(self, tenant_id: str, identities: list[Identity]) -> Tenant:
        check_tenant_id(tenant_id)
        if tenant_id == DEFAULT_TENANT:
            raise ConfigError("the default tenant is configured in the broker's config file")
        if not identities or not any(i.role is Role.ADMIN for i in identities):
            raise MalformedMessage("a tenant needs at least one admin identity")
        if len(identities) > MAX_IDENTITIES:
            raise MalformedMessage(f"at most {MAX_IDENTITIES} identities per tenant")
        if len({i.subject for i in identities}) != len(identities):
            raise MalformedMessage("each identity of a tenant needs its own subject")
        tenant = Tenant(tenant_id, TenantStatus.ACTIVE, tuple(identities), self._clock.now())
        if not self._store.insert(
            NS_TENANTS, tenant_id, self._encode(tenant), now=self._clock.now()
        ):
            raise TenantExists(f"tenant {tenant_id} already exists")
        return tenant

    def get(self, tenant_id: str) -> Tenant:
        raw = self._store.get(NS_TENANTS, tenant_id, now=self._clock.now())
        if raw is None:
            raise NotFound(f"no tenant {tenant_id}")
        return self._decode(raw)

    def list(self) -> list[str]:
        return self._store.list(NS_TENANTS, now=self._clock.now())

    def set_status(self, tenant_id: str, status: TenantStatus) -> Tenant:
        current = self.get(tenant_id)
        updated = Tenant(current.id, status, current.identities, current.created)
        # Compare-and-swap, so that a concurrent identity change is not overwritten.
        if not self._store.compare_and_swap(
            NS_TENANTS,
            tenant_id,
            self._encode(current),
            self._encode(updated),
            now=self._clock.now(),
        ):
            raise TenantExists("the tenant changed concurrently; retry")
        return updated

    def add_identity(self, tenant_id: str, identity: Identity) -> Tenant:
        current = self.get(tenant_id)
        if len(current.identities) >= MAX_IDENTITIES:
            raise MalformedMessage(f"at most {MAX_IDENTITIES} identities per tenant")
        if any(i.subject == identity.subject for i in current.identities):
            raise TenantExists(f"identity {identity.subject} already exists")
        return self._replace_identities(current, (*current.identities, identity))

    def remove_identity(self, tenant_id: str, subject: str) -> Tenant:
        """Remove an identity; the last admin identity stays (a tenant without one could
        never be managed again: the operator cannot add identities)."""
        current = self.get(tenant_id)
        remaining = tuple(i for i in current.identities if i.subject != subject)
        if len(remaining) == len(current.identities):
            raise NotFound(f"no identity {subject} in tenant {tenant_id}")
        if not any(i.role is Role.ADMIN for i in remaining):
            raise LastAdmin(f"{subject} is the tenant's last admin identity: add another first")
        return self._replace_identities(current, remaining)

    def _replace_identities(self, current: Tenant, identities: tuple[Identity, ...]) -> Tenant:
        updated = Tenant(current.id, current.status, identities, current.created)
        if not self._store.compare_and_swap(
            NS_TENANTS,
            current.id,
            self._encode(current),
            self._encode(updated),
            now=self._clock.now(),
        ):
            raise TenantExists("the tenant changed concurrently; retry")
        return updated


class TenantExists(CustodesError):
    code = "tenant-exists"


class LastAdmin(TenantExists):
    """Removing the identity would leave the tenant without an admin (409 Conflict)."""

    code = "last-admin"
