"""The broker's HTTP app (Starlette). Handlers stay thin: parse, call a service, render.

Paths are parsed from the raw (still percent-encoded) request path and each segment must
match the resource segment rule, so ``%2e%2e``, ``%2f`` and friends never reach a handler.
Every error leaves through :func:`_error_response`, which renders upstream's
``ErrorInformation``; an unexpected exception is logged here and answered with a generic 500.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate

import anyio
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custodes._internal.b64 import b64url_decode, b64url_encode
from custodes.errors import (
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
from custodes.kbs.broker import RESOURCE_POLICY_ID, Broker
from custodes.kbs.openapi import openapi_document
from custodes.policy.engine import RegoEngine
from custodes.protocol.binding import (
    DEFAULT_HASH_ALGORITHM,
    HashAlgorithm,
    runtime_data_digest,
    runtime_data_object,
)
from custodes.protocol.jwe import encrypt
from custodes.protocol.messages import (
    Attestation,
    AttestationResult,
    Challenge,
    Request,
    parse_json_body,
)
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeePublicKey
from custodes.types.json import Json, JsonObject
from custodes.types.secret import Secret
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

SESSION_COOKIE = "kbs-session-id"
API_PREFIX = "/kbs/v0/"
SESSION_SWEEP_SECONDS = 60
TEE_PUBKEY_PATH = (
    "submods",
    "cpu0",
    "ear.veraison.annotated-evidence",
    "runtime_data_claims",
    "tee-pubkey",
)

Handler = Callable[[HttpRequest, Broker, list[str]], Awaitable[Response]]


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


def _set_session_cookie(response: Response, session_id: str, expires_at: float, tls: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        expires=formatdate(expires_at, usegmt=True),
        path="/kbs/v0",
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


# --- the RCAR handshake -------------------------------------------------------------------


async def auth(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    req = Request.from_json(await _read_json(request, broker))
    if req.tee not in broker.enabled_tees:
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
    session = broker.sessions.create(req.tee.value, algorithm.value)
    response = _json(Challenge(nonce=session.nonce, extra_params=extra).to_json())
    _set_session_cookie(
        response, session.id, session.expires_at, broker.config.server.tls_cert is not None
    )
    return response


async def attest(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    session = broker.sessions.get(request.cookies.get(SESSION_COOKIE))
    body = await _read_json(request, broker, broker.config.limits.max_evidence_bytes)
    claimed = broker.sessions.claim_challenge(session)
    tee = Tee(session.tee)
    try:
        att = Attestation.from_json(
            body, allow_rsa1_5=broker.config.attestation.unsafe_allow_rsa1_5
        )
        if not hmac.compare_digest(att.runtime_data.nonce.encode(), session.nonce.encode()):
            raise SessionError("runtime-data nonce does not match this session's challenge")
        algorithm = HashAlgorithm(session.hash_algorithm)
        jwk = att.runtime_data.tee_pubkey.jwk
        additional = att.tee_evidence.additional_evidence
        digest = runtime_data_digest(att.runtime_data.nonce, jwk, additional, algorithm)
        started = time.perf_counter()
        outcome = await anyio.to_thread.run_sync(
            lambda: broker.attestation.evaluate(
                tee=tee,
                evidence=att.tee_evidence.primary_evidence,
                report_data=digest,
                runtime_data_claims=runtime_data_object(att.runtime_data.nonce, jwk, additional),
                init_data_toml=att.init_data.body if att.init_data else None,
                additional_evidence=additional,
            )
        )
        broker.metrics.attestation_seconds.observe(time.perf_counter() - started)
    except CustodesError:
        broker.metrics.attestations.labels(tee.value, "error").inc()
        raise
    broker.metrics.attestations.labels(tee.value, outcome.status.value).inc()
    if tee.insecure:
        logger.warning(
            "INSECURE: issued a token for %s evidence, which proves nothing "
            "(broker started with unsafe_allow_sample_tee)",
            tee,
        )
    done = broker.sessions.complete(claimed, outcome.token)
    response = _json(AttestationResult(token=outcome.token).to_json())
    _set_session_cookie(
        response, done.id, done.expires_at, broker.config.server.tls_cert is not None
    )
    return response


# --- resources ----------------------------------------------------------------------------


def _attested_token(request: HttpRequest, broker: Broker) -> str:
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        try:
            session = broker.sessions.get(session_id)
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


def _appraisal_summary(claims: JsonObject) -> str:
    submods = claims.get("submods")
    if not isinstance(submods, dict):
        return "no appraisal"
    parts = []
    for name, appraisal in sorted(submods.items()):
        status = appraisal.get("ear.status") if isinstance(appraisal, dict) else None
        part = f"{name} ear.status={status}"
        vector = (
            appraisal.get("ear.trustworthiness-vector") if isinstance(appraisal, dict) else None
        )
        if isinstance(vector, dict):
            bad = [
                f"{k}={v}" for k, v in sorted(vector.items()) if isinstance(v, int) and abs(v) > 31
            ]
            if bad:
                part += " (" + ", ".join(bad) + ")"
        parts.append(part)
    return "; ".join(parts)


async def get_resource(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    path = _resource_path(rest)
    token = _attested_token(request, broker)
    claims = broker.ear_verifier.verify(token)
    policy = broker.resource_policies.get(RESOURCE_POLICY_ID)
    if policy is None:
        raise PolicyError("no resource policy is set")
    decision = RegoEngine.evaluate(
        policy,
        "data.policy.allow",
        input=claims,
        data={"plugin": "resource", "resource-path": rest, "query": dict(request.query_params)},
    )
    if decision is not True:
        broker.metrics.releases.labels("denied").inc()
        # The guest holds its own token, so telling it its appraisal reveals nothing new.
        raise PolicyDenied(
            f"access to {path} denied by the resource policy; your token's appraisal: "
            f"{_appraisal_summary(claims)}"
        )
    try:
        secret = broker.resources.get(path)
    except NotFound:
        broker.metrics.releases.labels("missing").inc()
        raise
    jwk = _dig(claims, TEE_PUBKEY_PATH)
    key = TeePublicKey.from_jwk(jwk, allow_rsa1_5=broker.config.attestation.unsafe_allow_rsa1_5)
    jwe = encrypt(secret.reveal(), key)
    broker.metrics.releases.labels("released").inc()
    logger.info("released %s", path)
    return _json(jwe)


async def put_resource(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    path = _resource_path(rest)
    who = broker.admin.authenticate(request.headers.get("authorization"))
    data = await _read_body(request, broker.config.limits.max_resource_bytes)
    broker.resources.put(path, Secret(data))
    logger.info("admin %s stored resource %s (%d bytes)", who.subject, path, len(data))
    return Response(status_code=200)


async def delete_resource(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    path = _resource_path(rest)
    who = broker.admin.authenticate(request.headers.get("authorization"))
    broker.resources.delete(path)
    logger.info("admin %s deleted resource %s", who.subject, path)
    return Response(status_code=200)


async def list_resources(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    broker.admin.authenticate(request.headers.get("authorization"))
    return _json(broker.resources.list())


async def resource_info(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    path = _resource_path(rest)
    broker.admin.authenticate(request.headers.get("authorization"))
    info = broker.resources.info(path)
    return _json({"path": info.path, "size": info.size, "updated": int(info.updated)})


# --- policies -----------------------------------------------------------------------------


async def set_attestation_policy(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    who = broker.admin.authenticate(request.headers.get("authorization"))
    policy_id, text = _decode_policy(await _read_json(request, broker), with_id=True)
    broker.attestation_policies.set(policy_id, text)
    logger.info("admin %s set attestation policy %s", who.subject, policy_id)
    return Response(status_code=200)


async def set_resource_policy(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    who = broker.admin.authenticate(request.headers.get("authorization"))
    _, text = _decode_policy(await _read_json(request, broker), with_id=False)
    broker.resource_policies.set(RESOURCE_POLICY_ID, text)
    logger.info("admin %s set the resource policy", who.subject)
    return Response(status_code=200)


def _policy_getter(attr: str) -> Handler:
    async def handler(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
        broker.admin.authenticate(request.headers.get("authorization"))
        store = getattr(broker, attr)
        if not rest:
            return _json(store.list())
        if len(rest) != 1:
            raise kerr.EndpointNotFound("expected /<policy id>")
        text = store.get(rest[0])
        if text is None:
            raise NotFound(f"policy {rest[0]} does not exist")
        return _json({"policy_id": rest[0], "policy": b64url_encode(text.encode())})

    return handler


# --- reference values ---------------------------------------------------------------------


async def register_reference_value(
    request: HttpRequest, broker: Broker, rest: list[str]
) -> Response:
    who = broker.admin.authenticate(request.headers.get("authorization"))
    names = broker.rvps.register(await _read_json(request, broker))
    logger.info("admin %s registered reference values %s", who.subject, ", ".join(names))
    return Response(status_code=200)


async def get_reference_value(request: HttpRequest, broker: Broker, rest: list[str]) -> Response:
    broker.admin.authenticate(request.headers.get("authorization"))
    if not rest:
        return _json(broker.rvps.list())
    value = broker.rvps.get("/".join(rest))
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
    ("POST", "attestation-policy"): (set_attestation_policy, frozenset({0})),
    ("GET", "attestation-policy"): (_policy_getter("attestation_policies"), frozenset({0, 1})),
    ("POST", "resource-policy"): (set_resource_policy, frozenset({0})),
    ("GET", "resource-policy"): (_policy_getter("resource_policies"), frozenset({0, 1})),
    ("POST", "reference-value"): (register_reference_value, frozenset({0})),
    ("GET", "reference-value"): (get_reference_value, None),
}


def _endpoint_label(method: str, first: str) -> str:
    return f"{method} {first}" if (method, first) in _ROUTES else "other"


def _split_raw_path(raw: bytes) -> list[str]:
    """Segments after /kbs/v0/, validated as ASCII; '%' is refused by the segment rule later."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise InvalidResourcePath("request path is not ASCII") from e
    return text[len(API_PREFIX) :].split("/")


