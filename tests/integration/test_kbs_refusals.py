"""Every refusal of the broker over real HTTP: the right status, an ``ErrorInformation``
body, never a 500 or a traceback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes._internal.b64 import b64std_encode, b64url_encode
from custodes._internal.jws import sign_compact
from custodes.admin_client import admin_token
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.protocol.binding import HashAlgorithm, runtime_data_digest
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import LiveBroker

PREFIX = "https://github.com/confidential-containers/kbs/errors/"
SECRET = ResourcePath("default", "key", "s")


def assert_error(response: httpx.Response, status: int, variant: str, text: str = "") -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "detail"}
    assert body["type"] == PREFIX + variant, body
    assert "Traceback" not in body["detail"]
    assert text in body["detail"], body["detail"]
    return str(body["detail"])


def auth_body(tee: str = "sample", version: str = "0.4.0") -> dict[str, Any]:
    return {"version": version, "tee": tee, "extra-params": ""}


def attestation(nonce: str, key: TeeKeyPair, report_data: bytes | None = None) -> dict[str, Any]:
    jwk = key.public_jwk()
    digest = report_data or runtime_data_digest(nonce, jwk, "", HashAlgorithm.SHA384)
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": jwk},
        "tee-evidence": {
            "primary_evidence": SampleAttester().evidence(digest),
            "additional_evidence": "",
        },
    }


def handshake(http: httpx.Client, url: str) -> tuple[str, TeeKeyPair, httpx.Response]:
    r = http.post(f"{url}/kbs/v0/auth", json=auth_body())
    assert r.status_code == 200
    nonce = r.json()["nonce"]
    key = TeeKeyPair.generate()
    return nonce, key, http.post(f"{url}/kbs/v0/attest", json=attestation(nonce, key))


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def admin_headers(broker: LiveBroker) -> Mapping[str, str]:
    return broker.admin_headers()  # a fresh single-use token for each request


def test_handshake_succeeds_and_challenge_shape(broker: LiveBroker, http: httpx.Client) -> None:
    r = http.post(f"{broker.url}/kbs/v0/auth", json=auth_body())
    challenge = r.json()
    assert challenge["extra-params"] == ""
    assert len(challenge["nonce"]) == 44
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("kbs-session-id=") and "HttpOnly" in cookie


def test_wrong_protocol_version(broker: LiveBroker, http: httpx.Client) -> None:
    r = http.post(f"{broker.url}/kbs/v0/auth", json=auth_body(version="0.1.0"))
    assert_error(r, 400, "AttestationError", "0.4.0")


def test_unknown_tee(broker: LiveBroker, http: httpx.Client) -> None:
    assert_error(
        http.post(f"{broker.url}/kbs/v0/auth", json=auth_body("quantum")),
        400,
        "AttestationError",
        "quantum",
    )


def test_tee_without_verifier(broker: LiveBroker, http: httpx.Client) -> None:
    assert_error(
        http.post(f"{broker.url}/kbs/v0/auth", json=auth_body("sgx")),
        400,
        "AttestationError",
        "not supported",
    )


def test_nonce_mismatch(broker: LiveBroker, http: httpx.Client) -> None:
    http.post(f"{broker.url}/kbs/v0/auth", json=auth_body())
    key = TeeKeyPair.generate()
    other = b64std_encode(b"\x01" * 32)
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation(other, key))
    assert_error(r, 401, "AttestationError", "nonce")


def test_report_data_mismatch(broker: LiveBroker, http: httpx.Client) -> None:
    nonce = http.post(f"{broker.url}/kbs/v0/auth", json=auth_body()).json()["nonce"]
    key = TeeKeyPair.generate()
    wrong = runtime_data_digest(nonce, TeeKeyPair.generate().public_jwk(), "", HashAlgorithm.SHA384)
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation(nonce, key, wrong))
    assert_error(r, 401, "AttestationError")


def test_expired_session(broker: LiveBroker, http: httpx.Client) -> None:
    nonce = http.post(f"{broker.url}/kbs/v0/auth", json=auth_body()).json()["nonce"]
    broker.clock.advance(broker.broker.config.limits.session_ttl_seconds + 1)
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation(nonce, TeeKeyPair.generate()))
    assert_error(r, 401, "AttestationError", "expired")


def test_unknown_session(broker: LiveBroker, http: httpx.Client) -> None:
    http.cookies.set("kbs-session-id", "0" * 32)
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation("x", TeeKeyPair.generate()))
    assert_error(r, 401, "AttestationError", "unknown")
    http.cookies.clear()
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation("x", TeeKeyPair.generate()))
    assert_error(r, 401, "AttestationError", "/kbs/v0/auth")


def test_reused_session(broker: LiveBroker, http: httpx.Client) -> None:
    nonce, key, r = handshake(http, broker.url)
    assert r.status_code == 200, r.text
    again = http.post(f"{broker.url}/kbs/v0/attest", json=attestation(nonce, key))
    assert_error(again, 401, "AttestationError", "already used")


def test_failed_attestation_burns_the_challenge(broker: LiveBroker, http: httpx.Client) -> None:
    nonce = http.post(f"{broker.url}/kbs/v0/auth", json=auth_body()).json()["nonce"]
    key = TeeKeyPair.generate()
    bad = attestation(nonce, key, b"\x00" * 48)
    assert http.post(f"{broker.url}/kbs/v0/attest", json=bad).status_code == 401
    r = http.post(f"{broker.url}/kbs/v0/attest", json=attestation(nonce, key))
    assert_error(r, 401, "AttestationError", "already used")


def test_missing_token(broker: LiveBroker, http: httpx.Client) -> None:
    r = http.get(f"{broker.url}/kbs/v0/resource/{SECRET}")
    assert_error(r, 401, "TokenNotFound")


def test_forged_token(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    http.post(f"{broker.url}/kbs/v0/resource/{SECRET}", content=b"x", headers=admin_headers)
    with KbsClient(broker.url, SampleAttester()) as guest:
        token = guest.attest().value
    header, claims = (json.loads(_b64(p)) for p in token.split(".")[:2])
    other = ec.generate_private_key(ec.SECP256R1())
    forged = sign_compact(header, claims, other)
    r = http.get(
        f"{broker.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert_error(r, 401, "TokenVerifierError")
    tampered = token.rsplit(".", 1)[0] + "." + b64url_encode(b"\x00" * 64)
    r = http.get(
        f"{broker.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {tampered}"}
    )
    assert_error(r, 401, "TokenVerifierError")
    none_alg = b64url_encode(b'{"alg":"none"}') + "." + token.split(".")[1] + "."
    r = http.get(
        f"{broker.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {none_alg}"}
    )
    assert_error(r, 401, "TokenVerifierError")


def _b64(part: str) -> bytes:
    from custodes._internal.b64 import b64url_decode

    return b64url_decode(part)


def test_expired_token(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    http.post(f"{broker.url}/kbs/v0/resource/{SECRET}", content=b"x", headers=admin_headers)
    with KbsClient(broker.url, SampleAttester()) as guest:
        token = guest.attest().value
    ok = http.get(
        f"{broker.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 200
    broker.clock.advance(broker.broker.config.token.ttl_seconds + 61)
    r = http.get(
        f"{broker.url}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(r, 401, "TokenVerifierError", "expired")


def test_admin_jwt_refusals(broker: LiveBroker, http: httpx.Client) -> None:
    url = f"{broker.url}/kbs/v0/resource"
    assert_error(http.get(url), 401, "AdminAuthAccess", "Bearer")
    now = int(time.time())
    claims = {"sub": "x", "iat": now, "exp": now + 60}
    none_token = (
        b64url_encode(b'{"alg":"none","typ":"JWT"}')
        + "."
        + b64url_encode(json.dumps(claims).encode())
        + "."
    )
    assert_error(
        http.get(url, headers={"Authorization": f"Bearer {none_token}"}), 401, "AdminAuthAccess"
    )
    other = ed25519.Ed25519PrivateKey.generate()
    foreign = sign_compact({"alg": "EdDSA", "typ": "JWT"}, claims, other)
    assert_error(
        http.get(url, headers={"Authorization": f"Bearer {foreign}"}), 401, "AdminAuthAccess"
    )
    from custodes.admin_client import load_admin_key

    key = load_admin_key(broker.data_dir / "admin-key.pem")
    expired = admin_token(key, audience=broker.url, lifetime=-3600)
    assert_error(
        http.get(url, headers={"Authorization": f"Bearer {expired}"}),
        401,
        "AdminAuthAccess",
        "expired",
    )
    forever = admin_token(key, audience=broker.url, lifetime=10 * 365 * 86400)
    assert_error(
        http.get(url, headers={"Authorization": f"Bearer {forever}"}),
        401,
        "AdminAuthAccess",
        "lifetime",
    )
    good = admin_token(key, audience=broker.url)
    assert http.get(url, headers={"Authorization": f"Bearer {good}"}).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "default/../s",
        "default/key/..",
        "default//s",
        "default/key/s/extra",
        "default/key",
        "default/%2e%2e/s",
        "default/key%2Fs/x",
        "default/.hidden/s",
        "default/k%20y/s",
    ],
)
def test_bad_resource_paths(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str], path: str
) -> None:
    # httpx normalises "..": send the raw target as given.
    r = http.post(
        f"{broker.url}/kbs/v0/resource/{path}",
        content=b"x",
        headers=admin_headers,
        extensions={"target": f"/kbs/v0/resource/{path}".encode()},
    )
    assert_error(r, 404, "InvalidRequestPath")
    r = http.get(
        f"{broker.url}/kbs/v0/resource/{path}",
        extensions={"target": f"/kbs/v0/resource/{path}".encode()},
    )
    assert_error(r, 404, "InvalidRequestPath")


def test_body_over_the_limit(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    limit = broker.broker.config.limits.max_body_bytes
    r = http.post(f"{broker.url}/kbs/v0/auth", content=b" " * (limit + 1))
    assert_error(r, 413, "PayloadTooLarge")
    big = broker.broker.config.limits.max_resource_bytes + 1
    r = http.post(
        f"{broker.url}/kbs/v0/resource/{SECRET}", content=b"x" * big, headers=admin_headers
    )
    assert_error(r, 413, "PayloadTooLarge")

    def chunks() -> Any:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    r = http.post(f"{broker.url}/kbs/v0/auth", content=chunks())  # no Content-Length
    assert_error(r, 413, "PayloadTooLarge")


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"version": "0.4.0"}',
        b"\xff\xfe",
        b'{"version":"0.4.0","tee":"sample","extra-params":""}' + b"x",
        b"[" * 100 + b"]" * 100,
        b'{"a":NaN}',
        b'{"version":"0.4.0","version":"0.4.0","tee":"sample"}',
    ],
)
def test_malformed_json(broker: LiveBroker, http: httpx.Client, body: bytes) -> None:
    assert_error(http.post(f"{broker.url}/kbs/v0/auth", content=body), 400, "SerdeError")


def test_malformed_attestation(broker: LiveBroker, http: httpx.Client) -> None:
    http.post(f"{broker.url}/kbs/v0/auth", json=auth_body())
    assert_error(
        http.post(f"{broker.url}/kbs/v0/attest", json={"runtime-data": 1}), 400, "SerdeError"
    )


def test_unknown_endpoint_and_method(broker: LiveBroker, http: httpx.Client) -> None:
    assert_error(http.get(f"{broker.url}/kbs/v0/nothing"), 404, "PluginNotFound")
    assert_error(http.get(f"{broker.url}/elsewhere"), 404, "PluginNotFound")
    assert_error(http.get(f"{broker.url}/kbs/v0/auth"), 405, "MethodNotAllowed")
    assert_error(http.post(f"{broker.url}/metrics"), 405, "MethodNotAllowed")


def test_policy_upload_refusals(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    url = f"{broker.url}/kbs/v0/resource-policy"
    import base64

    std = base64.b64encode(b"package policy\ndefault allow := true\n").decode()
    assert_error(
        http.post(url, json={"policy": std + "="}, headers=admin_headers),
        400,
        "SerdeError",
        "base64url",
    )
    broken = b64url_encode(b"package policy\nallow if {")
    assert_error(
        http.post(url, json={"policy": broken}, headers=admin_headers), 400, "ParsePolicyError"
    )
    assert_error(http.post(url, json={"nope": 1}, headers=admin_headers), 400, "SerdeError")


def test_reference_value_refusals(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    url = f"{broker.url}/kbs/v0/reference-value"
    assert_error(
        http.post(url, json={"type": "sample", "payload": "%%%"}, headers=admin_headers),
        400,
        "RvpsError",
    )
    assert_error(http.get(f"{url}/no/such/id", headers=admin_headers), 404, "ResourceNotFound")


def test_resource_not_found_only_after_policy(
    broker: LiveBroker, http: httpx.Client, admin_headers: Mapping[str, str]
) -> None:
    with KbsClient(broker.url, SampleAttester()) as guest:
        token = guest.attest().value
    r = http.get(
        f"{broker.url}/kbs/v0/resource/default/key/absent",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_error(r, 404, "ResourceNotFound")
    r = http.delete(f"{broker.url}/kbs/v0/resource/default/key/absent", headers=admin_headers)
    assert_error(r, 404, "ResourceNotFound")


def test_metrics_and_health(broker: LiveBroker, http: httpx.Client) -> None:
    assert http.get(f"{broker.url}/healthz").json() == {"status": "ok"}
    handshake(http, broker.url)
    text = http.get(f"{broker.url}/metrics").text
    assert 'custodes_attestations_total{result="affirming",tee="sample"} 1.0' in text
    # The event loop's lag is probed every 0.1 s: the histogram fills while the broker runs.

    def probes() -> float:
        lines = http.get(f"{broker.url}/metrics").text.splitlines()
        (count,) = [x for x in lines if x.startswith("custodes_event_loop_lag_seconds_count ")]
        return float(count.split()[1])

    first = probes()
    deadline = time.monotonic() + 30
    while probes() <= first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert probes() > first


def test_openapi_covers_every_route(broker: LiveBroker, http: httpx.Client) -> None:
    from custodes.kbs.routes import ROUTES

    doc = http.get(f"{broker.url}/kbs/v0/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    documented = {
        (m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"
    }
    assert documented == {(r.method, r.openapi_path) for r in ROUTES}
