"""A pod start fetches its secrets concurrently: one attestation, then the resource requests in
flight together over one client; the client is safe to share between threads (one handshake
at a time, a burst of 401s re-attests once, the session cookie never goes through a shared
jar); the unseal failure policy gives the outcome of a sequential start.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Literal

import httpx
import pytest

from custodes._internal.kbs_http import KbsRequestError
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.config import GuestConfig, broker_from_url
from custodes.guest.kbs_client import SESSION_COOKIE, KbsClient
from custodes.guest.launcher import NOT_STARTED, Fetch, UnsealFailed, fetch_all, prepare
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import generate_signing_key, public_jwk
from custodes.sealed.payload import VaultPayload
from custodes.sealed.seal import seal
from custodes.types.json import JsonObject
from custodes.types.secret import Secret
from live_broker import LiveBroker, run_cli

KID = "kbs:///default/sealing/parallel"
SECRET = ResourcePath.parse("default/app/storm")
WORKLOAD = """
import json, os, sys
print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("SECRET_")}))
"""


def attestations(url: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("custodes_attestations_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def sealed_secrets(
    broker: LiveBroker, count: int, *, missing: tuple[int, ...] = ()
) -> dict[str, str]:
    """``count`` sealed env values SECRET_00.. (the ones in ``missing`` name no resource)."""
    signing = generate_signing_key()
    sealed = {}
    with broker.admin() as admin:
        admin.put_resource(
            ResourcePath.parse("default/sealing/parallel"),
            json.dumps(public_jwk(signing.public_key(), KID)).encode(),
        )
        for i in range(count):
            if i not in missing:
                admin.put_resource(ResourcePath("default", "app", f"s{i}"), f"value-{i}".encode())
            sealed[f"SECRET_{i:02d}"] = seal(
                VaultPayload(name=f"kbs:///default/app/s{i}"), signing, KID
            )
    return sealed


class GatedTransport(httpx.HTTPTransport):
    """The real HTTP transport, recording each request and holding each resource 401 until
    ``storm`` of them have arrived: every guest thread has then been refused with the same
    stale token before any of them can re-attest."""

    def __init__(self, storm: int = 0) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []
        self.refused = 0
        self._gate = threading.Barrier(storm) if storm else None
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        response = super().handle_request(request)
        if response.status_code == 401 and "/resource/" in request.url.path:
            with self._lock:
                self.refused += 1
            if self._gate is not None and not self._gate.broken:
                self._gate.wait(timeout=20)
        return response


def test_fifty_sealed_env_vars_one_attestation(broker: LiveBroker) -> None:
    sealed = sealed_secrets(broker, 50)
    before = attestations(broker.url)
    result = run_cli(
        "run",
        "--url",
        broker.url,
        "--tee",
        "sample",
        "--",
        sys.executable,
        "-c",
        WORKLOAD,
        env=sealed,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout) == {f"SECRET_{i:02d}": f"value-{i}" for i in range(50)}
    assert b"unsealed 50 environment variable(s) and 0 file(s) with 1 attestation(s)" in (
        result.stderr
    )
    assert attestations(broker.url) - before == 1


def test_a_401_storm_re_attests_once(broker: LiveBroker) -> None:
    threads = 12
    with broker.admin() as admin:
        admin.put_resource(SECRET, b"storm secret")
    transport = GatedTransport(storm=threads)
    with KbsClient(broker.url, SampleAttester(), transport=transport) as guest:
        assert guest.get_resource(SECRET) == b"storm secret"
        assert guest.handshakes == 1
        # The broker's clock passes the token's expiry; the guest's does not, so every
        # thread sends the cached token and is refused with 401.
        broker.clock.advance(3600)
        before = attestations(broker.url)
        got: list[bytes] = []
        errors: list[BaseException] = []

        def fetch() -> None:
            try:
                got.append(guest.get_resource(SECRET))
            except BaseException as e:  # reported below, not lost in the thread
                errors.append(e)

        workers = [threading.Thread(target=fetch) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
    assert errors == []
    assert got == [b"storm secret"] * threads
    assert transport.refused == threads  # the storm happened: every thread got a 401
    assert guest.handshakes == 2  # ... and cost one new handshake
    assert attestations(broker.url) - before == 1


class Unbound(SampleAttester):
    """Evidence that does not bind the handshake's nonce and key: the broker refuses it."""

    def evidence(self, report_data: bytes) -> JsonObject:
        return super().evidence(bytes(len(report_data)))


