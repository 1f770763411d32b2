"""The workload admin's client for the broker's admin API, and the operator's for the
operator API.

Each request carries a fresh, short-lived JWT signed with the caller's private key (EdDSA for
Ed25519 keys, ES256 for P-256 keys); the key never leaves this process. The token names the
caller's subject (``sub``), the URL it is sent to (``aud``: the tenant's KBS base URL, or
``<broker>/operator``) and a random ``jti``: the broker accepts it once, there only.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Self

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.admin_claims import OPERATOR_PATH, check_subject, normalize
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes._internal.jws import sign_compact
from custodes._internal.kbs_http import raise_for_error
from custodes._internal.tls import tls_verify
from custodes.errors import ConfigError, MalformedMessage, UpstreamError
from custodes.protocol.resource import ResourcePath
from custodes.rvps.messages import sample_message
from custodes.types.json import Json, JsonObject

AdminKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PolicyKind = Literal["attestation", "resource"]
# Each token is used once, right away: a short life is enough, and the broker remembers its
# jti only that long. `custodes admin token --ttl` mints longer ones (the broker's maximum
# is admin.max_token_lifetime_seconds).
ADMIN_TOKEN_SECONDS = 120


def load_admin_key(path: Path) -> AdminKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"cannot read admin key {path}: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from e
    if isinstance(key, ed25519.Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise ConfigError(f"{path}: admin keys must be Ed25519 or EC P-256")


def admin_token(
    key: AdminKey,
    *,
    audience: str,
    subject: str = "admin",
    lifetime: int = ADMIN_TOKEN_SECONDS,
) -> str:
    """A signed admin (or operator) JWT for one request to ``audience``: the tenant's KBS
    base URL (``https://broker`` or ``https://broker/tenants/<tenant>``), or
    :func:`operator_audience` of the broker's URL."""
    now = int(time.time())
    alg = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    claims: JsonObject = {
        "sub": check_subject(subject),
        "aud": normalize(audience),
        "iat": now,
        "exp": now + lifetime,
        "jti": secrets.token_hex(16),
    }
    return sign_compact({"alg": alg, "typ": "JWT"}, claims, key)


def operator_audience(broker_url: str) -> str:
    """The ``aud`` of operator tokens for the broker at ``broker_url``."""
    return normalize(broker_url) + OPERATOR_PATH


class _SignedClient:
    """HTTP calls under one base URL and API (``API``), each with a fresh single-use JWT for
    ``subject`` (default ``SUBJECT``). ``audience`` (default: ``url``) is the base URL the
    broker knows itself by, when ``url`` reaches it by another name (a port-forward, a
    proxy)."""

    API: ClassVar[str]
    SUBJECT: ClassVar[str]

    def __init__(
        self,
        url: str,
        key: AdminKey,
        *,
        subject: str | None = None,
        audience: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base = url.rstrip("/")
        self._key = key
        self._subject = check_subject(self.SUBJECT if subject is None else subject)
        self._audience = self._token_audience(audience or url)
        verify = tls_verify(ca_file)  # a bad CA file: one precise error, before any request
        self._http = httpx.Client(timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def token(self, lifetime: int = ADMIN_TOKEN_SECONDS) -> str:
        return admin_token(
            self._key, audience=self._audience, subject=self._subject, lifetime=lifetime
        )

    def _call(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        extra = kwargs.pop("headers", None)
        if isinstance(extra, dict):
            headers.update(extra)
        try:
            response = self._http.request(
                method,
                f"{self.base}/{self.API}/{path}",
                headers=headers,
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.HTTPError as e:
            raise UpstreamError(f"cannot reach the broker at {self.base}: {e}") from e
        raise_for_error(response)
        return response

    def _json(self, response: httpx.Response) -> Json:
        try:
            return response.json()
        except ValueError as e:
            raise MalformedMessage("the broker answered with invalid JSON") from e

    def _get(self, path: str) -> Json:
        return self._json(self._call("GET", path))

    @staticmethod
    def _token_audience(broker_url: str) -> str:
        return normalize(broker_url)


def _array(body: Json, what: str) -> list[Json]:
    if not isinstance(body, list):
        raise MalformedMessage(f"{what}: expected a JSON array")
    return body


def _object(body: Json, what: str) -> JsonObject:
    if not isinstance(body, dict):
        raise MalformedMessage(f"{what}: expected a JSON object")
    return body


def _strings(body: Json, what: str) -> list[str]:
    return [str(item) for item in _array(body, what)]


def _objects(body: Json, what: str) -> list[JsonObject]:
    return [_object(item, f"an entry of {what}") for item in _array(body, what)]


class AdminClient(_SignedClient):
    """A tenant's admin API at ``url``, its KBS base URL."""

    API = "kbs/v0"
    SUBJECT = "admin"

    # identities (tenants other than default)
    def list_identities(self) -> list[JsonObject]:
        return _objects(self._get("identities"), "identities")

    def add_identity(self, subject: str, role: str, public_key_pem: str) -> None:
        body: JsonObject = {"subject": subject, "role": role, "public_key": public_key_pem}
        self._call("POST", "identities", json=body)

    def remove_identity(self, subject: str) -> None:
        self._call("DELETE", f"identities/{check_subject(subject)}")

    # resources
    def put_resource(self, path: ResourcePath, data: bytes) -> None:
        self._call(
            "POST",
            f"resource/{path}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def delete_resource(self, path: ResourcePath) -> None:
        self._call("DELETE", f"resource/{path}")

    def resource_info(self, path: ResourcePath) -> JsonObject:
        return _object(self._get(f"resource-info/{path}"), "resource-info")

    def list_resources(self) -> list[str]:
        return _strings(self._get("resource"), "resource list")

    # policies
    def set_policy(self, kind: PolicyKind, text: str, *, policy_id: str = "default_cpu") -> None:
        body: JsonObject = {"policy": b64url_encode(text.encode())}
        if kind == "attestation":
            body.update(policy_id=policy_id, type="rego")
        self._call("POST", f"{kind}-policy", json=body)

    def list_policies(self, kind: PolicyKind) -> list[str]:
        return _strings(self._get(f"{kind}-policy"), "policy list")

    def policy_versions(self, kind: PolicyKind, policy_id: str) -> list[JsonObject]:
        return _objects(self._get(f"{kind}-policy/{policy_id}/versions"), "policy versions")

    def activate_policy(self, kind: PolicyKind, policy_id: str, version: int) -> None:
        self._call("POST", f"{kind}-policy/{policy_id}/activate", json={"version": version})

    def get_policy(self, kind: PolicyKind, policy_id: str, version: int | None = None) -> str:
        query = f"?version={version}" if version is not None else ""
        body = self._get(f"{kind}-policy/{policy_id}{query}")
        if not isinstance(body, dict) or not isinstance(body.get("policy"), str):
            raise MalformedMessage("policy: expected {'policy_id', 'policy'}")
        return b64url_decode(body["policy"]).decode("utf-8")

    # audit
    def get_denial(self, correlation_id: str) -> JsonObject:
        return _object(self._get(f"denials/{correlation_id}"), "denial")

    def export_audit(self, since: int = 0) -> bytes:
        return self._call("GET", f"audit?since={since}").content

    def audit_public_key(self) -> bytes:
        return self._call("GET", "audit/public-key").content

    # reference values
    def register_reference_values(
        self, values: Mapping[str, Json], *, expiration: datetime | None = None
    ) -> None:
        """Register ``id -> value`` pairs as one upstream ``sample`` RVPS message."""
        self.register_message(sample_message(values, expiration=expiration))

    def register_message(self, message: Json) -> None:
        self._call("POST", "reference-value", json=message)

    def get_reference_value(self, name: str) -> JsonObject:
        return _object(self._get(f"reference-value/{name}"), "reference value")

    def list_reference_values(self) -> list[str]:
        return _strings(self._get("reference-value"), "reference values")


class OperatorClient(_SignedClient):
    """The broker operator's API at ``url`` (the broker's base URL): tenants, never their
    contents."""

    API = "operator/v0"
    SUBJECT = "operator"

    @staticmethod
    def _token_audience(broker_url: str) -> str:
        return operator_audience(broker_url)

    def list_tenants(self) -> list[str]:
        return _strings(self._get("tenants"), "tenants")

    def get_tenant(self, tenant: str) -> JsonObject:
        return _object(self._get(f"tenants/{tenant}"), "tenant")

    def create_tenant(self, tenant: str, identities: list[Json]) -> JsonObject:
        body: JsonObject = {"id": tenant, "identities": identities}
        return _object(self._json(self._call("POST", "tenants", json=body)), "tenant")

    def set_status(self, tenant: str, action: Literal["suspend", "resume"]) -> JsonObject:
        return _object(self._json(self._call("POST", f"tenants/{tenant}/{action}")), "tenant")
