"""The routes that need no tenant: liveness, metrics and the API's own document."""

from __future__ import annotations

from typing import Any, Final

import anyio
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from custodes.errors import CustodesError
from custodes.kbs.broker import Broker
from custodes.kbs.http import ApiRoute, error_response, json_response


async def healthz(request: HttpRequest, broker: Broker) -> Response:
    try:
        # A store read off the loop: a slow store must not make the broker look dead to
        # everything else it serves.
        await anyio.to_thread.run_sync(
            lambda: broker.store.list("kbs_health", now=broker.clock.now())
        )
    except CustodesError as exc:
        return error_response(broker, exc, "healthz")
    return json_response({"status": "ok"})


async def metrics(request: HttpRequest, broker: Broker) -> Response:
    return Response(broker.metrics.render(), media_type=broker.metrics.content_type)


async def openapi_json(request: HttpRequest, broker: Broker) -> Response:
    # Generated once from the whole route table by the app (kbs/app.py), which holds it.
    document: dict[str, Any] = request.app.state.openapi
    return json_response(document)


ROUTES: Final = (
    ApiRoute(
        "GET",
        "/kbs/v0/openapi.json",
        openapi_json,
        "This document",
        scope="public",
        response_description="OpenAPI 3.1",
    ),
    ApiRoute(
        "GET",
        "/healthz",
        healthz,
        "Liveness and store check",
        scope="public",
        response_description="ok",
        errors=(503,),
    ),
    ApiRoute(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        scope="public",
        response={"type": "string"},
        response_description="text exposition format",
        response_media="text/plain",
    ),
)
