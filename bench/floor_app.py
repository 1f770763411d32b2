"""The floor for ``handshake.py``: the same three HTTP requests on the same server stack
(Starlette on uvicorn with uvloop/httptools, one process) doing only the handshake's
unavoidable crypto: one EAR sign (ES256) at /attest, one EAR verify and one JWE to the TEE key
at /resource. No policy, no store, no evidence check (the sample TEE has none).

Run: python bench/floor_app.py PORT_FILE  (binds 127.0.0.1:0 and writes the port to PORT_FILE)
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from custodes._internal.b64 import b64std_encode
from custodes._internal.jws import sign_compact, verify_compact
from custodes.protocol.jwe import encrypt
from custodes.protocol.tee_key import TeePublicKey

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key()


async def auth(request: Request) -> Response:
    await request.body()
    response = JSONResponse({"nonce": b64std_encode(secrets.token_bytes(32)), "extra-params": ""})
    response.set_cookie("kbs-session-id", secrets.token_hex(16))
    return response


async def attest(request: Request) -> Response:
    body = json.loads(await request.body())
    now = int(time.time())
    claims = {
        "iat": now,
        "exp": now + 300,
        "submods": {
            "cpu0": {
                "ear.veraison.annotated-evidence": {
                    "runtime_data_claims": {"tee-pubkey": body["runtime-data"]["tee-pubkey"]}
                }
            }
        },
    }
    token = sign_compact({"alg": "ES256", "typ": "JWT"}, claims, KEY)
    return JSONResponse({"token": token})


async def resource(request: Request) -> Response:
    token = request.headers["authorization"].split(" ", 1)[1]
    _, claims = verify_compact(token, [PUBLIC])
    jwk = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"][
        "tee-pubkey"
    ]
    return JSONResponse(encrypt(b"floor secret", TeePublicKey.from_jwk(jwk)))


app = Starlette(
    routes=[
        Route("/kbs/v0/auth", auth, methods=["POST"]),
        Route("/kbs/v0/attest", attest, methods=["POST"]),
        Route("/kbs/v0/resource/{path:path}", resource, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(sys.argv[1]).write_text(str(sock.getsockname()[1]))
    config = uvicorn.Config(
        app, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])
