"""The broker's HTTP app (Starlette). Handlers stay thin: parse, call a service, render.

Paths are parsed from the raw (still percent-encoded) request path and each segment must
match the resource segment rule, so ``%2e%2e``, ``%2f`` and friends never reach a handler.
Every error leaves through :func:`_error_response`, which renders upstream's
``ErrorInformation``; an unexpected exception is logged here and answered with a generic 500.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate

import anyio
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custodes._internal.admin_claims import check_subject
from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.attestation import tpm_enrol
from custodes.errors import (
    AdminAuthError,
    ConfigError,
    CustodesError,
    InvalidResourcePath,
    MalformedMessage,
    NotFound,
    PolicyDenied,
    PolicyError,
    SessionError,
    TokenError,
    UnsupportedTee,
)
from custodes.kbs import errors as kerr
from custodes.kbs.admin_auth import AdminForbidden, AdminIdentity, Role
from custodes.kbs.broker import RESOURCE_POLICY_ID, Broker, TenantServices
from custodes.kbs.handshake import read_request
from custodes.kbs.openapi import openapi_document
from custodes.kbs.policy_activation import activate_policy
from custodes.kbs.policy_selector import select_policy
from custodes.kbs.tenants import (
    DEFAULT_TENANT,
    TENANT_CLAIM,
    Identity,
    TenantStatus,
    check_tenant_id,
    namespace,
)
from custodes.policy.engine import RegoEngine
from custodes.policy.explain import explain
from custodes.protocol.appraisal import appraisal_summary
from custodes.protocol.binding import (
    DEFAULT_HASH_ALGORITHM,
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
    runtime_data_object,
)
from custodes.protocol.jwe import encrypt
from custodes.protocol.messages import (
    Attestation,
    AttestationResult,
    Challenge,
    parse_json_body,
)
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeePublicKey
from custodes.types.json import Json, JsonObject
from custodes.types.secret import Secret
from custodes.types.tee import Tee
from custodes.ui.routes import ui_routes

logger = logging.getLogger(__name__)

SESSION_COOKIE = "kbs-session-id"
BROKER_STREAM = "_broker"
SESSION_SWEEP_SECONDS = 60
TEE_PUBKEY_PATH = (
    "submods",
    "cpu0",
    "ear.veraison.annotated-evidence",
    "runtime_data_claims",
    "tee-pubkey",
)

Handler = Callable[[HttpRequest, "Ctx", list[str]], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Ctx:
    """One request's broker and tenant."""

    broker: Broker
    t: TenantServices


def _admin(ctx: Ctx, request: HttpRequest, *, write: bool) -> AdminIdentity:
    """The caller's admin identity; writes need the admin role, reads admit auditors too."""
    who = ctx.t.admin.authenticate(request.headers.get("authorization"))
    if write and who.role is not Role.ADMIN:
        raise AdminForbidden(
            f"{who.role} {who.subject!r} may not change tenant {ctx.t.tenant} (read-only role)"
        )
    if who.role not in (Role.ADMIN, Role.AUDITOR):
        raise AdminAuthError("not a tenant identity")
    return who


# --- helpers ------------------------------------------------------------------------------


async def _read_body(request: HttpRequest, limit: int) -> bytes:
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


async def _read_json(request: HttpRequest, broker: Broker, limit: int | None = None) -> Json:
    body = await _read_body(request, limit or broker.config.limits.max_body_bytes)
    return parse_json_body(body, max_depth=broker.config.limits.max_json_depth)


def _resource_path(segments: list[str]) -> ResourcePath:
    return ResourcePath.from_segments(segments)


def _bearer(request: HttpRequest) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization header is not 'Bearer <token>'")
    return token.strip()


