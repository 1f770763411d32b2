"""The workload admin's routes: resources, policies, reference values and the tenant's
identities. Every route checks the caller's role first (writes: admin; reads: admin or
auditor), then calls one store (off the event loop) and records the change in the audit log."""

from __future__ import annotations

import hashlib
import logging
from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from custodes._internal.admin_claims import check_subject
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import ConfigError, MalformedMessage, NotFound
from custodes.kbs import errors as kerr
from custodes.kbs.broker import RESOURCE_POLICY_ID
from custodes.kbs.http import (
    ADMIN,
    ApiRoute,
    Ctx,
    Handler,
    Schema,
    admin,
    audit,
    json_response,
    read_body,
    read_json,
)
from custodes.kbs.policy_activation import activate_policy
from custodes.kbs.tenants import DEFAULT_TENANT, Identity
from custodes.policy.store import PolicyStore
from custodes.protocol.resource import ResourcePath
from custodes.types.json import Json, JsonObject
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)


async def _audit(ctx: Ctx, actor: str, event: JsonObject) -> None:
    await ctx.lanes.audit(lambda: audit(ctx, "admin", actor, event))


# --- resources ----------------------------------------------------------------------------


async def put_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = ResourcePath.from_segments(rest)
    who = await admin(ctx, request, write=True)
    data = await read_body(request, ctx.broker.config.limits.max_resource_bytes)
    await ctx.lanes.store(lambda: ctx.t.resources.put(path, Secret(data)))
    event: JsonObject = {"action": "resource.put", "resource": str(path), "size": len(data)}
    await _audit(ctx, who.subject, event)
    logger.info("admin %s stored resource %s (%d bytes)", who.subject, path, len(data))
    return Response(status_code=200)


async def delete_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = ResourcePath.from_segments(rest)
    who = await admin(ctx, request, write=True)
    await ctx.lanes.store(lambda: ctx.t.resources.delete(path))
    await _audit(ctx, who.subject, {"action": "resource.delete", "resource": str(path)})
    logger.info("admin %s deleted resource %s", who.subject, path)
    return Response(status_code=200)


