"""The broker's HTTP app (Starlette): matches a request to its declared route and renders every
error as upstream's ``ErrorInformation``.

The routes are declared once, in ``kbs/routes/`` (guest, admin, audit, operator and system
routes); their handlers parse, call a service (``kbs/handshake.py``, ``kbs/release.py``, the
tenant's stores) and render. Paths are parsed from the raw (still percent-encoded) request path
and each segment must match the resource segment rule, so ``%2e%2e``, ``%2f`` and friends never
reach a handler. Blocking work runs off the event loop in bounded pools (``kbs/lanes.py``).
An unexpected exception is logged and answered with a generic 500.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import anyio
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from custodes.errors import CustodesError, InvalidResourcePath
from custodes.kbs import errors as kerr
from custodes.kbs.broker import Broker
from custodes.kbs.http import (
    KBS_PREFIX,
    SESSION_COOKIE,
    ApiRoute,
    Ctx,
    error_response,
)
from custodes.kbs.lanes import Pools
from custodes.kbs.metrics import LAG_PROBE_SECONDS
from custodes.kbs.openapi import openapi_document
from custodes.kbs.routes import ROUTES
from custodes.kbs.tenants import DEFAULT_TENANT, check_tenant_id
from custodes.ui.routes import ui_routes

__all__ = ["ROUTES", "SESSION_COOKIE", "create_app"]

logger = logging.getLogger(__name__)

SESSION_SWEEP_SECONDS: Final = 60
_METHODS: Final = ["GET", "POST", "PUT", "DELETE", "PATCH"]
# Endpoints whose listing is also served with a trailing slash.
_TRAILING_SLASH: Final = frozenset({"reference-value", "identities"})
_RESOURCE_ENDPOINTS: Final = frozenset({"resource", "resource-info"})

_KBS_ROUTES: Final = tuple(r for r in ROUTES if r.path.startswith(KBS_PREFIX))
_OPERATOR_ROUTES: Final = tuple(r for r in ROUTES if r.scope == "operator")
_OPENAPI: Final = openapi_document(ROUTES)
# The tenant routes by their first segment (``auth``, ``resource``, ...): a request is matched
# against the few routes of its endpoint only.
_BY_ENDPOINT: Final[dict[str, tuple[ApiRoute, ...]]] = {
    first: tuple(r for r in _KBS_ROUTES if r.segments[0] == first)
    for first in dict.fromkeys(r.segments[0] for r in _KBS_ROUTES)
}
_TOP_ROUTES: Final = tuple(
    r for r in ROUTES if r.scope == "public" and not r.path.startswith(KBS_PREFIX)
)


def _split_raw_path(raw: bytes) -> list[str]:
    """The path's segments, validated as ASCII; '%' is refused by the segment rule later."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise InvalidResourcePath("request path is not ASCII") from e
    return text.lstrip("/").split("/")


def _dispatch_target(raw_path: bytes) -> tuple[str, list[str]]:
    """(tenant, segments after ``kbs/v0/``) of a raw request path under ``/kbs/v0/`` or
    ``/tenants/<tenant>/kbs/v0/``."""
    segments = _split_raw_path(raw_path.split(b"?", 1)[0])
    if segments[:1] == ["tenants"]:
        if len(segments) < 5 or segments[2:4] != ["kbs", "v0"]:
            raise kerr.EndpointNotFound("tenant URLs are /tenants/<tenant>/kbs/v0/...")
        return check_tenant_id(segments[1]), segments[4:]
    if segments[:2] != ["kbs", "v0"]:
        raise kerr.EndpointNotFound("no such endpoint")
    return DEFAULT_TENANT, segments[2:]


def match_kbs(method: str, segments: list[str], shown_path: str) -> tuple[ApiRoute, list[str]]:
    """The declared route for ``method`` on ``segments`` (after ``kbs/v0/``), and the segments
    it is called with; otherwise the most precise refusal (404 endpoint, 405, 404 path)."""
    first = segments[0]
    known = _BY_ENDPOINT.get(first, ())
    if not known:
        raise kerr.EndpointNotFound(f"no endpoint /kbs/v0/{first}")
    candidates = [r for r in known if r.method == method]
    if not candidates:
        raise kerr.MethodNotAllowed(f"{method} is not allowed on /kbs/v0/{first}")
    if first in _TRAILING_SLASH and segments[1:] == [""]:
        segments = [first]
    for route in candidates:
        if route.matches(segments):
            return route, segments[1:]
    if first in _RESOURCE_ENDPOINTS:
        raise InvalidResourcePath("resource paths have exactly three segments: <repo>/<type>/<tag>")
    raise kerr.EndpointNotFound(f"no endpoint {shown_path}")