class HeldTransport(httpx.HTTPTransport):
    """The real HTTP transport, counting /auth requests and holding the first until
    ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.auths = 0
        self.release = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth"):
            self.auths += 1
            self.release.wait(timeout=20)
        return super().handle_request(request)


def test_threads_waiting_on_a_failed_handshake_do_not_retry_it(broker: LiveBroker) -> None:
    threads = 8
    with broker.admin() as admin:
        admin.put_resource(SECRET, b"never released")
    transport = HeldTransport()
    errors: list[BaseException] = []
    with KbsClient(broker.url, Unbound(), transport=transport) as guest:

        def fetch() -> None:
            try:
                guest.get_resource(SECRET)
            except BaseException as e:  # the expected refusal, checked below
                errors.append(e)

        workers = [threading.Thread(target=fetch) for _ in range(threads)]
        for w in workers:
            w.start()
        # Every thread is now waiting for the first handshake (held in the transport).
        time.sleep(0.5)
        transport.release.set()
        for w in workers:
            w.join(timeout=60)
        assert len(errors) == threads
        assert all(isinstance(e, KbsRequestError) for e in errors)
        assert transport.auths == 1  # one failed handshake for all eight
        assert guest.handshakes == 0
        # A later call is a new attempt, not the remembered failure.
        with pytest.raises(KbsRequestError):
            guest.get_resource(SECRET)
        assert transport.auths == 2


def test_session_cookie_is_explicit_and_never_on_bearer_requests(broker: LiveBroker) -> None:
    with broker.admin() as admin:
        admin.put_resource(SECRET, b"cookie secret")
    transport = GatedTransport()
    with KbsClient(broker.url, SampleAttester(), transport=transport) as guest:
        assert guest.get_resource(SECRET) == b"cookie secret"
        assert guest.get_resource(SECRET, via="cookie") == b"cookie secret"
    auth, attest, bearer, by_cookie = transport.requests
    assert "cookie" not in auth.headers
    session = attest.headers["cookie"]
    assert session.startswith(f"{SESSION_COOKIE}=") and len(session) > len(SESSION_COOKIE) + 1
    assert "cookie" not in bearer.headers and bearer.headers["authorization"].startswith("Bearer ")
    assert by_cookie.headers["cookie"] == session and "authorization" not in by_cookie.headers


def _config(broker: LiveBroker, unseal_failure: Literal["error", "warn"]) -> GuestConfig:
    return GuestConfig(
        brokers=(broker_from_url(broker.url),), tee="sample", unseal_failure=unseal_failure
    )


def test_fail_policy_names_the_first_failure_in_order(broker: LiveBroker) -> None:
    sealed = sealed_secrets(broker, 20, missing=(3, 12))
    with pytest.raises(UnsealFailed, match=r"^cannot unseal environment variable SECRET_03: "):
        prepare(_config(broker, "error"), sealed)


def test_warn_policy_keeps_every_sealed_value_that_failed_in_order(broker: LiveBroker) -> None:
    sealed = sealed_secrets(broker, 20, missing=(3, 12))
    prepared = prepare(_config(broker, "warn"), sealed)
    assert [w.split(":")[0] for w in prepared.warnings] == [
        "cannot unseal environment variable SECRET_03",
        "cannot unseal environment variable SECRET_12",
    ]
    assert prepared.env["SECRET_03"] == sealed["SECRET_03"]  # left sealed
    assert prepared.env["SECRET_12"] == sealed["SECRET_12"]
    assert prepared.unsealed_env == [f"SECRET_{i:02d}" for i in range(20) if i not in (3, 12)]
    assert all(prepared.env[k] == f"value-{int(k[-2:])}" for k in prepared.unsealed_env)
    assert prepared.handshakes == 1


def test_sequential_and_parallel_starts_agree(broker: LiveBroker) -> None:
    sealed = sealed_secrets(broker, 12, missing=(5,))
    one = prepare(_config(broker, "warn"), sealed, concurrency=1)
    many = prepare(_config(broker, "warn"), sealed, concurrency=8)
    assert one.env == many.env and one.warnings == many.warnings
    assert one.unsealed_env == many.unsealed_env


# --- fetch_all, the scheduling alone ------------------------------------------------------


def _ok(value: bytes) -> Fetch:
    return Fetch(lambda: Secret(value), lambda _: True)


def _boom(message: str, *, stops: bool) -> Fetch:
    def run() -> Secret[bytes]:
        raise UnsealFailed(message)

    return Fetch(run, lambda _: stops)


def test_fetch_all_keeps_order_and_errors() -> None:
    results = fetch_all([_ok(b"a"), _boom("b", stops=False), _ok(b"c")] * 5, concurrency=4)
    assert len(results) == 15
    for i, result in enumerate(results):
        if i % 3 == 1:
            assert isinstance(result, UnsealFailed) and str(result) == "b"
        else:
            assert isinstance(result, Secret) and result.reveal() == (b"a" if i % 3 == 0 else b"c")


def test_fetch_all_skips_what_follows_a_stopping_failure_but_not_what_precedes_it() -> None:
    started: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def slow_first() -> Secret[bytes]:
        # The first fetch finishes only after the failure at index 1 was recorded.
        release.wait(timeout=10)
        with lock:
            started.append(0)
        return Secret(b"first")

    def failing() -> Secret[bytes]:
        with lock:
            started.append(1)
        release.set()
        raise UnsealFailed("stop")

    def later(i: int) -> Fetch:
        def run() -> Secret[bytes]:
            with lock:
                started.append(i)
            return Secret(b"later")

        return Fetch(run, lambda _: True)

    fetches = [Fetch(slow_first, lambda _: True), Fetch(failing, lambda _: True)]
    fetches += [later(i) for i in range(2, 40)]
    results = fetch_all(fetches, concurrency=2)
    first = results[0]
    # The fetch before the failure ran to its end although the failure came first.
    assert isinstance(first, Secret) and first.reveal() == b"first"
    assert isinstance(results[1], UnsealFailed)
    # After it, nothing starts once the failure is recorded (at most the one fetch the freed
    # worker may pick up in the instant between the failure and its recording).
    ran_after = [i for i in started if i >= 2]
    assert len(ran_after) <= 1
    assert results[3:] == [NOT_STARTED] * 37
