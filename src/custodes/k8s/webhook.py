"""The admission webhook's HTTPS app: ``POST /validate``, ``POST /mutate``, ``GET /healthz``.

Answers are AdmissionReview v1 (HTTP 200) whenever the body was a review the webhook could
read; anything else gets a ``metav1.Status`` with the reason: 400 (not JSON, not an
AdmissionReview v1, no ``request.uid``), 413 (body too large), 415 (not JSON content), 500
(a bug; logged, generic message). Decisions are logged with the request uid, never with the
pod's content.

The API server only calls webhooks over HTTPS, so the server always has TLS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custodes._internal.tls import check_server_pair
from custodes.k8s.admission import parse_review, review
from custodes.k8s.errors import AdmissionReviewError
from custodes.k8s.webhook_config import WebhookConfig

logger = logging.getLogger(__name__)

JSON_TYPES: Final = ("application/json",)


class _TooLarge(Exception):
    pass


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }
    return JSONResponse(body, status_code=code)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


def create_webhook_app(config: WebhookConfig) -> Starlette:
    async def handle(request: Request, *, mutate: bool) -> Response:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in JSON_TYPES:
            return _status(415, "UnsupportedMediaType", "Content-Type must be application/json")
        try:
            body = await _read_body(request, config.max_body_bytes)
        except _TooLarge:
            return _status(
                413, "RequestEntityTooLarge", f"body is larger than {config.max_body_bytes} bytes"
            )
        try:
            admission = parse_review(body)
        except AdmissionReviewError as e:
            logger.info("refused a malformed AdmissionReview: %s", e)
            return _status(400, "BadRequest", f"malformed AdmissionReview: {e}")
        try:
            answer = review(admission, config, mutate=mutate)
        except Exception:  # a bug: answer (the API server applies failurePolicy) and log it
            logger.exception("review %s failed", admission.uid)
            return _status(500, "InternalError", "the webhook failed to review this request")
        logger.info(
            "review %s %s %s/%s: %s%s",
            admission.uid,
            admission.operation,
            admission.namespace,
            admission.name or "-",
            "allowed" if answer.allowed else f"refused ({answer.code})",
            f", {len(answer.patch)} patch op(s)" if answer.patch else "",
        )
        return JSONResponse(answer.to_review())

    async def validate(request: Request) -> Response:
        return await handle(request, mutate=False)

    async def mutate(request: Request) -> Response:
        return await handle(request, mutate=True)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/validate", validate, methods=["POST"]),
            Route("/mutate", mutate, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def webhook_server(
    app: Starlette, *, tls_cert: Path, tls_key: Path, log_level: str = "warning"
) -> uvicorn.Server:
    """A uvicorn server for ``app`` with TLS (sockets are passed to ``run``)."""
    # The broker's check: files present, the key private (owner, mode), the pair matching.
    check_server_pair(tls_cert, tls_key, named_by="--tls-cert/--tls-key")
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        server_header=False,
        ssl_certfile=str(tls_cert),
        ssl_keyfile=str(tls_key),
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)
