"""Tenants isolated on the request path: a tenant whose resource policy computes forever gets
a clear error at the policy's budget (and its admin the reason, by correlation id), while the
broker's health check and another tenant's whole handshake stay fast meanwhile; afterwards the
policy pool serves again."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.clock import FrozenClock
from custodes.admin_client import AdminClient, operator_audience
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import (
    AttestationConfig,
    KbsConfig,
    LimitsConfig,
    OperatorConfig,
    ServerConfig,
)
from custodes.kbs.keys import write_public_pem
from custodes.kbs.server import serve_in_thread
from custodes.policy.budget import evaluate_within_budget
from custodes.protocol.resource import ResourcePath
from live_broker import AdminHeaders

BUDGET = 3  # limits.policy_seconds: the broker's budget comes from its configuration
SECRET = ResourcePath("default", "key", "s")
SAMPLE_RVS = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
# 10^10 iterations without allocating: computes for hours unless stopped.
RUNAWAY = """
package policy

import rego.v1

default allow := false

allow if {
    some i in numbers.range(1, 100000)
    some j in numbers.range(1, 100000)
    i == j + 1000000
}
"""
ALLOW_ALL = "package policy\n\nimport rego.v1\n\ndefault allow := true\n"


@dataclass
class Broker2:
    url: str
    admins: dict[str, AdminClient]

    def base(self, tenant: str) -> str:
        return f"{self.url}/tenants/{tenant}"


def _pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def two_tenants(tmp_path: Path) -> Iterator[Broker2]:
    operator = ed25519.Ed25519PrivateKey.generate()
    write_public_pem(tmp_path / "operator.pub.pem", operator.public_key())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        operator=OperatorConfig(public_keys=(tmp_path / "operator.pub.pem",)),
        limits=LimitsConfig(policy_seconds=BUDGET),
    ).validate()
    broker = build_broker(config, clock=FrozenClock(time.time()))
    app = create_app(broker)
    with serve_in_thread(app, config) as url:
        admins: dict[str, AdminClient] = {}
        for tenant in ("slow", "fast"):
            key = ed25519.Ed25519PrivateKey.generate()
            body = {
                "id": tenant,
                "identities": [{"subject": "admin", "role": "admin", "public_key": _pem(key)}],
            }
            headers = AdminHeaders(operator, operator_audience(url), subject="operator")
            r = httpx.post(f"{url}/operator/v0/tenants", json=body, headers=headers)
            assert r.status_code == 200, r.text
            admin = AdminClient(f"{url}/tenants/{tenant}", key, subject="admin")
            admin.register_reference_values(SAMPLE_RVS)
            admin.put_resource(SECRET, f"{tenant} secret".encode())
            admins[tenant] = admin
        yield Broker2(url, admins)
        for admin in admins.values():
            admin.close()
    broker.close()


def _warm_policy_workers(n: int) -> None:
    """Start ``n`` policy worker processes now, so that starting one is not what is timed."""
    with ThreadPoolExecutor(n) as pool:
        list(
            pool.map(
                lambda _: evaluate_within_budget(ALLOW_ALL, "data.policy.allow", input={}),
                range(n),
            )
        )


def test_a_runaway_policy_stops_at_its_budget_and_delays_no_other_tenant(
    two_tenants: Broker2,
) -> None:
    w = two_tenants
    _warm_policy_workers(6)
    w.admins["slow"].set_policy("resource", RUNAWAY)
    with KbsClient(w.base("slow"), SampleAttester()) as slow_guest:
        token = slow_guest.attest().value
    answers: list[tuple[httpx.Response, float]] = []

    def fetch() -> None:
        started = time.monotonic()
        r = httpx.get(
            f"{w.base('slow')}/kbs/v0/resource/{SECRET}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        answers.append((r, time.monotonic() - started))

    flood = [threading.Thread(target=fetch) for _ in range(3)]
    for t in flood:
        t.start()
    time.sleep(0.5)  # the three evaluations are running now

    # Ordering, not timing (a loaded machine stretches every duration): /healthz and the
    # other tenant's whole handshake and release complete while all three slow evaluations
    # are still running.
    assert httpx.get(f"{w.url}/healthz", timeout=10).status_code == 200
    running_after_health = sum(t.is_alive() for t in flood)
    with KbsClient(w.base("fast"), SampleAttester()) as fast_guest:
        assert fast_guest.get_resource(SECRET) == b"fast secret"
    still_running = sum(t.is_alive() for t in flood)
    for t in flood:
        t.join(60)

    assert running_after_health == 3, "/healthz answered only after the slow policies"
    assert still_running == 3, "the other tenant finished only after the slow policies"
    assert len(answers) == 3
    for r, elapsed in answers:
        assert r.status_code == 400, r.text
        body = r.json()
        assert body["type"].endswith("/ParsePolicyError")
        assert "exceeded its evaluation budget of 3 s" in body["detail"]
        assert elapsed >= BUDGET, elapsed  # it ran until the budget stopped it
    # The slow tenant's admin learns why, by the correlation id the guest was given.
    correlation_id = re.search(r"correlation id ([0-9a-f]{32})", answers[0][0].json()["detail"])
    assert correlation_id is not None
    denial = w.admins["slow"].get_denial(correlation_id[1])["denial"]
    assert isinstance(denial, dict)
    assert "budget" in str(denial["error"])
    # The stopped workers were replaced: the pool serves the fixed policy at once.
    w.admins["slow"].set_policy("resource", ALLOW_ALL)
    with KbsClient(w.base("slow"), SampleAttester()) as slow_guest:
        assert slow_guest.get_resource(SECRET) == b"slow secret"