def _match_operator(method: str, raw_path: bytes) -> tuple[ApiRoute, list[str]]:
    segments = raw_path.split(b"?", 1)[0].decode("ascii", "replace").split("/")[3:]
    if segments[:1] != ["tenants"]:
        raise kerr.EndpointNotFound("operator endpoints are /operator/v0/tenants/...")
    segments = ["tenants", *(s for s in segments[1:] if s)]
    for route in _OPERATOR_ROUTES:
        if route.method == method and route.matches(segments):
            return route, segments[1:]
    if len(segments) == 1:
        raise kerr.MethodNotAllowed(f"{method} is not allowed on /operator/v0/tenants")
    raise kerr.EndpointNotFound("no such operator endpoint")


def _label(method: str, segments: list[str]) -> str:
    first = segments[0] if segments else ""
    known = any(r.method == method for r in _BY_ENDPOINT.get(first, ()))
    return f"{method} {first}" if known else "other"


def create_app(broker: Broker, *, pools: Pools | None = None) -> Starlette:
    pools = pools or Pools(policy_seconds=broker.config.limits.policy_seconds)

    async def api(request: HttpRequest) -> Response:
        method = request.method
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        label = "other"
        try:
            tenant, segments = _dispatch_target(raw_path)
            label = _label(method, segments)
            route, rest = match_kbs(method, segments, request.url.path)
            if route.scope == "public":
                response = await route.handler(request, broker)
            else:
                lanes = pools.lanes(tenant)
                services = broker.ready_tenant(tenant)
                if services is None:
                    services = await lanes.store(lambda: broker.tenant(tenant))
                response = await route.handler(request, Ctx(broker, services, lanes), rest)
        except Exception as exc:  # every error is rendered as ErrorInformation
            return error_response(broker, exc, label)
        broker.metrics.requests.labels(label, str(response.status_code)).inc()
        return response

    async def operator_api(request: HttpRequest) -> Response:
        try:
            lanes = pools.lanes("_operator")
            header = request.headers.get("authorization")
            # Authenticated before the path is matched: the operator API shows nothing to
            # a caller without an operator token.
            who = await lanes.store(lambda: broker.operator.authenticate(header))
            raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
            route, rest = _match_operator(request.method, raw)
            response = await route.handler(request, broker, who, lanes, rest)
        except Exception as exc:  # every error is rendered as ErrorInformation
            return error_response(broker, exc, "operator")
        broker.metrics.requests.labels("operator", str(response.status_code)).inc()
        return response

    def top(route: ApiRoute) -> Route:
        async def endpoint(request: HttpRequest) -> Response:
            return await route.handler(request, broker)

        return Route(route.path, endpoint, methods=[route.method])

    async def not_found(request: HttpRequest, exc: Exception) -> Response:
        return error_response(
            broker, kerr.EndpointNotFound(f"no endpoint {request.url.path}"), "other"
        )

    async def not_allowed(request: HttpRequest, exc: Exception) -> Response:
        return error_response(
            broker, kerr.MethodNotAllowed(f"{request.method} is not allowed here"), "other"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await anyio.sleep(SESSION_SWEEP_SECONDS)
                try:
                    await anyio.to_thread.run_sync(
                        lambda: broker.store.purge_expired(broker.clock.now())
                    )
                except CustodesError as exc:
                    logger.warning("session sweep failed: %s", exc)

        async def probe_loop_lag() -> None:
            # How late a timer fires is how long the loop was kept from running it: the
            # figure that says whether anything blocks the event loop (loop lag on /metrics).
            while True:
                due = anyio.current_time() + LAG_PROBE_SECONDS
                await anyio.sleep(LAG_PROBE_SECONDS)
                broker.metrics.loop_lag.observe(max(0.0, anyio.current_time() - due))

        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep)
            tg.start_soon(probe_loop_lag)
            yield
            tg.cancel_scope.cancel()

    app = Starlette(
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed},
        routes=[
            *(top(r) for r in _TOP_ROUTES),
            Route("/kbs/v0/{rest:path}", api, methods=_METHODS),
            Route("/tenants/{tenant}/kbs/v0/{rest:path}", api, methods=_METHODS),
            Route("/operator/v0/{rest:path}", operator_api, methods=_METHODS),
            *ui_routes(broker),  # the dashboard (custodes/ui; docs/dashboard.md)
        ],
    )
    app.state.broker = broker
    app.state.pools = pools
    app.state.openapi = _OPENAPI
    return app
