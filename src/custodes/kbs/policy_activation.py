"""Activating a stored policy version: one function for the admin API and the dashboard, so
that a rollback clicked in a browser is the same change, with the same audit entry, as
``custodes admin policy rollback``."""

from __future__ import annotations

import logging
from typing import Final, Literal

from custodes.audit.entry import AuditKind
from custodes.audit.log import AuditLog
from custodes.kbs.broker import TenantServices

logger = logging.getLogger(__name__)

PolicyAttr = Literal["attestation_policies", "resource_policies"]
POLICY_ATTRS: Final[tuple[PolicyAttr, ...]] = ("attestation_policies", "resource_policies")


def activate_policy(
    audit: AuditLog | None,
    services: TenantServices,
    actor: str,
    attr: str,
    policy_id: str,
    version: int,
) -> None:
    """Make ``version`` of ``policy_id`` the active one (``NotFound`` if it is not stored) and
    record who did it in the tenant's audit stream."""
    stores = {
        "attestation_policies": services.attestation_policies,
        "resource_policies": services.resource_policies,
    }
    if attr not in stores:
        raise ValueError(f"no policy kind {attr!r}")
    stores[attr].activate(policy_id, version)
    if audit is not None:
        audit.append(
            services.tenant,
            AuditKind.ADMIN,
            actor,
            {"action": f"{attr}.activate", "policy_id": policy_id, "version": version},
        )
    logger.info("admin %s activated %s %s version %d", actor, attr, policy_id, version)
