"""The guest's routes: the RCAR handshake (``/auth``, ``/attest``), the release of a resource
and TPM attestation-key enrolment. Each parses the request, calls a service, renders."""

from __future__ import annotations

import logging
from typing import Final

from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from custodes.attestation import tpm_enrol
from custodes.errors import CustodesError
from custodes.kbs import errors as kerr
from custodes.kbs.handshake import Handshake
from custodes.kbs.http import (
    GUEST,
    SESSION_COOKIE,
    ApiRoute,
    Ctx,
    audit,
    json_response,
    read_json,
    set_session_cookie,
)
from custodes.kbs.release import Release
from custodes.kbs.tenants import namespace
from custodes.protocol.messages import AttestationResult
from custodes.protocol.resource import ResourcePath
from custodes.types.json import JsonObject

logger = logging.getLogger(__name__)


def _tls(ctx: Ctx) -> bool:
    return ctx.broker.config.server.tls_cert is not None


async def auth(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    started = await Handshake(ctx.broker, ctx.t, ctx.lanes).start(
        await read_json(request, ctx.broker)
    )
    response = json_response(started.challenge.to_json())
    session = started.session
    set_session_cookie(response, session.id, session.expires_at, _tls(ctx), ctx.t.tenant)
    return response


async def attest(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    session_id = request.cookies.get(SESSION_COOKIE)
    body = await read_json(request, ctx.broker, ctx.broker.config.limits.max_evidence_bytes)
    attested = await Handshake(ctx.broker, ctx.t, ctx.lanes).attest(session_id, body)
    response = json_response(AttestationResult(token=attested.token).to_json())
    done = attested.session
    set_session_cookie(response, done.id, done.expires_at, _tls(ctx), ctx.t.tenant)
    return response


async def get_resource(request: HttpRequest, ctx: Ctx, rest: list[str]) -> Response:
    jwe = await Release(ctx.broker, ctx.t, ctx.lanes).release(
        ResourcePath.from_segments(rest),
        rest,
        dict(request.query_params),
        session_id=request.cookies.get(SESSION_COOKIE),
        authorization=request.headers.get("authorization"),
    )
    return json_response(jwe)


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
    service = _tpm_enrolment(ctx)
    body = await read_json(request, ctx.broker)
    event: JsonObject = {"tee": "tpm", "action": "tpm.enrol", "step": "/".join(rest)}
    try:
        if rest == ["enrol"]:
            enrol = tpm_enrol.EnrolRequest.from_json(body)
            challenge = await ctx.lanes.appraise(lambda: service.challenge(enrol))
            return json_response(challenge.to_json())
        activate = tpm_enrol.ActivateRequest.from_json(body)
        enrolled = await ctx.lanes.appraise(lambda: service.activate(activate))
    except CustodesError as exc:
        reason = {"status": "refused", "error": kerr.classify(exc).variant, "reason": str(exc)}
        await ctx.lanes.audit(lambda: audit(ctx, "attestation", None, {**event, **reason}))
        raise
    entry: JsonObject = {**event, "status": "enrolled", **enrolled.audit_json()}
    await ctx.lanes.audit(lambda: audit(ctx, "attestation", None, entry))
    logger.info("enrolled a TPM AK for tenant %s", ctx.t.tenant)
    return json_response(enrolled.to_json())


_B64: Final = {"type": "string", "description": "padded standard base64"}


def _object(properties: JsonObject) -> JsonObject:
    return {"type": "object", "required": list(properties), "properties": properties}


_RESOURCE_PARAMS: Final = {
    n: {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", "maxLength": 128}
    for n in ("repo", "type", "tag")
}

ROUTES: Final = (
    ApiRoute(
        "POST",
        "/kbs/v0/auth",
        auth,
        "Start the RCAR handshake",
        body="Request",
        response="Challenge",
        response_description="challenge; sets cookie kbs-session-id",
        errors=(400, 413),
    ),
    ApiRoute(
        "POST",
        "/kbs/v0/attest",
        attest,
        "Send evidence for the session's challenge; returns an EAR token",
        body="Attestation",
        response="AttestationResult",
        response_description="token",
        errors=(400, 401, 413),
        cookies=(SESSION_COOKIE,),
    ),
    ApiRoute(
        "GET",
        "/kbs/v0/resource/{repo}/{type}/{tag}",
        get_resource,
        "Fetch a resource, encrypted to the attested TEE key",
        security=GUEST,
        response="Jwe",
        response_description="JWE",
        errors=(400, 401, 404),
        params=_RESOURCE_PARAMS,
    ),
    ApiRoute(
        "POST",
        "/kbs/v0/tpm/enrol",
        tpm_enrol_handler,
        "Start enrolling a TPM attestation key: a credential for its EK",
        body=_object(
            {
                "ek_certificate": {**_B64, "description": "EK certificate, DER"},
                "ak_public": {**_B64, "description": "the AK's marshalled TPMT_PUBLIC"},
            }
        ),
        response=_object(
            {
                "id": {"type": "string"},
                "credential_blob": {**_B64, "description": "TPM2B_ID_OBJECT"},
                "encrypted_secret": {**_B64, "description": "TPM2B_ENCRYPTED_SECRET"},
                "expires_in": {"type": "integer"},
            }
        ),
        response_description="the credential for TPM2_ActivateCredential",
        errors=(400, 401, 404, 413),
    ),
    ApiRoute(
        "POST",
        "/kbs/v0/tpm/enrol/activate",
        tpm_enrol_handler,
        "Finish enrolling: the secret the TPM recovered; the AK is trusted",
        body=_object(
            {
                "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "secret": {**_B64, "description": "32 bytes"},
            }
        ),
        response=_object(
            {
                "ak_public": _B64,
                "ek_fingerprint": {"type": "string"},
                "reference_value": {"type": "string"},
                "added": {"type": "boolean"},
            }
        ),
        response_description="enrolled",
        errors=(400, 401, 404, 413),
    ),
)