def _error_response(broker: Broker, exc: BaseException, label: str) -> Response:
    mapped = kerr.classify(exc)
    if mapped is kerr.INTERNAL:
        logger.exception("internal error on %s", label, exc_info=exc)
        detail = "internal error; see the broker's log"
    elif mapped.status >= 500:
        logger.error("error on %s: %s", label, exc)
        detail = str(exc)
    else:
        detail = str(exc)
    broker.metrics.requests.labels(label, str(mapped.status)).inc()
    return JSONResponse(kerr.error_body(mapped.variant, detail), status_code=mapped.status)


def create_app(broker: Broker) -> Starlette:
    async def api(request: HttpRequest) -> Response:
        method = request.method
        raw_path: bytes = request.scope.get("raw_path") or request.url.path.encode()
        label = "other"
        try:
            segments = _split_raw_path(raw_path.split(b"?", 1)[0])
            first, rest = segments[0], segments[1:]
            label = _endpoint_label(method, first)
            if first == "openapi.json" and not rest:
                if method != "GET":
                    raise kerr.MethodNotAllowed("openapi.json: only GET")
                return _json(openapi_document())
            route = _ROUTES.get((method, first))
            if route is None:
                if any(m for (m, f) in _ROUTES if f == first):
                    raise kerr.MethodNotAllowed(f"{method} is not allowed on /kbs/v0/{first}")
                raise kerr.EndpointNotFound(f"no endpoint /kbs/v0/{first}")
            handler, arity = route
            if first == "reference-value" and rest == [""]:
                rest = []
            if arity is not None and len(rest) not in arity:
                if first in ("resource", "resource-info") and len(rest) != 3:
                    raise InvalidResourcePath(
                        "resource paths have exactly three segments: <repo>/<type>/<tag>"
                    )
                raise kerr.EndpointNotFound(f"no endpoint {request.url.path}")
            response = await handler(request, broker, rest)
        except Exception as exc:  # every error is rendered as ErrorInformation
            return _error_response(broker, exc, label)
        broker.metrics.requests.labels(label, str(response.status_code)).inc()
        return response

    async def list_route(request: HttpRequest) -> Response:
        try:
            return await list_resources(request, broker, [])
        except Exception as exc:
            return _error_response(broker, exc, "GET resource")

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
                    broker.sessions.purge_expired()
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
            Route("/kbs/v0/resource", list_route, methods=["GET"]),
            Route("/kbs/v0/{rest:path}", api, methods=methods),
        ],
    )
    app.state.broker = broker
    return app
