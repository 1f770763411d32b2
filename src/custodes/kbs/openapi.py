"""The OpenAPI 3.1 document of the whole broker API, served at ``/kbs/v0/openapi.json``.

Written by hand because the routes dispatch on raw path segments (see ``app.py``); a test
checks that every route of the app appears here and that every documented operation exists.
"""

from __future__ import annotations

from typing import Any

from custodes import __version__
from custodes.types.tee import Tee

_ERR = {"$ref": "#/components/responses/Error"}
_ADMIN: list[dict[str, list[str]]] = [{"adminJwt": []}]
_OPERATOR: list[dict[str, list[str]]] = [{"operatorJwt": []}]
_TENANT_PARAM = {
    "name": "tenant",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"},
}
_SEGMENT = {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", "maxLength": 128}
# The stores' id rules (policy.store, rvps.messages); a path that breaks them is a 400.
_POLICY_ID_PARAM = {
    "name": "policy_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
}
_PATH_PARAMS = [
    {"name": n, "in": "path", "required": True, "schema": _SEGMENT} for n in ("repo", "type", "tag")
]


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _ERR for s in statuses}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _policy_paths(name: str, with_id: bool) -> dict[str, Any]:
    upload = "AttestationPolicyUpload" if with_id else "ResourcePolicyUpload"
    return {
        f"/kbs/v0/{name}": {
            "post": {
                "summary": f"Set the {name.replace('-', ' ')} (admin)",
                "security": _ADMIN,
                "requestBody": _json_body(upload),
                "responses": {"200": _ok("stored"), **_errors(400, 401, 413)},
            },
            "get": {
                "summary": f"List {name.replace('-', ' ')} ids (admin)",
                "security": _ADMIN,
                "responses": {
                    "200": _ok("policy ids", {"type": "array", "items": {"type": "string"}}),
                    **_errors(401),
                },
            },
        },
        f"/kbs/v0/{name}/{{policy_id}}/versions": {
            "get": {
                "summary": f"Versions of a {name.replace('-', ' ')} (admin or auditor)",
                "security": _ADMIN,
                "parameters": [_POLICY_ID_PARAM],
                "responses": {
                    "200": _ok("[{version, active}]", {"type": "array"}),
                    **_errors(400, 401, 404),
                },
            }
        },
        f"/kbs/v0/{name}/{{policy_id}}/activate": {
            "post": {
                "summary": f"Activate a stored version (rollback) of a {name.replace('-', ' ')}",
                "security": _ADMIN,
                "parameters": [_POLICY_ID_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["version"],
                                "properties": {"version": {"type": "integer", "minimum": 1}},
                            }
                        }
                    },
                },
                "responses": {"200": _ok("activated"), **_errors(400, 401, 404)},
            }
        },
        f"/kbs/v0/{name}/{{policy_id}}": {
            "get": {
                "summary": f"Read one {name.replace('-', ' ')} (admin)",
                "security": _ADMIN,
                "parameters": [_POLICY_ID_PARAM],
                "responses": {
                    "200": _ok("the policy", {"$ref": "#/components/schemas/StoredPolicy"}),
                    **_errors(400, 401, 404),
                },
            }
        },
    }


