"""The route table is the API: the dispatcher serves exactly its routes, the OpenAPI document
is generated from it (every route documented, nothing documented that is not a route), and a
request that fits no route gets the most precise refusal."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from starlette.routing import Route

from custodes.errors import InvalidResourcePath
from custodes.kbs import errors as kerr
from custodes.kbs.app import create_app, match_kbs
from custodes.kbs.openapi import openapi_document
from custodes.kbs.routes import ROUTES
from live_broker import LiveBroker

DOC = openapi_document(ROUTES)


def _operations(doc: dict[str, object]) -> set[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {(m.upper(), p) for p, ops in paths.items() for m in ops if m != "parameters"}


def test_every_route_is_documented_and_every_operation_is_a_route() -> None:
    assert _operations(DOC) == {(r.method, r.openapi_path) for r in ROUTES}
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES), "a route declared twice"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_each_operation_says_what_its_route_declares(route: object) -> None:
    from custodes.kbs.http import ApiRoute

    assert isinstance(route, ApiRoute)
    op = DOC["paths"][route.openapi_path][route.method.lower()]
    assert op["summary"] == route.summary
    names = re.findall(r"\{([A-Za-z_]+)(?::path)?\}", route.path)
    documented = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
    assert documented == names
    assert ("requestBody" in op) == (route.body is not None)
    assert set(op["responses"]) == {"200", *(str(s) for s in route.errors)}
    if route.security:
        assert op["security"] == [{s: []} for s in route.security]
        schemes = DOC["components"]["securitySchemes"]
        assert all(s in schemes for s in route.security)
    else:
        assert "security" not in op


def test_every_schema_reference_resolves() -> None:
    schemas = DOC["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/([A-Za-z]+)"', repr(DOC).replace("'", '"'))
    assert refs, "the document references its schemas"
    missing = sorted(set(refs) - set(schemas))
    assert not missing, missing


def test_the_document_is_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    assert all(p.startswith("/") for p in DOC["paths"])


def test_every_top_level_route_of_the_app_is_declared(broker: LiveBroker) -> None:
    app = create_app(broker.broker)
    top = {
        r.path
        for r in app.routes
        if isinstance(r, Route) and "{rest:path}" not in r.path and "/ui" not in r.path
    }
    declared = {r.path for r in ROUTES if not r.path.startswith(("/kbs/v0/", "/operator/v0/"))}
    assert top == declared


def test_the_served_document_is_the_generated_one(broker: LiveBroker) -> None:
    served = httpx.get(f"{broker.url}/kbs/v0/openapi.json").json()
    assert served == json.loads(json.dumps(DOC))
    # Under a tenant's prefix too, for a tenant that need not exist.
    assert httpx.get(f"{broker.url}/tenants/nobody/kbs/v0/openapi.json").json() == served


@pytest.mark.parametrize(
    ("method", "segments", "error"),
    [
        ("GET", ["nope"], kerr.EndpointNotFound),
        ("PUT", ["resource", "a", "b", "c"], kerr.MethodNotAllowed),
        ("PATCH", ["auth"], kerr.MethodNotAllowed),
        ("GET", ["resource", "a"], InvalidResourcePath),
        ("POST", ["resource"], InvalidResourcePath),
        ("GET", ["resource-info", "a", "b", "c", "d"], InvalidResourcePath),
        ("GET", ["attestation-policy", "x", "y"], kerr.EndpointNotFound),
        ("POST", ["resource-policy", "x"], kerr.EndpointNotFound),
        ("GET", ["audit", "x"], kerr.EndpointNotFound),
        ("POST", ["tpm", "enrol", "x"], kerr.EndpointNotFound),
        ("GET", ["openapi.json", "x"], kerr.EndpointNotFound),
    ],
)
def test_a_request_that_fits_no_route_is_refused_precisely(
    method: str, segments: list[str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        match_kbs(method, segments, "/kbs/v0/" + "/".join(segments))


@pytest.mark.parametrize(
    ("method", "segments", "path", "rest"),
    [
        ("GET", ["resource"], "/kbs/v0/resource", []),
        (
            "GET",
            ["resource", "a", "b", "c"],
            "/kbs/v0/resource/{repo}/{type}/{tag}",
            ["a", "b", "c"],
        ),
        ("GET", ["reference-value", ""], "/kbs/v0/reference-value", []),
        ("GET", ["reference-value", "a", "b"], "/kbs/v0/reference-value/{id:path}", ["a", "b"]),
        (
            "GET",
            ["resource-policy", "p", "versions"],
            "/kbs/v0/resource-policy/{policy_id}/versions",
            ["p", "versions"],
        ),
        ("POST", ["tpm", "enrol", "activate"], "/kbs/v0/tpm/enrol/activate", ["enrol", "activate"]),
    ],
)
def test_a_request_reaches_its_route(
    method: str, segments: list[str], path: str, rest: list[str]
) -> None:
    route, got = match_kbs(method, segments, "/kbs/v0/" + "/".join(segments))
    assert (route.method, route.path, got) == (method, path, rest)
