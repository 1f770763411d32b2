"""The audit routes: the tenant's audit stream and the explanation of a denial, for the
tenant's admins and auditors."""

from __future__ import annotations

import io
from typing import Final

from cryptography.hazmat.primitives import serialization
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from custodes.errors import MalformedMessage, NotFound
from custodes.kbs.http import ADMIN, ApiRoute, Ctx, admin, json_response


async def get_denial(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """Why a guest was refused, by the correlation id it was given (admin or auditor)."""
    await admin(ctx, request, write=False)
    log = ctx.broker.audit
    tenant = ctx.t.tenant
    denial = (
        await ctx.lanes.store(lambda: log.get_by_correlation_id(tenant, rest[0]))
        if log is not None
        else None
    )
    if log is None or denial is None or denial.kind != "denial":
        raise NotFound(f"no denial with correlation id {rest[0]}")
    token_id = denial.event.get("token_id")
    attestation = (
        await ctx.lanes.store(lambda: log.get_by_correlation_id(tenant, token_id))
        if isinstance(token_id, str)
        else None
    )
    return json_response(
        {
            "denial": denial.event,
            "time": denial.to_json()["time"],
            "attestation": attestation.event if attestation is not None else None,
        }
    )


async def get_audit(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """The tenant's audit stream as JSON Lines (``?since=SEQ``).

    An export appends a signed checkpoint (naming who exported) and ends with it."""
    who = await admin(ctx, request, write=False)
    log = ctx.broker.audit
    if log is None:
        raise NotFound("this broker keeps no audit log")
    since = request.query_params.get("since", "0")
    if not since.isascii() or not since.isdigit():
        raise MalformedMessage("since must be a sequence number")
    buffer = io.BytesIO()
    tenant = ctx.t.tenant
    await ctx.lanes.audit(
        lambda: log.export(tenant, buffer, since_seq=int(since), actor=who.subject)
    )
    return Response(buffer.getvalue(), media_type="application/jsonl")


async def get_audit_key(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """The audit log's verification key (PEM)."""
    await admin(ctx, request, write=False)
    log = ctx.broker.audit
    if log is None:
        raise NotFound("this broker keeps no audit log")
    pem = log.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Response(pem, media_type="application/x-pem-file")


ROUTES: Final = (
    ApiRoute(
        "GET",
        "/kbs/v0/denials/{correlation_id}",
        get_denial,
        "Why a guest was refused, by its correlation id (admin or auditor)",
        security=ADMIN,
        response_description="the denial and its attestation",
        errors=(401, 404),
        params={"correlation_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/audit",
        get_audit,
        "The tenant's audit stream, JSON Lines (admin or auditor)",
        security=ADMIN,
        response={"type": "string"},
        response_description="JSON Lines",
        response_media="application/jsonl",
        errors=(400, 401),
        query={"since": {"type": "integer", "minimum": 0}},
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/audit/public-key",
        get_audit_key,
        "The audit signing key, PEM (admin or auditor)",
        security=ADMIN,
        response={"type": "string"},
        response_description="PEM",
        response_media="application/x-pem-file",
        errors=(401,),
    ),
)
