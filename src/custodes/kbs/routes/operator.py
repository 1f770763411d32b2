"""The operator's routes (``/operator/v0/tenants...``): tenants, never their contents.

The operator is authenticated before the path is matched (by the dispatcher), so that the
operator API reveals nothing about its paths to a caller without an operator token."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from custodes.errors import MalformedMessage
from custodes.kbs.admin_auth import AdminIdentity
from custodes.kbs.broker import Broker
from custodes.kbs.http import OPERATOR, ApiRoute, Schema, broker_audit, json_response, read_json
from custodes.kbs.lanes import Lanes
from custodes.kbs.tenants import Identity, TenantStatus, check_tenant_id

logger = logging.getLogger(__name__)


async def list_tenants(
    request: HttpRequest, broker: Broker, who: AdminIdentity, lanes: Lanes, rest: list[str]
) -> Response:
    return json_response(await lanes.store(broker.registry.list))


async def create_tenant(
    request: HttpRequest, broker: Broker, who: AdminIdentity, lanes: Lanes, rest: list[str]
) -> Response:
    body = await read_json(request, broker)
    if not isinstance(body, dict) or set(body) - {"id", "identities"}:
        raise MalformedMessage("body is {'id': TENANT, 'identities': [...]}")
    identities = body.get("identities")
    if not isinstance(identities, list):
        raise MalformedMessage("'identities' must be a list")
    parsed = [Identity.from_json(i) for i in identities]
    tenant = await lanes.store(lambda: broker.registry.create(str(body.get("id", "")), parsed))
    await lanes.audit(
        lambda: broker_audit(broker, who.subject, {"action": "tenant.create", "tenant": tenant.id})
    )
    logger.info("operator %s created tenant %s", who.subject, tenant.id)
    return json_response(tenant.to_json(with_identities=False))


async def get_tenant(
    request: HttpRequest, broker: Broker, who: AdminIdentity, lanes: Lanes, rest: list[str]
) -> Response:
    tenant_id = check_tenant_id(rest[0])
    tenant = await lanes.store(lambda: broker.registry.get(tenant_id))
    return json_response(tenant.to_json(with_identities=False))


OperatorHandler = Callable[
    [HttpRequest, Broker, AdminIdentity, Lanes, list[str]], Awaitable[Response]
]


def _set_status(action: str, status: TenantStatus) -> OperatorHandler:
    async def handler(
        request: HttpRequest, broker: Broker, who: AdminIdentity, lanes: Lanes, rest: list[str]
    ) -> Response:
        tenant_id = check_tenant_id(rest[0])
        tenant = await lanes.store(lambda: broker.registry.set_status(tenant_id, status))
        event = {"action": f"tenant.{action}", "tenant": tenant_id}
        await lanes.audit(lambda: broker_audit(broker, who.subject, event))
        logger.info("operator %s set tenant %s %s", who.subject, tenant_id, status.value)
        return json_response(tenant.to_json(with_identities=False))

    return handler


_TENANT: Final[dict[str, Schema]] = {
    "tenant": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"}
}

ROUTES: Final = (
    ApiRoute(
        "GET",
        "/operator/v0/tenants",
        list_tenants,
        "List tenants (operator)",
        security=OPERATOR,
        scope="operator",
        response={"type": "array", "items": {"type": "string"}},
        response_description="tenant ids",
        errors=(401,),
    ),
    ApiRoute(
        "POST",
        "/operator/v0/tenants",
        create_tenant,
        "Create a tenant with its first identities (operator)",
        security=OPERATOR,
        scope="operator",
        body="NewTenant",
        response_description="created",
        errors=(400, 401),
    ),
    ApiRoute(
        "GET",
        "/operator/v0/tenants/{tenant}",
        get_tenant,
        "A tenant's status (operator)",
        security=OPERATOR,
        scope="operator",
        response_description="status",
        errors=(401, 404),
        params=_TENANT,
    ),
    ApiRoute(
        "POST",
        "/operator/v0/tenants/{tenant}/suspend",
        _set_status("suspend", TenantStatus.SUSPENDED),
        "Suspend a tenant: every request to it is refused (operator)",
        security=OPERATOR,
        scope="operator",
        response_description="suspended",
        errors=(401, 404),
        params=_TENANT,
    ),
    ApiRoute(
        "POST",
        "/operator/v0/tenants/{tenant}/resume",
        _set_status("resume", TenantStatus.ACTIVE),
        "Resume a suspended tenant (operator)",
        security=OPERATOR,
        scope="operator",
        response_description="active",
        errors=(401, 404),
        params=_TENANT,
    ),
)
