"""What every broker route shares: the route declaration, the request context, reading bounded
bodies, rendering JSON and ``ErrorInformation``, the session cookie and the admin role check.

Routes are declared once, as :class:`ApiRoute` values (``kbs/routes/``): the dispatcher in
``app.py`` matches requests against them and ``openapi.py`` generates the OpenAPI document
from them, so a route cannot exist undocumented or be documented without existing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, Final

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from custodes.errors import AdminAuthError, MalformedMessage
from custodes.kbs import errors as kerr
from custodes.kbs.admin_auth import AdminForbidden, AdminIdentity, Role
from custodes.kbs.broker import Broker, TenantServices
from custodes.kbs.lanes import Lanes
from custodes.kbs.tenants import DEFAULT_TENANT
from custodes.protocol.messages import parse_json_body
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

SESSION_COOKIE: Final = "kbs-session-id"
BROKER_STREAM: Final = "_broker"
KBS_PREFIX: Final = "/kbs/v0/"
OPERATOR_PREFIX: Final = "/operator/v0/"

# Security scheme names of the OpenAPI document (components.securitySchemes).
ADMIN: Final = ("adminJwt",)
OPERATOR: Final = ("operatorJwt",)
GUEST: Final = ("sessionCookie", "earToken")

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Ctx:
    """One request's broker, tenant, and where its blocking work runs."""

    broker: Broker
    t: TenantServices
    lanes: Lanes


Handler = Callable[[HttpRequest, Ctx, list[str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One operation: where it lives, who handles it, and what its document says.

    ``path`` is the full template (``/kbs/v0/resource/{repo}/{type}/{tag}``); a ``{name}``
    segment matches any one segment, ``{name:path}`` one or more (the rest of the path).
    ``body``/``response`` name a schema of ``components.schemas`` or give one inline.
    ``scope`` says what the handler is called with: ``tenant`` routes (under ``/kbs/v0/`` and
    ``/tenants/<tenant>/kbs/v0/``) get ``(request, Ctx, rest)``, ``operator`` routes
    ``(request, broker, operator identity, lanes, rest)``, ``public`` ones ``(request, broker)``.
    """

    method: str
    path: str
    handler: Callable[..., Awaitable[Response]]
    summary: str
    scope: str = "tenant"
    security: tuple[str, ...] = ()
    body: str | Schema | None = None
    body_media: str = "application/json"
    response: str | Schema | None = None
    response_description: str = "ok"
    response_media: str = "application/json"
    errors: tuple[int, ...] = ()
    params: Mapping[str, Schema] = field(default_factory=dict)
    query: Mapping[str, Schema] = field(default_factory=dict)
    cookies: tuple[str, ...] = ()
    # The template's segments after its API prefix (``/kbs/v0/`` or ``/operator/v0/``):
    # computed once, since every request is matched against them.
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", _template_segments(self.path))

    @property
    def openapi_path(self) -> str:
        return self.path.replace(":path}", "}")

    def matches(self, segments: list[str]) -> bool:
        """Whether request ``segments`` (after the prefix) fit this template."""
        template = self.segments
        if template and template[-1].endswith(":path}"):
            return len(segments) >= len(template) and _fits(template[:-1], segments)
        return len(segments) == len(template) and _fits(template, segments)


def _template_segments(path: str) -> tuple[str, ...]:
    for prefix in (KBS_PREFIX, OPERATOR_PREFIX):
        if path.startswith(prefix):
            return tuple(path[len(prefix) :].split("/"))
    return tuple(path.lstrip("/").split("/"))


def _fits(template: tuple[str, ...], segments: list[str]) -> bool:
    return all(t.startswith("{") or t == s for t, s in zip(template, segments, strict=False))


async def admin(ctx: Ctx, request: HttpRequest, *, write: bool) -> AdminIdentity:
    """The caller's admin identity; writes need the admin role, reads admit auditors too.
    (Authentication records the token's id against replay: a store write, off the loop.)"""
    header = request.headers.get("authorization")
    who = await ctx.lanes.store(lambda: ctx.t.admin.authenticate(header))
    if write and who.role is not Role.ADMIN:
        raise AdminForbidden(
            f"{who.role} {who.subject!r} may not change tenant {ctx.t.tenant} (read-only role)"
        )
    if who.role not in (Role.ADMIN, Role.AUDITOR):
        raise AdminAuthError("not a tenant identity")
    return who


async def read_body(request: HttpRequest, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedMessage("invalid Content-Length header")
        if int(declared) > limit:
            raise kerr.RequestTooLarge(f"request body over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise kerr.RequestTooLarge(f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: HttpRequest, broker: Broker, limit: int | None = None) -> Json:
    body = await read_body(request, limit or broker.config.limits.max_body_bytes)
    return parse_json_body(body, max_depth=broker.config.limits.max_json_depth)


def json_response(obj: Json, status: int = 200) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def set_session_cookie(
    response: Response, session_id: str, expires_at: float, tls: bool, tenant: str
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        expires=formatdate(expires_at, usegmt=True),
        path="/kbs/v0" if tenant == DEFAULT_TENANT else f"/tenants/{tenant}/kbs/v0",
        httponly=True,
        secure=tls,
        samesite="strict",
    )


def audit(ctx: Ctx, kind: str, actor: str | None, event: JsonObject) -> None:
    ctx.broker.record(ctx.t.tenant, kind, actor, event)


def broker_audit(broker: Broker, actor: str, event: JsonObject) -> None:
    broker.record(BROKER_STREAM, "tenant", actor, event)


def error_response(broker: Broker, exc: BaseException, label: str) -> Response:
    """``ErrorInformation`` for ``exc``; internal faults are logged and answered generically."""
    mapped = kerr.classify(exc)
    if mapped is kerr.INTERNAL:
        logger.exception("internal error on %s", label, exc_info=exc)
        detail = "internal error; see the broker's log"
    elif mapped.variant == "StorageUnavailable":
        # The store's message may name hosts or files: it goes to the log, not the client.
        logger.error("store failure on %s: %s", label, exc)
        detail = "the broker's store is unavailable; retry later"
    elif mapped.status >= 500:
        logger.error("error on %s: %s", label, exc)
        detail = str(exc)
    else:
        detail = str(exc)
    broker.metrics.requests.labels(label, str(mapped.status)).inc()
    headers = {"Retry-After": "1"} if mapped.status in (429, 503) else None
    return JSONResponse(
        kerr.error_body(mapped.variant, detail), status_code=mapped.status, headers=headers
    )