async def list_resources(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    await admin(ctx, request, write=False)
    return json_response(await ctx.lanes.store(ctx.t.resources.list))


async def resource_info(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = ResourcePath.from_segments(rest)
    await admin(ctx, request, write=False)
    info = await ctx.lanes.store(lambda: ctx.t.resources.info(path))
    return json_response({"path": info.path, "size": info.size, "updated": int(info.updated)})


# --- policies -----------------------------------------------------------------------------


def _decode_policy(body: Json, *, with_id: bool) -> tuple[str, str]:
    if not isinstance(body, dict) or not isinstance(body.get("policy"), str):
        raise MalformedMessage("body must be a JSON object with a string member 'policy'")
    try:
        text = b64url_decode(body["policy"]).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedMessage(
            "'policy' must be the Rego text in unpadded base64url (RFC 4648 §5)"
        ) from e
    policy_id = "default_cpu"
    if with_id and "policy_id" in body:
        if not isinstance(body["policy_id"], str):
            raise MalformedMessage("'policy_id' must be a string")
        policy_id = body["policy_id"]
    return policy_id, text


def _policy_setter(attr: str, endpoint: str) -> Handler:
    with_id = attr == "attestation_policies"

    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        who = await admin(ctx, request, write=True)
        policy_id, text = _decode_policy(await read_json(request, ctx.broker), with_id=with_id)
        if not with_id:
            policy_id = RESOURCE_POLICY_ID
        store: PolicyStore = getattr(ctx.t, attr)
        # Compiling checks the policy: a policy-sized computation, so in the policy lane.
        version = await ctx.lanes.policy(lambda: store.set(policy_id, text))
        event: JsonObject = {
            "action": f"{endpoint}.set",
            "policy_id": policy_id,
            "version": version,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }
        await _audit(ctx, who.subject, event)
        logger.info("admin %s set %s %s", who.subject, endpoint, policy_id)
        return Response(status_code=200)

    return handler


def _policy_lister(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        await admin(ctx, request, write=False)
        store: PolicyStore = getattr(ctx.t, attr)
        return json_response(await ctx.lanes.store(store.list))

    return handler


def _policy_versions(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        await admin(ctx, request, write=False)
        store: PolicyStore = getattr(ctx.t, attr)
        versions = await ctx.lanes.store(lambda: store.versions(rest[0]))
        if not versions:
            raise NotFound(f"policy {rest[0]} does not exist")
        return json_response([{"version": v, "active": a} for v, a in versions])

    return handler


def _policy_getter(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        await admin(ctx, request, write=False)
        store: PolicyStore = getattr(ctx.t, attr)
        version = request.query_params.get("version")
        if version is not None and not version.isdigit():
            raise MalformedMessage("version must be a positive integer")

        def read() -> tuple[str | None, int | None]:
            if version is not None:
                return store.get_version(rest[0], int(version)), int(version)
            return store.get(rest[0]), store.active_version(rest[0])

        text, number = await ctx.lanes.store(read)
        if text is None:
            raise NotFound(f"policy {rest[0]} (version {version or 'active'}) does not exist")
        return json_response(
            {"policy_id": rest[0], "policy": b64url_encode(text.encode()), "version": number}
        )

    return handler


def _policy_activator(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        who = await admin(ctx, request, write=True)
        body = await read_json(request, ctx.broker)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MalformedMessage("body is {'version': N} with N a version number")
        await ctx.lanes.store(
            lambda: activate_policy(ctx.broker.audit, ctx.t, who.subject, attr, rest[0], version)
        )
        return Response(status_code=200)

    return handler


# --- reference values ---------------------------------------------------------------------


async def register_reference_value(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = await admin(ctx, request, write=True)
    message = await read_json(request, ctx.broker)
    names = await ctx.lanes.store(lambda: ctx.t.rvps.register(message))
    await _audit(ctx, who.subject, {"action": "reference-value.register", "ids": names})
    logger.info("admin %s registered reference values %s", who.subject, ", ".join(names))
    return Response(status_code=200)


async def list_reference_values(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    await admin(ctx, request, write=False)
    return json_response(await ctx.lanes.store(ctx.t.rvps.list))


async def get_reference_value(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    await admin(ctx, request, write=False)
    value = await ctx.lanes.store(lambda: ctx.t.rvps.get("/".join(rest)))
    return json_response(value.to_stored_json())


# --- tenant identities --------------------------------------------------------------------


def _not_default(ctx: Ctx) -> None:
    if ctx.t.tenant == DEFAULT_TENANT:
        raise kerr.EndpointNotFound("the default tenant's identities are in the broker config")


async def list_identities(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    await admin(ctx, request, write=False)
    _not_default(ctx)
    tenant = await ctx.lanes.store(lambda: ctx.broker.registry.get(ctx.t.tenant))
    return json_response([{"subject": i.subject, "role": i.role.value} for i in tenant.identities])


async def add_identity(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = await admin(ctx, request, write=True)
    _not_default(ctx)
    identity = Identity.from_json(await read_json(request, ctx.broker))
    await ctx.lanes.store(lambda: ctx.broker.registry.add_identity(ctx.t.tenant, identity))
    event: JsonObject = {
        "action": "identity.add",
        "subject": identity.subject,
        "role": identity.role.value,
    }
    await _audit(ctx, who.subject, event)
    logger.info("admin %s added %s %s", who.subject, identity.role.value, identity.subject)
    return Response(status_code=200)


async def remove_identity(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = await admin(ctx, request, write=True)
    _not_default(ctx)
    try:
        subject = check_subject(rest[0])
    except ConfigError as e:
        raise MalformedMessage(str(e)) from e
    await ctx.lanes.store(lambda: ctx.broker.registry.remove_identity(ctx.t.tenant, subject))
    await _audit(ctx, who.subject, {"action": "identity.remove", "subject": subject})
    logger.info("admin %s removed identity %s", who.subject, subject)
    return Response(status_code=200)


# --- the declaration ----------------------------------------------------------------------

_POLICY_ID: Final[Schema] = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
_RESOURCE: Final[dict[str, Schema]] = {
    n: {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", "maxLength": 128}
    for n in ("repo", "type", "tag")
}
_STRINGS: Final[Schema] = {"type": "array", "items": {"type": "string"}}


def _policy_routes(endpoint: str, attr: str) -> tuple[ApiRoute, ...]:
    name = endpoint.replace("-", " ")
    upload = "AttestationPolicyUpload" if attr == "attestation_policies" else "ResourcePolicyUpload"
    base = f"/kbs/v0/{endpoint}"
    return (
        ApiRoute(
            "POST",
            base,
            _policy_setter(attr, endpoint),
            f"Set the {name} (admin)",
            security=ADMIN,
            body=upload,
            response_description="stored",
            errors=(400, 401, 413),
        ),
        ApiRoute(
            "GET",
            base,
            _policy_lister(attr),
            f"List {name} ids (admin)",
            security=ADMIN,
            response=_STRINGS,
            response_description="policy ids",
            errors=(401,),
        ),
        ApiRoute(
            "GET",
            base + "/{policy_id}",
            _policy_getter(attr),
            f"Read one {name} (admin)",
            security=ADMIN,
            response="StoredPolicy",
            response_description="the policy",
            errors=(400, 401, 404),
            params={"policy_id": _POLICY_ID},
            query={"version": {"type": "integer", "minimum": 1}},
        ),
        ApiRoute(
            "GET",
            base + "/{policy_id}/versions",
            _policy_versions(attr),
            f"Versions of a {name} (admin or auditor)",
            security=ADMIN,
            response={"type": "array"},
            response_description="[{version, active}]",
            errors=(400, 401, 404),
            params={"policy_id": _POLICY_ID},
        ),
        ApiRoute(
            "POST",
            base + "/{policy_id}/activate",
            _policy_activator(attr),
            f"Activate a stored version (rollback) of a {name}",
            security=ADMIN,
            body={
                "type": "object",
                "required": ["version"],
                "properties": {"version": {"type": "integer", "minimum": 1}},
            },
            response_description="activated",
            errors=(400, 401, 404),
            params={"policy_id": _POLICY_ID},
        ),
    )


ROUTES: Final = (
    ApiRoute(
        "GET",
        "/kbs/v0/resource",
        list_resources,
        "List stored resource paths (admin)",
        security=ADMIN,
        response=_STRINGS,
        response_description="paths",
        errors=(401,),
    ),
    ApiRoute(
        "POST",
        "/kbs/v0/resource/{repo}/{type}/{tag}",
        put_resource,
        "Store a resource (admin)",
        security=ADMIN,
        body={},
        body_media="application/octet-stream",
        response_description="stored",
        errors=(401, 404, 413),
        params=_RESOURCE,
    ),
    ApiRoute(
        "DELETE",
        "/kbs/v0/resource/{repo}/{type}/{tag}",
        delete_resource,
        "Delete a resource (admin)",
        security=ADMIN,
        response_description="deleted",
        errors=(401, 404),
        params=_RESOURCE,
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/resource-info/{repo}/{type}/{tag}",
        resource_info,
        "Size and update time of a resource, never its content (admin)",
        security=ADMIN,
        response="ResourceInfo",
        response_description="info",
        errors=(401, 404),
        params=_RESOURCE,
    ),
    *_policy_routes("attestation-policy", "attestation_policies"),
    *_policy_routes("resource-policy", "resource_policies"),
    ApiRoute(
        "POST",
        "/kbs/v0/reference-value",
        register_reference_value,
        "Register reference values (admin)",
        security=ADMIN,
        body="RvpsMessage",
        response_description="registered",
        errors=(400, 401, 413),
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/reference-value",
        list_reference_values,
        "List reference-value ids (admin)",
        security=ADMIN,
        response=_STRINGS,
        response_description="ids",
        errors=(401,),
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/reference-value/{id:path}",
        get_reference_value,
        "Read one reference value with its expiration (admin)",
        security=ADMIN,
        response="StoredReferenceValue",
        response_description="value",
        errors=(400, 401, 404),
        # rvps.messages' id rule, less '/' (one segment in the document); an id holding '..'
        # is refused with a 400.
        params={"id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,256}$"}},
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/identities",
        list_identities,
        "List this tenant's identities (admin, auditor; not the default tenant)",
        security=ADMIN,
        response={"type": "array"},
        response_description="subjects and roles",
        errors=(401, 404),
    ),
    ApiRoute(
        "POST",
        "/kbs/v0/identities",
        add_identity,
        "Add an identity to this tenant (admin)",
        security=ADMIN,
        body="Identity",
        response_description="added",
        errors=(400, 401, 403, 404, 409),
    ),
    ApiRoute(
        "DELETE",
        "/kbs/v0/identities/{subject}",
        remove_identity,
        "Remove an identity from this tenant (admin; never the last admin)",
        security=ADMIN,
        response_description="removed",
        errors=(400, 401, 403, 404, 409),
        # custodes._internal.admin_claims.SUBJECT_RE
        params={"subject": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"}},
    ),
)