def _tpm_enrolment_paths() -> dict[str, Any]:
    """AK enrolment by credential activation (custodes extension, docs/api.md)."""

    def body(required: dict[str, Any]) -> dict[str, Any]:
        schema = {"type": "object", "required": list(required), "properties": required}
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    b64 = {"type": "string", "description": "padded standard base64"}
    return {
        "/kbs/v0/tpm/enrol": {
            "post": {
                "summary": "Start enrolling a TPM attestation key: a credential for its EK",
                "requestBody": body(
                    {
                        "ek_certificate": {**b64, "description": "EK certificate, DER"},
                        "ak_public": {**b64, "description": "the AK's marshalled TPMT_PUBLIC"},
                    }
                ),
                "responses": {
                    "200": _ok(
                        "the credential for TPM2_ActivateCredential",
                        {
                            "type": "object",
                            "required": [
                                "id",
                                "credential_blob",
                                "encrypted_secret",
                                "expires_in",
                            ],
                            "properties": {
                                "id": {"type": "string"},
                                "credential_blob": {**b64, "description": "TPM2B_ID_OBJECT"},
                                "encrypted_secret": {
                                    **b64,
                                    "description": "TPM2B_ENCRYPTED_SECRET",
                                },
                                "expires_in": {"type": "integer"},
                            },
                        },
                    ),
                    **_errors(400, 401, 404, 413),
                },
            }
        },
        "/kbs/v0/tpm/enrol/activate": {
            "post": {
                "summary": "Finish enrolling: the secret the TPM recovered; the AK is trusted",
                "requestBody": body(
                    {
                        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "secret": {**b64, "description": "32 bytes"},
                    }
                ),
                "responses": {
                    "200": _ok(
                        "enrolled",
                        {
                            "type": "object",
                            "required": ["ak_public", "ek_fingerprint", "reference_value", "added"],
                            "properties": {
                                "ak_public": b64,
                                "ek_fingerprint": {"type": "string"},
                                "reference_value": {"type": "string"},
                                "added": {"type": "boolean"},
                            },
                        },
                    ),
                    **_errors(400, 401, 404, 413),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
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
                    "(a list of names) and policy-selector (a name mapped by the broker's "
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
                "id": _TENANT_PARAM["schema"],
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
    paths: dict[str, Any] = {
        "/kbs/v0/auth": {
            "post": {
                "summary": "Start the RCAR handshake",
                "requestBody": _json_body("Request"),
                "responses": {
                    "200": _ok(
                        "challenge; sets cookie kbs-session-id",
                        {"$ref": "#/components/schemas/Challenge"},
                    ),
                    **_errors(400, 413),
                },
            }
        },
        "/kbs/v0/attest": {
            "post": {
                "summary": "Send evidence for the session's challenge; returns an EAR token",
                "parameters": [
                    {
                        "name": "kbs-session-id",
                        "in": "cookie",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": _json_body("Attestation"),
                "responses": {
                    "200": _ok("token", {"$ref": "#/components/schemas/AttestationResult"}),
                    **_errors(400, 401, 413),
                },
            }
        },
        "/kbs/v0/resource": {
            "get": {
                "summary": "List stored resource paths (admin)",
                "security": _ADMIN,
                "responses": {
                    "200": _ok("paths", {"type": "array", "items": {"type": "string"}}),
                    **_errors(401),
                },
            }
        },
        "/kbs/v0/resource/{repo}/{type}/{tag}": {
            "parameters": _PATH_PARAMS,
            "get": {
                "summary": "Fetch a resource, encrypted to the attested TEE key",
                "security": [{"sessionCookie": []}, {"earToken": []}],
                "responses": {
                    "200": _ok("JWE", {"$ref": "#/components/schemas/Jwe"}),
                    **_errors(401, 404),
                },
            },
            "post": {
                "summary": "Store a resource (admin)",
                "security": _ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {"application/octet-stream": {"schema": {}}},
                },
                "responses": {"200": _ok("stored"), **_errors(401, 404, 413)},
            },
            "delete": {
                "summary": "Delete a resource (admin)",
                "security": _ADMIN,
                "responses": {"200": _ok("deleted"), **_errors(401, 404)},
            },
        },
        "/kbs/v0/resource-info/{repo}/{type}/{tag}": {
            "parameters": _PATH_PARAMS,
            "get": {
                "summary": "Size and update time of a resource, never its content (admin)",
                "security": _ADMIN,
                "responses": {
                    "200": _ok("info", {"$ref": "#/components/schemas/ResourceInfo"}),
                    **_errors(401, 404),
                },
            },
        },
        **_policy_paths("attestation-policy", with_id=True),
        **_policy_paths("resource-policy", with_id=False),
        "/kbs/v0/reference-value": {
            "post": {
                "summary": "Register reference values (admin)",
                "security": _ADMIN,
                "requestBody": _json_body("RvpsMessage"),
                "responses": {"200": _ok("registered"), **_errors(400, 401, 413)},
            },
            "get": {
                "summary": "List reference-value ids (admin)",
                "security": _ADMIN,
                "responses": {
                    "200": _ok("ids", {"type": "array", "items": {"type": "string"}}),
                    **_errors(401),
                },
            },
        },
        "/kbs/v0/reference-value/{id}": {
            "get": {
                "summary": "Read one reference value with its expiration (admin)",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        # rvps.messages' id rule, less '/' (a single segment here); an id
                        # holding '..' is refused with a 400.
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,256}$"},
                    }
                ],
                "responses": {
                    "200": _ok("value", {"$ref": "#/components/schemas/StoredReferenceValue"}),
                    **_errors(400, 401, 404),
                },
            }
        },
        **_tpm_enrolment_paths(),
        "/kbs/v0/denials/{correlation_id}": {
            "get": {
                "summary": "Why a guest was refused, by its correlation id (admin or auditor)",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "correlation_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    }
                ],
                "responses": {"200": _ok("the denial and its attestation"), **_errors(401, 404)},
            }
        },
        "/kbs/v0/audit": {
            "get": {
                "summary": "The tenant's audit stream, JSON Lines (admin or auditor)",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "JSON Lines",
                        "content": {"application/jsonl": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401),
                },
            }
        },
        "/kbs/v0/audit/public-key": {
            "get": {
                "summary": "The audit signing key, PEM (admin or auditor)",
                "security": _ADMIN,
                "responses": {
                    "200": {
                        "description": "PEM",
                        "content": {"application/x-pem-file": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            }
        },
        "/kbs/v0/identities": {
            "get": {
                "summary": "List this tenant's identities (admin, auditor; not the default tenant)",
                "security": _ADMIN,
                "responses": {
                    "200": _ok("subjects and roles", {"type": "array"}),
                    **_errors(401, 404),
                },
            },
            "post": {
                "summary": "Add an identity to this tenant (admin)",
                "security": _ADMIN,
                "requestBody": _json_body("Identity"),
                "responses": {"200": _ok("added"), **_errors(400, 401, 403, 404, 409)},
            },
        },
        "/kbs/v0/identities/{subject}": {
            "delete": {
                "summary": "Remove an identity from this tenant (admin; never the last admin)",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "subject",
                        "in": "path",
                        "required": True,
                        # custodes._internal.admin_claims.SUBJECT_RE
                        "schema": {
                            "type": "string",
                            "pattern": "^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$",
                        },
                    }
                ],
                "responses": {"200": _ok("removed"), **_errors(400, 401, 403, 404, 409)},
            }
        },
        "/operator/v0/tenants": {
            "get": {
                "summary": "List tenants (operator)",
                "security": _OPERATOR,
                "responses": {
                    "200": _ok("tenant ids", {"type": "array", "items": {"type": "string"}}),
                    **_errors(401),
                },
            },
            "post": {
                "summary": "Create a tenant with its first identities (operator)",
                "security": _OPERATOR,
                "requestBody": _json_body("NewTenant"),
                "responses": {"200": _ok("created"), **_errors(400, 401)},
            },
        },
        "/operator/v0/tenants/{tenant}": {
            "get": {
                "summary": "A tenant's status (operator)",
                "security": _OPERATOR,
                "parameters": [_TENANT_PARAM],
                "responses": {"200": _ok("status"), **_errors(401, 404)},
            }
        },
        "/operator/v0/tenants/{tenant}/suspend": {
            "post": {
                "summary": "Suspend a tenant: every request to it is refused (operator)",
                "security": _OPERATOR,
                "parameters": [_TENANT_PARAM],
                "responses": {"200": _ok("suspended"), **_errors(401, 404)},
            }
        },
        "/operator/v0/tenants/{tenant}/resume": {
            "post": {
                "summary": "Resume a suspended tenant (operator)",
                "security": _OPERATOR,
                "parameters": [_TENANT_PARAM],
                "responses": {"200": _ok("active"), **_errors(401, 404)},
            }
        },
        "/kbs/v0/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _ok("OpenAPI 3.1")}}
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and store check",
                "responses": {"200": _ok("ok"), **_errors(500)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
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
        "paths": paths,
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