def _set_session_cookie(
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


def _json(obj: Json, status: int = 200) -> Response:
    return Response(
        json.dumps(obj, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def _dig(obj: Json, path: tuple[str, ...]) -> Json:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


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


MAX_AUDITED_EVIDENCE = 24 * 1024


def _replayable(claims: JsonObject) -> JsonObject:
    """The appraised (public) claims, so `custodes policy test` can replay this attestation
    against a candidate policy; left out when too large for an audit entry (e.g. long TDX
    event logs)."""
    annotated = {
        name: a.get("ear.veraison.annotated-evidence")
        for name, a in claims.get("submods", {}).items()
        if isinstance(a, dict)
    }
    if len(json.dumps(annotated)) > MAX_AUDITED_EVIDENCE:
        return {"annotated_evidence_omitted": "over the audit entry size budget"}
    return {"annotated_evidence": annotated}


def _audit(ctx: Ctx, kind: str, actor: str | None, event: JsonObject) -> None:
    if ctx.broker.audit is not None:
        ctx.broker.audit.append(ctx.t.tenant, kind, actor, event)


def _broker_audit(broker: Broker, actor: str, event: JsonObject) -> None:
    if broker.audit is not None:
        broker.audit.append(BROKER_STREAM, "tenant", actor, event)


# --- the RCAR handshake -------------------------------------------------------------------


async def auth(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    req = read_request(await _read_json(request, ctx.broker), ctx.broker.metrics)
    if req.tee not in ctx.broker.enabled_tees:
        if req.tee.insecure:
            raise UnsupportedTee(
                f"TEE {req.tee} is refused: the sample TEE proves nothing and is accepted only "
                "by a broker started with --unsafe-allow-sample-tee"
            )
        raise UnsupportedTee(f"TEE {req.tee} is not supported by this broker")
    offered = req.supported_hash_algorithms()
    algorithm = DEFAULT_HASH_ALGORITHM
    extra: Json = ""
    if offered and DEFAULT_HASH_ALGORITHM not in offered:
        # The client cannot do the default; pick the strongest it offers and say so.
        algorithm = max(offered, key=lambda a: a.digest_size)
        extra = {"selected-hash-algorithm": algorithm.value}
    chosen = select_policy(req.policy_selector(), ctx.broker.config.attestation.policy_ids())
    session = ctx.t.sessions.create(
        req.tee.value,
        algorithm.value,
        policy_id=chosen.policy_id,
        policy_selector=chosen.selector,
        protocol_version=req.version,
    )
    response = _json(Challenge(nonce=session.nonce, extra_params=extra).to_json())
    _set_session_cookie(
        response,
        session.id,
        session.expires_at,
        ctx.broker.config.server.tls_cert is not None,
        ctx.t.tenant,
    )
    return response


async def attest(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    session = ctx.t.sessions.get(request.cookies.get(SESSION_COOKIE))
    body = await _read_json(request, ctx.broker, ctx.broker.config.limits.max_evidence_bytes)
    claimed = ctx.t.sessions.claim_challenge(session)
    tee = Tee(session.tee)
    try:
        att = Attestation.from_json(
            body, allow_rsa1_5=ctx.broker.config.attestation.unsafe_allow_rsa1_5
        )
        if not hmac.compare_digest(att.runtime_data.nonce.encode(), session.nonce.encode()):
            raise SessionError("runtime-data nonce does not match this session's challenge")
        algorithm = HashAlgorithm(session.hash_algorithm)
        jwk = att.runtime_data.tee_pubkey.jwk
        additional = att.tee_evidence.additional_evidence
        digest = runtime_data_digest(att.runtime_data.nonce, jwk, additional, algorithm)
        started = time.perf_counter()
        outcome = await anyio.to_thread.run_sync(
            lambda: ctx.t.attestation.evaluate(
                tee=tee,
                evidence=att.tee_evidence.primary_evidence,
                report_data=digest,
                runtime_data_claims=runtime_data_object(att.runtime_data.nonce, jwk, additional),
                init_data_toml=att.init_data.body if att.init_data else None,
                additional_evidence=additional,
                device_report_data=(
                    device_runtime_data_digest(att.runtime_data.nonce, jwk, algorithm)
                    if additional
                    else None
                ),
                policy_id=session.policy_id,
            )
        )
        ctx.broker.metrics.attestation_seconds.observe(time.perf_counter() - started)
    except CustodesError as exc:
        ctx.broker.metrics.attestations.labels(tee.value, "error").inc()
        _audit(
            ctx,
            "attestation",
            None,
            {
                "tee": tee.value,
                "status": "error",
                "error": kerr.classify(exc).variant,
                "reason": str(exc),
                "policy_id": f"{session.policy_id}_cpu",
                "policy_selector": session.policy_selector,
                "protocol_version": session.protocol_version,
            },
        )
        raise
    ctx.broker.metrics.attestations.labels(tee.value, outcome.status.value).inc()
    token_id = outcome.claims.get("jti")
    _audit(
        ctx,
        "attestation",
        None,
        {
            "tee": tee.value,
            "evidence_sha256": hashlib.sha256(
                json.dumps(att.tee_evidence.primary_evidence, sort_keys=True).encode()
            ).hexdigest(),
            "status": outcome.status.value,
            "trust_vectors": {
                name: a.get("ear.trustworthiness-vector")
                for name, a in outcome.claims.get("submods", {}).items()
            },
            "token_id": token_id,
            "correlation_id": token_id,
            "policy_id": f"{session.policy_id}_cpu",
            "policy_selector": session.policy_selector,
            "protocol_version": session.protocol_version,
            "policy_version": outcome.policy_version,
            "explanation": outcome.explanation,
            **_replayable(outcome.claims),
        },
    )
    if tee.insecure:
        logger.warning(
            "INSECURE: issued a token for %s evidence, which proves nothing "
            "(broker started with unsafe_allow_sample_tee)",
            tee,
        )
    done = ctx.t.sessions.complete(claimed, outcome.token)
    response = _json(AttestationResult(token=outcome.token).to_json())
    _set_session_cookie(
        response,
        done.id,
        done.expires_at,
        ctx.broker.config.server.tls_cert is not None,
        ctx.t.tenant,
    )
    return response


# --- resources ----------------------------------------------------------------------------


def _attested_token(request: HttpRequest, ctx: Ctx) -> str:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        try:
            session = ctx.t.sessions.get(session_id)
        except SessionError:
            session = None
        if session is not None and session.token is not None:
            return session.token
    token = _bearer(request)
    if token is None:
        raise kerr.TokenNotFound(
            "no attestation token: send the kbs-session-id cookie of an attested session "
            "or 'Authorization: Bearer <EAR token>'"
        )
    return token


async def get_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = _resource_path(rest)
    token = _attested_token(request, ctx)
    claims = ctx.broker.ear_verifier.verify(token)
    if claims.get(TENANT_CLAIM, DEFAULT_TENANT) != ctx.t.tenant:
        raise TokenError("the token was issued for another tenant")
    policy_version, policy = ctx.t.resource_policies.active(RESOURCE_POLICY_ID)
    if policy is None:
        raise PolicyError("no resource policy is set")
    policy_data: JsonObject = {
        "plugin": "resource",
        "resource-path": rest,
        "query": dict(request.query_params),
    }
    decision = RegoEngine.evaluate(policy, "data.policy.allow", input=claims, data=policy_data)
    if decision is not True:
        ctx.broker.metrics.releases.labels("denied").inc()
        correlation_id = uuid.uuid4().hex
        failed = explain(policy, ["allow"], input=claims, data=policy_data)
        _audit(
            ctx,
            "denial",
            None,
            {
                "resource": str(path),
                "token_id": claims.get("jti"),
                "policy_id": RESOURCE_POLICY_ID,
                "policy_version": policy_version,
                "correlation_id": correlation_id,
                "appraisal": appraisal_summary(claims),
                "failed": [f.to_json() for f in failed],
            },
        )
        # The reason goes to the tenant's admins (by correlation id), never to the guest.
        raise PolicyDenied(
            f"access to {path} denied by policy (correlation id {correlation_id}; "
            "the workload admin can look up why)"
        )
    try:
        secret = ctx.t.resources.get(path)
    except NotFound:
        ctx.broker.metrics.releases.labels("missing").inc()
        raise
    jwk = _dig(claims, TEE_PUBKEY_PATH)
    key = TeePublicKey.from_jwk(jwk, allow_rsa1_5=ctx.broker.config.attestation.unsafe_allow_rsa1_5)
    jwe = encrypt(secret.reveal(), key)
    ctx.broker.metrics.releases.labels("released").inc()
    _audit(
        ctx,
        "release",
        None,
        {
            "resource": str(path),
            "token_id": claims.get("jti"),
            "policy_id": RESOURCE_POLICY_ID,
            "policy_version": policy_version,
        },
    )
    logger.info("released %s", path)
    return _json(jwe)


async def put_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = _resource_path(rest)
    who = _admin(ctx, request, write=True)
    data = await _read_body(request, ctx.broker.config.limits.max_resource_bytes)
    ctx.t.resources.put(path, Secret(data))
    _audit(
        ctx,
        "admin",
        who.subject,
        {"action": "resource.put", "resource": str(path), "size": len(data)},
    )
    logger.info("admin %s stored resource %s (%d bytes)", who.subject, path, len(data))
    return Response(status_code=200)


async def delete_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = _resource_path(rest)
    who = _admin(ctx, request, write=True)
    ctx.t.resources.delete(path)
    _audit(ctx, "admin", who.subject, {"action": "resource.delete", "resource": str(path)})
    logger.info("admin %s deleted resource %s", who.subject, path)
    return Response(status_code=200)


async def list_resources(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    _admin(ctx, request, write=False)
    return _json(ctx.t.resources.list())


async def resource_info(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    path = _resource_path(rest)
    _admin(ctx, request, write=False)
    info = ctx.t.resources.info(path)
    return _json({"path": info.path, "size": info.size, "updated": int(info.updated)})


# --- policies -----------------------------------------------------------------------------


async def _activate_policy(
    request: HttpRequest, ctx: Ctx, rest: list[str], *, endpoint: str, attr: str
) -> Response:
    """``POST /<endpoint>/<id>/activate``: the sub-path of a policy setter's endpoint."""
    if len(rest) != 2:
        raise kerr.EndpointNotFound(f"expected /{endpoint}/<id>/activate")
    return await _policy_activator(attr)(request, ctx, rest)


async def set_attestation_policy(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    if rest:
        return await _activate_policy(
            request, ctx, rest, endpoint="attestation-policy", attr="attestation_policies"
        )
    who = _admin(ctx, request, write=True)
    policy_id, text = _decode_policy(await _read_json(request, ctx.broker), with_id=True)
    version = ctx.t.attestation_policies.set(policy_id, text)
    _audit(
        ctx,
        "admin",
        who.subject,
        {
            "action": "attestation-policy.set",
            "policy_id": policy_id,
            "version": version,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
    )
    logger.info("admin %s set attestation policy %s", who.subject, policy_id)
    return Response(status_code=200)


async def set_resource_policy(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    if rest:
        return await _activate_policy(
            request, ctx, rest, endpoint="resource-policy", attr="resource_policies"
        )
    who = _admin(ctx, request, write=True)
    _, text = _decode_policy(await _read_json(request, ctx.broker), with_id=False)
    version = ctx.t.resource_policies.set(RESOURCE_POLICY_ID, text)
    _audit(
        ctx,
        "admin",
        who.subject,
        {
            "action": "resource-policy.set",
            "policy_id": RESOURCE_POLICY_ID,
            "version": version,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
    )
    logger.info("admin %s set the resource policy", who.subject)
    return Response(status_code=200)


def _policy_getter(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        _admin(ctx, request, write=False)
        store = getattr(ctx.t, attr)
        if not rest:
            return _json(store.list())
        if len(rest) == 2 and rest[1] == "versions":
            versions = store.versions(rest[0])
            if not versions:
                raise NotFound(f"policy {rest[0]} does not exist")
            return _json([{"version": v, "active": a} for v, a in versions])
        if len(rest) != 1:
            raise kerr.EndpointNotFound("expected /<policy id> or /<policy id>/versions")
        version = request.query_params.get("version")
        if version is not None:
            if not version.isdigit():
                raise MalformedMessage("version must be a positive integer")
            text = store.get_version(rest[0], int(version))
        else:
            text = store.get(rest[0])
        if text is None:
            raise NotFound(f"policy {rest[0]} (version {version or 'active'}) does not exist")
        return _json(
            {
                "policy_id": rest[0],
                "policy": b64url_encode(text.encode()),
                "version": int(version) if version else store.active_version(rest[0]),
            }
        )

    return handler


def _policy_activator(attr: str) -> Handler:
    async def handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
        who = _admin(ctx, request, write=True)
        if rest[1] != "activate":
            raise kerr.EndpointNotFound("expected /<policy id>/activate")
        body = await _read_json(request, ctx.broker)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise MalformedMessage("body is {'version': N} with N a version number")
        activate_policy(ctx.broker.audit, ctx.t, who.subject, attr, rest[0], version)
        return Response(status_code=200)

    return handler


# --- reference values ---------------------------------------------------------------------


async def register_reference_value(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = _admin(ctx, request, write=True)
    names = ctx.t.rvps.register(await _read_json(request, ctx.broker))
    _audit(ctx, "admin", who.subject, {"action": "reference-value.register", "ids": names})
    logger.info("admin %s registered reference values %s", who.subject, ", ".join(names))
    return Response(status_code=200)


async def get_reference_value(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    _admin(ctx, request, write=False)
    if not rest:
        return _json(ctx.t.rvps.list())
    value = ctx.t.rvps.get("/".join(rest))
    return _json(value.to_stored_json())


# --- dispatch -----------------------------------------------------------------------------

# (method, first segment) -> (handler, allowed segment counts after the first, or None for any)
_ROUTES: dict[tuple[str, str], tuple[Handler, frozenset[int] | None]] = {
    ("POST", "auth"): (auth, frozenset({0})),
    ("POST", "attest"): (attest, frozenset({0})),
    ("GET", "resource"): (get_resource, frozenset({3})),
    ("POST", "resource"): (put_resource, frozenset({3})),
    ("DELETE", "resource"): (delete_resource, frozenset({3})),
    ("GET", "resource-info"): (resource_info, frozenset({3})),
    ("POST", "attestation-policy"): (set_attestation_policy, None),
    ("GET", "attestation-policy"): (
        _policy_getter("attestation_policies"),
        frozenset({0, 1, 2}),
    ),
    ("POST", "resource-policy"): (set_resource_policy, None),
    ("GET", "resource-policy"): (_policy_getter("resource_policies"), frozenset({0, 1, 2})),
    ("POST", "reference-value"): (register_reference_value, frozenset({0})),
    ("GET", "reference-value"): (get_reference_value, None),
}


def _endpoint_label(method: str, first: str) -> str:
    return f"{method} {first}" if (method, first) in _ROUTES else "other"


def _split_raw_path(raw: bytes) -> list[str]:
    """The path's segments, validated as ASCII; '%' is refused by the segment rule later."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise InvalidResourcePath("request path is not ASCII") from e
    return text.lstrip("/").split("/")


def _error_response(broker: Broker, exc: BaseException, label: str) -> Response:
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
    headers = {"Retry-After": "1"} if mapped.status == 503 else None
    return JSONResponse(
        kerr.error_body(mapped.variant, detail), status_code=mapped.status, headers=headers
    )


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


def create_app(broker: Broker) -> Starlette:
    async def api(request: HttpRequest) -> Response:
        method = request.method
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        label = "other"
        try:
            tenant, segments = _dispatch_target(raw_path)
            first, rest = segments[0], segments[1:]
            label = _endpoint_label(method, first)
            if first == "openapi.json" and not rest:
                if method != "GET":
                    raise kerr.MethodNotAllowed("openapi.json: only GET")
                return _json(openapi_document())
            route = _ROUTES.get((method, first))
            if first == "resource" and not rest and method == "GET":
                route = (list_resources, None)
            if route is None:
                if any(m for (m, f) in _ROUTES if f == first):
                    raise kerr.MethodNotAllowed(f"{method} is not allowed on /kbs/v0/{first}")
                raise kerr.EndpointNotFound(f"no endpoint /kbs/v0/{first}")
            handler, arity = route
            if first in ("reference-value", "identities") and rest == [""]:
                rest = []
            if arity is not None and len(rest) not in arity:
                if first in ("resource", "resource-info") and len(rest) != 3:
                    raise InvalidResourcePath(
                        "resource paths have exactly three segments: <repo>/<type>/<tag>"
                    )
                raise kerr.EndpointNotFound(f"no endpoint {request.url.path}")
            ctx = Ctx(broker, broker.tenant(tenant))
            response = await handler(request, ctx, rest)
        except Exception as exc:  # every error is rendered as ErrorInformation
            return _error_response(broker, exc, label)
        broker.metrics.requests.labels(label, str(response.status_code)).inc()
        return response

    async def operator_api(request: HttpRequest) -> Response:
        try:
            response = await operator(request, broker)
        except Exception as exc:  # every error is rendered as ErrorInformation
            return _error_response(broker, exc, "operator")
        broker.metrics.requests.labels("operator", str(response.status_code)).inc()
        return response

    async def healthz(request: HttpRequest) -> Response:
        try:
            broker.store.list("kbs_health", now=broker.clock.now())
        except CustodesError as exc:
            return _error_response(broker, exc, "healthz")
        return _json({"status": "ok"})

    async def metrics(request: HttpRequest) -> Response:
        return Response(broker.metrics.render(), media_type=broker.metrics.content_type)

    async def not_found(request: HttpRequest, exc: Exception) -> Response:
        return _error_response(
            broker, kerr.EndpointNotFound(f"no endpoint {request.url.path}"), "other"
        )

    async def not_allowed(request: HttpRequest, exc: Exception) -> Response:
        return _error_response(
            broker, kerr.MethodNotAllowed(f"{request.method} is not allowed here"), "other"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sweep() -> None:
            while True:
                await anyio.sleep(SESSION_SWEEP_SECONDS)
                try:
                    broker.store.purge_expired(broker.clock.now())
                except CustodesError as exc:
                    logger.warning("session sweep failed: %s", exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sweep)
            yield
            tg.cancel_scope.cancel()

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
    app = Starlette(
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed},
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/kbs/v0/{rest:path}", api, methods=methods),
            Route("/tenants/{tenant}/kbs/v0/{rest:path}", api, methods=methods),
            Route("/operator/v0/{rest:path}", operator_api, methods=methods),
            *ui_routes(broker),  # the dashboard (custodes/ui; docs/dashboard.md)
        ],
    )
    app.state.broker = broker
    return app


# --- the operator API ---------------------------------------------------------------------


async def operator(request: HttpRequest, broker: Broker) -> Response:
    """``/operator/v0/tenants[/<id>[/suspend|/resume]]``: tenants, never their contents."""
    who = broker.operator.authenticate(request.headers.get("authorization"))
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    segments = raw.split(b"?", 1)[0].decode("ascii", "replace").split("/")[3:]
    method = request.method
    if segments[:1] != ["tenants"]:
        raise kerr.EndpointNotFound("operator endpoints are /operator/v0/tenants/...")
    rest = [s for s in segments[1:] if s]
    registry = broker.registry
    if not rest:
        if method == "GET":
            return _json(registry.list())
        if method == "POST":
            body = await _read_json(request, broker)
            if not isinstance(body, dict) or set(body) - {"id", "identities"}:
                raise MalformedMessage("body is {'id': TENANT, 'identities': [...]}")
            identities = body.get("identities")
            if not isinstance(identities, list):
                raise MalformedMessage("'identities' must be a list")
            tenant = registry.create(
                str(body.get("id", "")), [Identity.from_json(i) for i in identities]
            )
            _broker_audit(broker, who.subject, {"action": "tenant.create", "tenant": tenant.id})
            logger.info("operator %s created tenant %s", who.subject, tenant.id)
            return _json(tenant.to_json(with_identities=False))
        raise kerr.MethodNotAllowed(f"{method} is not allowed on /operator/v0/tenants")
    tenant_id = check_tenant_id(rest[0])
    if len(rest) == 1 and method == "GET":
        return _json(registry.get(tenant_id).to_json(with_identities=False))
    if len(rest) == 2 and method == "POST" and rest[1] in ("suspend", "resume"):
        status = TenantStatus.SUSPENDED if rest[1] == "suspend" else TenantStatus.ACTIVE
        tenant = registry.set_status(tenant_id, status)
        _broker_audit(broker, who.subject, {"action": f"tenant.{rest[1]}", "tenant": tenant_id})
        logger.info("operator %s set tenant %s %s", who.subject, tenant_id, status.value)
        return _json(tenant.to_json(with_identities=False))
    raise kerr.EndpointNotFound("no such operator endpoint")


# --- audit and denials ---------------------------------------------------------------------


async def get_denial(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """Why a guest was refused, by the correlation id it was given (admin or auditor)."""
    _admin(ctx, request, write=False)
    log = ctx.broker.audit
    denial = log.get_by_correlation_id(ctx.t.tenant, rest[0]) if log is not None else None
    if log is None or denial is None or denial.kind != "denial":
        raise NotFound(f"no denial with correlation id {rest[0]}")
    token_id = denial.event.get("token_id")
    attestation = (
        log.get_by_correlation_id(ctx.t.tenant, token_id) if isinstance(token_id, str) else None
    )
    return _json(
        {
            "denial": denial.event,
            "time": denial.to_json()["time"],
            "attestation": attestation.event if attestation is not None else None,
        }
    )


async def get_audit(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """The tenant's audit stream as JSON Lines (``?since=SEQ``), or the verification key.

    An export appends a signed checkpoint (naming who exported) and ends with it."""
    who = _admin(ctx, request, write=False)
    log = ctx.broker.audit
    if log is None:
        raise NotFound("this broker keeps no audit log")
    if rest == ["public-key"]:
        pem = log.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Response(pem, media_type="application/x-pem-file")
    if rest:
        raise kerr.EndpointNotFound("expected /audit or /audit/public-key")
    since = request.query_params.get("since", "0")
    if not since.isascii() or not since.isdigit():
        raise MalformedMessage("since must be a sequence number")
    buffer = io.BytesIO()
    log.export(ctx.t.tenant, buffer, since_seq=int(since), actor=who.subject)
    return Response(buffer.getvalue(), media_type="application/jsonl")


_ROUTES[("GET", "denials")] = (get_denial, frozenset({1}))
_ROUTES[("GET", "audit")] = (get_audit, frozenset({0, 1}))


# --- tenant identities --------------------------------------------------------------------


async def list_identities(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    _admin(ctx, request, write=False)
    if ctx.t.tenant == DEFAULT_TENANT:
        raise kerr.EndpointNotFound("the default tenant's identities are in the broker config")
    tenant = ctx.broker.registry.get(ctx.t.tenant)
    return _json([{"subject": i.subject, "role": i.role.value} for i in tenant.identities])


async def add_identity(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = _admin(ctx, request, write=True)
    if ctx.t.tenant == DEFAULT_TENANT:
        raise kerr.EndpointNotFound("the default tenant's identities are in the broker config")
    identity = Identity.from_json(await _read_json(request, ctx.broker))
    ctx.broker.registry.add_identity(ctx.t.tenant, identity)
    _audit(
        ctx,
        "admin",
        who.subject,
        {"action": "identity.add", "subject": identity.subject, "role": identity.role.value},
    )
    logger.info("admin %s added %s %s", who.subject, identity.role.value, identity.subject)
    return Response(status_code=200)


async def remove_identity(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    who = _admin(ctx, request, write=True)
    if ctx.t.tenant == DEFAULT_TENANT:
        raise kerr.EndpointNotFound("the default tenant's identities are in the broker config")
    try:
        subject = check_subject(rest[0])
    except ConfigError as e:
        raise MalformedMessage(str(e)) from e
    ctx.broker.registry.remove_identity(ctx.t.tenant, subject)
    _audit(ctx, "admin", who.subject, {"action": "identity.remove", "subject": subject})
    logger.info("admin %s removed identity %s", who.subject, subject)
    return Response(status_code=200)


_ROUTES[("GET", "identities")] = (list_identities, frozenset({0}))
_ROUTES[("POST", "identities")] = (add_identity, frozenset({0}))
_ROUTES[("DELETE", "identities")] = (remove_identity, frozenset({1}))


# --- TPM AK enrolment by credential activation (custodes extension) ------------------------


def _tpm_enrolment(ctx: Ctx) -> tpm_enrol.TpmEnrolment:
    bundle = ctx.broker.config.attestation.tpm_ek_ca_bundle
    if bundle is None:
        raise kerr.EndpointNotFound(
            "TPM enrolment is not enabled on this broker (attestation.tpm_ek_ca_bundle)"
        )
    return tpm_enrol.TpmEnrolment(
        store=ctx.broker.store,
        clock=ctx.broker.clock,
        namespace=namespace(ctx.t.tenant, tpm_enrol.NS_TPM_ENROLMENT),
        rvps=ctx.t.rvps,
        anchors=lambda: tpm_enrol.ca_bundle(bundle),
        ttl_seconds=ctx.broker.config.limits.session_ttl_seconds,
    )


async def tpm_enrol_handler(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    """``tpm/enrol`` (a credential for the AK) and ``tpm/enrol/activate`` (the secret back)."""
    if rest not in (["enrol"], ["enrol", "activate"]):
        raise kerr.EndpointNotFound("TPM enrolment is /tpm/enrol and /tpm/enrol/activate")
    service = _tpm_enrolment(ctx)
    body = await _read_json(request, ctx.broker)
    event: JsonObject = {"tee": "tpm", "action": "tpm.enrol", "step": "/".join(rest)}
    try:
        if rest == ["enrol"]:
            enrol = tpm_enrol.EnrolRequest.from_json(body)
            challenge = await anyio.to_thread.run_sync(lambda: service.challenge(enrol))
            return _json(challenge.to_json())
        activate = tpm_enrol.ActivateRequest.from_json(body)
        enrolled = await anyio.to_thread.run_sync(lambda: service.activate(activate))
    except CustodesError as exc:
        reason = {"status": "refused", "error": kerr.classify(exc).variant, "reason": str(exc)}
        _audit(ctx, "attestation", None, {**event, **reason})
        raise
    _audit(ctx, "attestation", None, {**event, "status": "enrolled", **enrolled.audit_json()})
    logger.info("enrolled a TPM AK for tenant %s", ctx.t.tenant)
    return _json(enrolled.to_json())


_ROUTES[("POST", "tpm")] = (tpm_enrol_handler, frozenset({1, 2}))
