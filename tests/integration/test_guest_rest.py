"""The guest REST API over real HTTP on loopback, backed by a real broker."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from custodes.errors import ConfigError
from custodes.guest.agent import AttestationAgent
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.cdh import ConfidentialDataHub
from custodes.guest.config import GuestConfig, broker_from_url
from custodes.guest.rest import Features, check_listen, create_rest_app
from custodes.kbs.server import bind_socket
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import LiveBroker


def _serve(app: Starlette) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def _hub(broker: LiveBroker) -> ConfidentialDataHub:
    config = GuestConfig(brokers=(broker_from_url(broker.url),))
    return ConfidentialDataHub(AttestationAgent(config, SampleAttester()))


@pytest.fixture
def rest(broker: LiveBroker, request: pytest.FixtureRequest) -> Iterator[str]:
    features: Features = getattr(request, "param", "resource")
    hub = _hub(broker)
    with broker.admin() as admin:
        admin.put_resource(ResourcePath("default", "key", "k1"), b"\x00\x01secret")
    yield from _serve(create_rest_app(hub, features))
    hub.agent.close()


def test_info_and_resource(rest: str) -> None:
    info = httpx.get(f"{rest}/info").json()
    assert info["tee"] == "sample" and info["feature"] == "resource"
    r = httpx.get(f"{rest}/cdh/resource/default/key/k1")
    assert r.status_code == 200 and r.content == b"\x00\x01secret"
    assert r.headers["content-type"] == "application/octet-stream"


def test_resource_errors(rest: str) -> None:
    r = httpx.get(f"{rest}/cdh/resource/default/key/absent")
    assert r.status_code == 500 and "does not exist" in r.text
    r = httpx.get(f"{rest}/cdh/resource/default/..%2f/x")
    assert r.status_code == 400
    assert httpx.get(f"{rest}/cdh/resource/a/b").status_code == 400
    assert httpx.get(f"{rest}/nothing").status_code == 404


def test_attestation_feature_off_by_default(rest: str) -> None:
    r = httpx.get(f"{rest}/aa/token?token_type=kbs")
    assert r.status_code == 404 and r.text == "Attestation Feature Not Enabled"
    assert httpx.get(f"{rest}/aa/evidence?runtime_data=x").status_code == 404


@pytest.mark.parametrize("rest", ["all"], indirect=True)
def test_attestation_feature(rest: str) -> None:
    body = json.loads(httpx.get(f"{rest}/aa/token?token_type=kbs").content)
    assert body["token"].count(".") == 2
    key = TeeKeyPair.from_private_pem(body["tee_keypair"].encode())
    assert key.public_jwk()["kty"] == "EC"
    ev = json.loads(httpx.get(f"{rest}/aa/evidence?runtime_data=hello").content)
    assert ev["svn"] == "1"
    ev = json.loads(httpx.get(f"{rest}/aa/evidence?runtime_data=aGVsbG8&encoding=base64").content)
    assert ev["svn"] == "1"
    r = httpx.get(f"{rest}/aa/evidence?runtime_data={'x' * 65}")
    assert r.status_code == 400
    r = httpx.get(f"{rest}/aa/additional-evidence?runtime_data=x")
    assert r.status_code == 200 and r.content == b""
    assert httpx.get(f"{rest}/aa/token?token_type=oidc").status_code == 400


def test_non_loopback_peer_is_forbidden(broker: LiveBroker) -> None:
    hub = _hub(broker)
    app = create_rest_app(hub, "all")
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))

    async def probe() -> list[int]:
        async with httpx.AsyncClient(transport=transport, base_url="http://guest") as client:
            paths = ("/info", "/cdh/resource/a/b/c", "/aa/token", "/aa/evidence?runtime_data=x")
            return [(await client.get(path)).status_code for path in paths]

    assert asyncio.run(probe()) == [403, 403, 403, 403]
    hub.agent.close()


def test_listen_is_loopback_only() -> None:
    assert check_listen("127.0.0.1:8006") == ("127.0.0.1", 8006)
    assert check_listen("[::1]:8006") == ("::1", 8006)
    for bad in ("0.0.0.0:8006", "10.0.0.1:8006", "example.com:80", "127.0.0.1:x"):
        with pytest.raises(ConfigError):
            check_listen(bad)
