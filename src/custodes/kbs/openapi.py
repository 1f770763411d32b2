"""The OpenAPI 3.1 document of the whole broker API, served at ``/kbs/v0/openapi.json``.

Generated: every operation comes from the route declarations (:class:`ApiRoute` in
``kbs/routes/``) that the dispatcher serves, so the document and the routes cannot drift
apart; only the request and response types (``components.schemas``) are written here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

from custodes import __version__
from custodes.kbs.http import ApiRoute, Schema
from custodes.types.tee import Tee

_ERR: Final = {"$ref": "#/components/responses/Error"}
_TENANT_ID: Final = {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"}
_PARAM: Final = re.compile(r"\{([A-Za-z_]+)(?::path)?\}")


def _schema(ref: str | Schema) -> Schema:
    return {"$ref": f"#/components/schemas/{ref}"} if isinstance(ref, str) else ref


def operation(route: ApiRoute) -> dict[str, Any]:
    """The OpenAPI operation object of one route."""
    op: dict[str, Any] = {"summary": route.summary}
    if route.security:
        op["security"] = [{scheme: []} for scheme in route.security]
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": route.params.get(name, {"type": "string"}),
        }
        for name in _PARAM.findall(route.path)
    ]
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in route.query.items()
    ]
    parameters += [
        {"name": name, "in": "cookie", "required": True, "schema": {"type": "string"}}
        for name in route.cookies
    ]
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {route.body_media: {"schema": _schema(route.body)}},
        }
    ok: dict[str, Any] = {"description": route.response_description}
    if route.response is not None:
        ok["content"] = {route.response_media: {"schema": _schema(route.response)}}
    op["responses"] = {"200": ok, **{str(status): _ERR for status in route.errors}}
    return op


def paths_of(routes: Iterable[ApiRoute]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = operation(route)
    return paths


def openapi_document(routes: Iterable[ApiRoute]) -> dict[str, Any]:
    jwk_ec = {
        "type": "object",
        "required": ["kty", "crv", "alg", "x", "y"],
        "properties": {
            "kty": {"const": "EC"},
            "crv": {"enum": ["P-256", "P-521"]},
            "alg": {"const": "ECDH-ES+A256KW"},
            "x": {"type": "string"},
            "y": {"type": "string"},
        },
    }
    jwk_rsa = {
        "type": "object",
        "required": ["kty", "alg", "n", "e"],
        "properties": {
            "kty": {"const": "RSA"},
            "alg": {"enum": ["RSA-OAEP-256", "RSA1_5"]},
            "n": {"type": "string"},
            "e": {"type": "string"},
        },
    }
    schemas: dict[str, Any] = {
        "Request": {
            "type": "object",
            "required": ["version", "tee", "extra-params"],
            "properties": {
                "version": {"type": "string", "const": "0.4.0"},
                # Every wire name; one the broker has no verifier for is refused with a 400.
                "tee": {"type": "string", "enum": [t.value for t in Tee]},
                "extra-params": {
                    "description": "Any JSON. An object may carry supported-hash-algorithms "
                    "(a list of names) and attestation-policy-selector (or its earlier name "
                    "policy-selector: a name mapped by the broker's "
                    "attestation.policy_id_map; unmapped names are refused)."
                },
            },
        },
        "Challenge": {
            "type": "object",
            "required": ["nonce", "extra-params"],
            "properties": {"nonce": {"type": "string"}, "extra-params": {}},
        },
        "Attestation": {
            "type": "object",
            "required": ["runtime-data", "tee-evidence"],
            "properties": {
                "init-data": {
                    "type": "object",
                    "required": ["format", "body"],
                    "properties": {"format": {"const": "toml"}, "body": {"type": "string"}},
                },
                "runtime-data": {
                    "type": "object",
                    "required": ["nonce", "tee-pubkey"],
                    "properties": {
                        "nonce": {"type": "string"},
                        "tee-pubkey": {"oneOf": [jwk_ec, jwk_rsa]},
                    },
                },
                "tee-evidence": {
                    "type": "object",
                    "required": ["primary_evidence", "additional_evidence"],
                    "properties": {
                        "primary_evidence": {},
                        "additional_evidence": {"type": "string"},
                    },
                },
            },
        },
        "AttestationResult": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string", "description": "EAR JWT (ES256)"}},
        },
        "Jwe": {
            "type": "object",
            "description": "Flattened JSON JWE (RFC 7516 §7.2.2) to the TEE key",
            "required": ["protected", "encrypted_key", "iv", "ciphertext", "tag"],
            "properties": {
                k: {"type": "string"}
                for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag")
            },
        },
        "ErrorInformation": {
            "type": "object",
            "required": ["type", "detail"],
            "properties": {"type": {"type": "string"}, "detail": {"type": "string"}},
        },
        "AttestationPolicyUpload": {
            "type": "object",
            "required": ["policy"],
            "properties": {
                "policy_id": {"type": "string", "default": "default_cpu"},
                "policy": {"type": "string", "description": "Rego, unpadded base64url"},
                "type": {"type": "string", "default": "rego"},
            },
        },
        "ResourcePolicyUpload": {
            "type": "object",
            "required": ["policy"],
            "properties": {"policy": {"type": "string", "description": "Rego, unpadded base64url"}},
        },
        "StoredPolicy": {
            "type": "object",
            "required": ["policy_id", "policy"],
            "properties": {"policy_id": {"type": "string"}, "policy": {"type": "string"}},
        },
        "RvpsMessage": {
            "type": "object",
            "required": ["type", "payload"],
            "properties": {
                "version": {"type": "string", "default": "0.1.0"},
                "type": {"type": "string", "enum": ["sample"]},
                "payload": {
                    "type": "string",
                    "description": "base64 of a JSON object: reference-value id -> value",
                },
                "expiration": {
                    "type": "string",
                    "format": "date-time",
                    "description": "custodes extension: when these values stop being used",
                },
            },
        },
        "StoredReferenceValue": {
            "type": "object",
            "required": ["version", "name", "expiration", "value"],
            "properties": {
                "version": {"type": "string"},
                "name": {"type": "string"},
                "expiration": {"type": "string"},
                "value": {},
            },
        },
        "Identity": {
            "type": "object",
            "required": ["subject", "role", "public_key"],
            "properties": {
                "subject": {"type": "string"},
                "role": {"enum": ["admin", "auditor"]},
                "public_key": {"type": "string", "description": "PEM, Ed25519 or EC P-256"},
            },
        },
        "NewTenant": {
            "type": "object",
            "required": ["id", "identities"],
            "properties": {
                "id": _TENANT_ID,
                "identities": {"type": "array", "items": {"$ref": "#/components/schemas/Identity"}},
            },
        },
        "ResourceInfo": {
            "type": "object",
            "required": ["path", "size", "updated"],
            "properties": {
                "path": {"type": "string"},
                "size": {"type": "integer"},
                "updated": {"type": "integer"},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "custodes key broker (KBS protocol 0.4.0)",
            "description": (
                "Every /kbs/v0 path is also served under /tenants/{tenant}/kbs/v0 for the "
                "tenant of that name; /kbs/v0 is the default tenant."
            ),
            "version": __version__,
        },
        "paths": paths_of(routes),
        "components": {
            "schemas": schemas,
            "responses": {
                "Error": {
                    "description": "ErrorInformation",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorInformation"}
                        }
                    },
                }
            },
            "securitySchemes": {
                "adminJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "operatorJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "earToken": {"type": "http", "scheme": "bearer", "bearerFormat": "EAR JWT"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "kbs-session-id"},
            },
        },
    }
