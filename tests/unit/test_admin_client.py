"""The admin and operator API clients against a loopback HTTP server standing in for the
broker: which URL and token each call carries, and one precise error for every answer of the
wrong shape (the real broker never sends one, so it cannot play this part). The clients
against the real broker are exercised by the integration tests (admin identities, tenants,
TPM enrolment)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.b64 import b64url_decode
from custodes.admin_client import AdminClient, OperatorClient
from custodes.errors import MalformedMessage
from custodes.protocol.resource import ResourcePath


@dataclass
class _Broker:
    url: str
    answer: bytes = b"[]"
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, token


@pytest.fixture
def broker() -> Iterator[_Broker]:
    state = _Broker(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            state.seen.append((self.command, self.path, token))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.answer)))
            self.end_headers()
            self.wfile.write(state.answer)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _claims(token: str) -> dict[str, object]:
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(claims, dict)
    return claims


def test_admin_calls_go_to_the_kbs_api_with_a_token_for_the_tenant(
    broker: _Broker, key: ed25519.Ed25519PrivateKey
) -> None:
    broker.answer = b'["a/b/c"]'
    with AdminClient(broker.url + "/tenants/acme", key) as client:
        assert client.list_resources() == ["a/b/c"]
    [(method, path, token)] = broker.seen
    assert (method, path) == ("GET", "/tenants/acme/kbs/v0/resource")
    claims = _claims(token)
    assert claims["sub"] == "admin"
    assert claims["aud"] == broker.url + "/tenants/acme"


def test_operator_calls_go_to_the_operator_api_with_an_operator_token(
    broker: _Broker, key: ed25519.Ed25519PrivateKey
) -> None:
    broker.answer = b'["acme"]'
    with OperatorClient(broker.url, key) as client:
        assert client.list_tenants() == ["acme"]
    [(method, path, token)] = broker.seen
    assert (method, path) == ("GET", "/operator/v0/tenants")
    claims = _claims(token)
    assert claims["sub"] == "operator"
    assert claims["aud"] == broker.url + "/operator"


def test_subject_and_audience_can_be_named(broker: _Broker, key: ed25519.Ed25519PrivateKey) -> None:
    with OperatorClient(broker.url, key, subject="ops", audience="https://broker.example") as op:
        op.list_tenants()
    with AdminClient(broker.url, key, subject="alice", audience="https://broker.example") as ad:
        ad.list_policies("resource")
    operator, admin = (_claims(token) for _, _, token in broker.seen)
    assert (operator["sub"], operator["aud"]) == ("ops", "https://broker.example:443/operator")
    assert (admin["sub"], admin["aud"]) == ("alice", "https://broker.example:443")


_Call = Callable[[AdminClient, OperatorClient], object]
_CALLS: dict[str, tuple[_Call, bytes, str]] = {
    "identities not an array": (
        lambda a, o: a.list_identities(),
        b"{}",
        "identities: expected a JSON array",
    ),
    "an identity not an object": (
        lambda a, o: a.list_identities(),
        b'["alice"]',
        "an entry of identities: expected a JSON object",
    ),
    "resource-info not an object": (
        lambda a, o: a.resource_info(ResourcePath.parse("a/b/c")),
        b"[]",
        "resource-info: expected a JSON object",
    ),
    "resources not an array": (
        lambda a, o: a.list_resources(),
        b'"x"',
        "resource list: expected a JSON array",
    ),
    "policies not an array": (
        lambda a, o: a.list_policies("resource"),
        b"{}",
        "policy list: expected a JSON array",
    ),
    "a policy version not an object": (
        lambda a, o: a.policy_versions("resource", "default"),
        b"[1]",
        "an entry of policy versions: expected a JSON object",
    ),
    "policy without its text": (
        lambda a, o: a.get_policy("resource", "default"),
        b'{"policy_id": "default"}',
        "policy: expected {'policy_id', 'policy'}",
    ),
    "denial not an object": (
        lambda a, o: a.get_denial("c1"),
        b"null",
        "denial: expected a JSON object",
    ),
    "reference value not an object": (
        lambda a, o: a.get_reference_value("svn"),
        b"[]",
        "reference value: expected a JSON object",
    ),
    "reference values not an array": (
        lambda a, o: a.list_reference_values(),
        b"{}",
        "reference values: expected a JSON array",
    ),
    "tenants not an array": (
        lambda a, o: o.list_tenants(),
        b"{}",
        "tenants: expected a JSON array",
    ),
    "tenant not an object": (
        lambda a, o: o.get_tenant("acme"),
        b"[]",
        "tenant: expected a JSON object",
    ),
    "created tenant not an object": (
        lambda a, o: o.create_tenant("acme", []),
        b"1",
        "tenant: expected a JSON object",
    ),
    "invalid JSON": (
        lambda a, o: a.list_resources(),
        b"[",
        "the broker answered with invalid JSON",
    ),
}


@pytest.mark.parametrize("case", list(_CALLS))
def test_an_answer_of_the_wrong_shape_is_one_precise_error(
    broker: _Broker, key: ed25519.Ed25519PrivateKey, case: str
) -> None:
    call, answer, message = _CALLS[case]
    broker.answer = answer
    with AdminClient(broker.url, key) as admin, OperatorClient(broker.url, key) as operator:
        with pytest.raises(MalformedMessage) as info:
            call(admin, operator)
    assert str(info.value) == message
