"""The release of a resource to an attested guest (``GET /resource/<repo>/<type>/<tag>``).

:class:`Release` owns every step after the HTTP request is read: the attestation token (the
session's, else the bearer token) and its tenant, the resource policy's decision, the
explanation of a denial (for the tenant's admins, by correlation id; never for the guest), the
release audit entry and the JWE to the TEE key the token carries.
"""

from __future__ import annotations

import uuid

from custodes.errors import NotFound, PolicyDenied, PolicyError, SessionError, TokenError
from custodes.kbs import errors as kerr
from custodes.kbs.broker import RESOURCE_POLICY_ID, Broker, TenantServices
from custodes.kbs.lanes import Lanes
from custodes.kbs.tenants import DEFAULT_TENANT, TENANT_CLAIM
from custodes.policy.budget import (
    PolicyBudgetExceeded,
    evaluate_within_budget,
    explain_within_budget,
)
from custodes.protocol.appraisal import appraisal_summary
from custodes.protocol.jwe import encrypt
from custodes.protocol.jwk import tee_key_from_jwk
from custodes.protocol.resource import ResourcePath
from custodes.types.json import JsonObject


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (``None`` without one)."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization header is not 'Bearer <token>'")
    return token.strip()


class Release:
    """Releases of one tenant's resources."""

    def __init__(self, broker: Broker, services: TenantServices, lanes: Lanes) -> None:
        self._broker = broker
        self._t = services
        self._lanes = lanes

    async def release(
        self,
        path: ResourcePath,
        segments: list[str],
        query: dict[str, str],
        *,
        session_id: str | None,
        authorization: str | None,
    ) -> JsonObject:
        """The resource at ``path`` as a JWE to the token's TEE key, if the policy allows."""
        # One hop off the loop for the whole request, in the tenant's policy quota: the steps
        # are sequential and blocking (store reads, the budgeted policy, the durable audit
        # entry), and a hand-off between threads costs more CPU than a store read does.
        return await self._lanes.policy(
            lambda: self._release(path, segments, query, session_id, authorization)
        )

    def _release(
        self,
        path: ResourcePath,
        segments: list[str],
        query: dict[str, str],
        session_id: str | None,
        authorization: str | None,
    ) -> JsonObject:
        broker, t = self._broker, self._t
        ear = broker.ear_verifier.verify_ear(self._token(session_id, authorization))
        claims = ear.raw  # the resource policy's input: the token's claims as issued
        if claims.get(TENANT_CLAIM, DEFAULT_TENANT) != t.tenant:
            raise TokenError("the token was issued for another tenant")
        policy_version, policy = t.resource_policies.active(RESOURCE_POLICY_ID)
        if policy is None:
            raise PolicyError("no resource policy is set")
        data: JsonObject = {"plugin": "resource", "resource-path": segments, "query": query}
        record: JsonObject = {
            "resource": str(path),
            "token_id": ear.token_id,
            "policy_id": RESOURCE_POLICY_ID,
            "policy_version": policy_version,
        }
        budget = self._lanes.pools.policy_seconds
        try:
            decision = evaluate_within_budget(
                policy, "data.policy.allow", input=claims, data=data, seconds=budget
            )
        except PolicyBudgetExceeded as exc:
            # The tenant's admins must learn that their policy is at fault: a denial entry
            # they can look up by the correlation id the guest is given.
            broker.metrics.releases.labels("denied").inc()
            correlation_id = uuid.uuid4().hex
            broker.record(
                t.tenant,
                "denial",
                None,
                {
                    **record,
                    "correlation_id": correlation_id,
                    "appraisal": appraisal_summary(claims),
                    "failed": [],
                    "error": str(exc),
                },
            )
            raise PolicyBudgetExceeded(
                f"the resource policy exceeded its evaluation budget of {budget:g} s "
                f"(correlation id {correlation_id}; the workload admin must fix the policy)"
            ) from None
        if decision is not True:
            broker.metrics.releases.labels("denied").inc()
            correlation_id = uuid.uuid4().hex
            try:
                failed = explain_within_budget(
                    policy, "allow", input=claims, data=data, seconds=budget
                )
            except PolicyBudgetExceeded:
                failed = []  # an explanation never turns a decision into an error
            broker.record(
                t.tenant,
                "denial",
                None,
                {
                    **record,
                    "correlation_id": correlation_id,
                    "appraisal": appraisal_summary(claims),
                    "failed": failed,
                },
            )
            # The reason goes to the tenant's admins (by correlation id), never to the guest.
            raise PolicyDenied(
                f"access to {path} denied by policy (correlation id {correlation_id}; "
                "the workload admin can look up why)"
            )
        try:
            secret = t.resources.get(path)
        except NotFound:
            broker.metrics.releases.labels("missing").inc()
            raise
        # Parsed at /attest already: remembered by its members (protocol.jwk).
        key = tee_key_from_jwk(
            ear.tee_pubkey(), allow_rsa1_5=broker.config.attestation.unsafe_allow_rsa1_5
        )
        jwe = encrypt(secret.reveal(), key)
        broker.metrics.releases.labels("released").inc()
        broker.record(t.tenant, "release", None, record)
        return jwe

    def _token(self, session_id: str | None, authorization: str | None) -> str:
        """The attested session's token, else the bearer token."""
        if session_id:
            try:
                session = self._t.sessions.get(session_id)
            except SessionError:
                session = None
            if session is not None and session.token is not None:
                return session.token
        token = bearer_token(authorization)
        if token is None:
            raise kerr.TokenNotFound(
                "no attestation token: send the kbs-session-id cookie of an attested session "
                "or 'Authorization: Bearer <EAR token>'"
            )
        return token
