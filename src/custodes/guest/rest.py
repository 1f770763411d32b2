"""The guest REST API on 127.0.0.1:8006, with upstream api-server-rest's paths.

Features, as upstream: ``resource`` (default: ``/cdh/resource/…``), ``attestation``
(``/aa/token``, ``/aa/evidence``, ``/aa/additional-evidence``) or ``all``. The agent behind it
is the one ``custodes run`` uses (:meth:`AttestationAgent.from_config`): a guest with GPUs
attests them with its CPU on every path, and ``/aa/additional-evidence`` is their evidence.
The attestation feature hands the TEE's private key to local callers (``/aa/token``), exactly
as upstream does; it is off by default and the API logs a warning when it is on. Requests
from a non-loopback peer get 403, and the API refuses to listen on a non-loopback address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from typing import Literal

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from custodes import __version__
from custodes._internal.b64 import b64url_decode
from custodes.errors import ConfigError, CustodesError, InvalidResourcePath
from custodes.guest.agent import AttestationAgent
from custodes.guest.cdh import ConfidentialDataHub
from custodes.protocol.resource import ResourcePath, ResourceUri

logger = logging.getLogger(__name__)

Features = Literal["resource", "attestation", "all"]
MAX_RUNTIME_DATA = 64


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _text(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def create_rest_app(hub: ConfidentialDataHub, features: Features) -> Starlette:
    agent: AttestationAgent = hub.agent
    resource_on = features in ("resource", "all")
    attestation_on = features in ("attestation", "all")
    if attestation_on:
        logger.warning(
            "REST attestation feature on: /aa/token hands the TEE private key to local callers"
        )

    def guard(request: Request) -> Response | None:
        client = request.client
        if client is None or not is_loopback(client.host):
            return _text(403, "Forbidden")
        return None

    async def info(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        body: dict[str, object] = {"version": __version__, "tee": str(agent.attester.tee)}
        if devices := agent.additional_tees():  # omitted when empty, as upstream
            body["additional_tees"] = devices
        body["feature"] = features
        return Response(json.dumps(body), media_type="application/json")

    async def resource(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if not resource_on:
            return _text(404, "Resource Feature Not Enabled")
        raw = request.scope.get("raw_path", b"").split(b"?", 1)[0].decode("ascii", "replace")
        segments = raw.split("/")[3:]
        try:
            path = ResourcePath.from_segments(segments)
        except InvalidResourcePath as e:
            return _text(400, f"BAD REQUEST: {e}")
        try:
            data = await anyio.to_thread.run_sync(
                lambda: hub.get_resource(ResourceUri(None, path, {}))
            )
        except CustodesError as e:
            return _text(500, str(e))
        return Response(data.reveal(), media_type="application/octet-stream")

    def _runtime_data(request: Request) -> bytes:
        value = request.query_params.get("runtime_data")
        if value is None:
            raise ValueError("missing runtime_data")
        if request.query_params.get("encoding") == "base64":
            data = b64url_decode(value)
        else:
            data = value.encode()
        if len(data) > MAX_RUNTIME_DATA:
            raise ValueError(f"runtime_data is over {MAX_RUNTIME_DATA} bytes")
        return data

    def evidence_request(request: Request) -> bytes | Response:
        """The runtime data an evidence request asks to bind, or the answer that refuses it."""
        if (denied := guard(request)) is not None:
            return denied
        if not attestation_on:
            return _text(404, "Attestation Feature Not Enabled")
        try:
            return _runtime_data(request)
        except ValueError as e:
            return _text(400, f"BAD REQUEST: {e}")

    async def token(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        if not attestation_on:
            return _text(404, "Attestation Feature Not Enabled")
        if request.query_params.get("token_type", "kbs") != "kbs":
            return _text(400, "BAD REQUEST: token_type must be kbs")
        try:
            tok, key = await anyio.to_thread.run_sync(agent.token_with_key)
        except CustodesError as e:
            return _text(500, str(e))
        body = {"token": tok.value, "tee_keypair": key.reveal().decode()}
        return Response(json.dumps(body).encode(), media_type="application/octet-stream")

    async def evidence(request: Request) -> Response:
        if isinstance(data := evidence_request(request), Response):
            return data
        try:
            ev = await anyio.to_thread.run_sync(lambda: agent.attester.evidence(data))
        except (CustodesError, ValueError) as e:
            return _text(500, str(e))
        return Response(json.dumps(ev).encode(), media_type="application/octet-stream")

    async def additional_evidence(request: Request) -> Response:
        if isinstance(data := evidence_request(request), Response):
            return data
        # The agent's devices (GPUs) over the caller's report data, as the handshake builds
        # it: upstream's {tee: evidence} JSON, or an empty body without devices.
        try:
            text = await anyio.to_thread.run_sync(lambda: agent.additional_evidence(data))
        except ValueError as e:  # report data a device cannot take (a GPU needs 32 bytes)
            return _text(400, f"BAD REQUEST: {e}")
        except CustodesError as e:
            return _text(500, str(e))
        return Response(text.encode(), media_type="application/octet-stream")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _text(404, "URL NOT FOUND")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return _text(405, "METHOD NOT ALLOWED")

    return Starlette(
        routes=[
            Route("/info", info, methods=["GET"]),
            Route(
                "/cdh/resource/{path:path}",
                resource,
                methods=["GET", "POST", "PUT", "DELETE", "HEAD"],
            ),
            Route("/aa/token", token, methods=["GET"]),
            Route("/aa/evidence", evidence, methods=["GET"]),
            Route("/aa/additional-evidence", additional_evidence, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
    )


def check_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not is_loopback(host):
        raise ConfigError(f"the guest REST API listens on loopback only, not {host!r}")
    if not port.isdigit():
        raise ConfigError(f"rest listen must be HOST:PORT, got {listen!r}")
    return host, int(port)
