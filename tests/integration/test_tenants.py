"""Tenants on one broker: every admin endpoint and the resource path, across tenants and
roles. No request of one tenant can read, list, overwrite or learn of another's resources,
policies or reference values; the operator manages tenants and nothing inside them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.clock import FrozenClock
from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, operator_audience
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import build_broker
from custodes.kbs.config import (
    AttestationConfig,
    KbsConfig,
    OperatorConfig,
    ServerConfig,
)
from custodes.kbs.keys import write_public_pem
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from live_broker import AdminHeaders

SAMPLE_RVS = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
SECRET = ResourcePath("default", "key", "s")
PREFIX = "https://github.com/confidential-containers/kbs/errors/"


def pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@dataclass
class World:
    url: str
    operator: ed25519.Ed25519PrivateKey
    keys: dict[str, ed25519.Ed25519PrivateKey]  # "bank-admin", "bank-auditor", "insurer-admin"
    data: Path

    def base(self, tenant: str) -> str:
        return f"{self.url}/tenants/{tenant}"

    def admin(self, who: str, tenant: str) -> AdminClient:
        return AdminClient(self.base(tenant), self.keys[who], subject=who)

    def bearer(self, who: str, tenant: str | None = None) -> AdminHeaders:
        """Fresh single-use tokens of ``who`` for ``tenant``'s URL (the operator's: the
        operator API's)."""
        if who == "operator":
            return AdminHeaders(self.operator, operator_audience(self.url), subject=who)
        return AdminHeaders(self.keys[who], self.base(tenant or who.split("-")[0]), subject=who)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    operator = ed25519.Ed25519PrivateKey.generate()
    write_public_pem(tmp_path / "operator.pub.pem", operator.public_key())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        operator=OperatorConfig(public_keys=(tmp_path / "operator.pub.pem",)),
    ).validate()
    broker = build_broker(config, clock=FrozenClock(time.time()))
    keys = {
        n: ed25519.Ed25519PrivateKey.generate()
        for n in ("bank-admin", "bank-auditor", "insurer-admin")
    }
    with serve_in_thread(create_app(broker), config) as url:
        w = World(url, operator, keys, tmp_path / "data")
        for tenant, identities in (
            ("bank", [("bank-admin", "admin"), ("bank-auditor", "auditor")]),
            ("insurer", [("insurer-admin", "admin")]),
        ):
            body = {
                "id": tenant,
                "identities": [
                    {"subject": s, "role": r, "public_key": pem(keys[s])} for s, r in identities
                ],
            }
            r = httpx.post(f"{url}/operator/v0/tenants", json=body, headers=w.bearer("operator"))
            assert r.status_code == 200, r.text
        for tenant, who in (("bank", "bank-admin"), ("insurer", "insurer-admin")):
            with w.admin(who, tenant) as admin:
                admin.register_reference_values(SAMPLE_RVS)
                admin.put_resource(SECRET, f"{tenant} secret".encode())
        yield w
    broker.close()


def variant(r: httpx.Response) -> str:
    return str(r.json()["type"]).removeprefix(PREFIX)


# Every admin endpoint of a tenant, as (method, path, body).
ADMIN_CALLS = [
    ("GET", "resource", None),
    ("GET", f"resource-info/{SECRET}", None),
    ("POST", f"resource/{SECRET}", b"overwrite"),
    ("DELETE", f"resource/{SECRET}", None),
    ("GET", "resource-policy", None),
    ("GET", "resource-policy/resource-policy", None),
    ("POST", "resource-policy", {"policy": "cGFja2FnZSBwb2xpY3kK"}),
    ("GET", "attestation-policy", None),
    ("GET", "attestation-policy/default_cpu", None),
    ("POST", "attestation-policy", {"policy_id": "default_cpu", "policy": "cGFja2FnZSBwb2xpY3kK"}),
    ("GET", "reference-value", None),
    ("GET", "reference-value/svn", None),
    ("POST", "reference-value", {"type": "sample", "payload": "e30="}),
    ("GET", "identities", None),
    ("POST", "identities", {"subject": "x", "role": "admin", "public_key": "-"}),
    ("DELETE", "identities/insurer-admin", None),
]


def call(w: World, who: str, tenant: str, method: str, path: str, body: object) -> httpx.Response:
    kwargs: dict[str, object] = {"headers": w.bearer(who, tenant)}
    if isinstance(body, bytes):
        kwargs["content"] = body
    elif body is not None:
        kwargs["json"] = body
    return httpx.request(method, f"{w.base(tenant)}/kbs/v0/{path}", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_no_admin_endpoint_crosses_tenants(
    world: World, method: str, path: str, body: object
) -> None:
    # bank's admin against insurer, insurer's admin against bank, the operator against both,
    # and the default tenant's admin (the broker's generated key) against both.
    for who, tenant in (
        ("bank-admin", "insurer"),
        ("insurer-admin", "bank"),
        ("operator", "bank"),
        ("operator", "insurer"),
    ):
        r = call(world, who, tenant, method, path, body)
        assert r.status_code == 401 and variant(r) == "AdminAuthAccess", (who, tenant, r.text)
    # The answer is the same whether or not the object exists: no existence oracle.
    absent = path.replace("default/key/s", "default/key/absent")
    r = call(world, "bank-admin", "insurer", method, absent, body)
    assert r.status_code == 401 and variant(r) == "AdminAuthAccess"


def test_each_tenant_sees_only_its_own(world: World) -> None:
    with world.admin("bank-admin", "bank") as bank:
        bank.put_resource(ResourcePath("bank", "only", "x"), b"x")
        assert bank.list_resources() == ["bank/only/x", "default/key/s"]
    with world.admin("insurer-admin", "insurer") as insurer:
        assert insurer.list_resources() == ["default/key/s"]
        assert insurer.resource_info(SECRET)["size"] == len(b"insurer secret")


def test_guest_tokens_are_tenant_bound(world: World) -> None:
    with KbsClient(world.base("bank"), SampleAttester()) as bank_guest:
        assert bank_guest.get_resource(SECRET) == b"bank secret"
        token = bank_guest.token().value
        assert bank_guest.token().claims()["custodes.tenant"] == "bank"
    # The bank's token at the insurer, and at the default tenant: refused.
    for base in (world.base("insurer"), world.url):
        r = httpx.get(
            f"{base}/kbs/v0/resource/{SECRET}", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401 and variant(r) == "TokenVerifierError", r.text
        assert "another tenant" in r.json()["detail"]
    with KbsClient(world.base("insurer"), SampleAttester()) as insurer_guest:
        assert insurer_guest.get_resource(SECRET) == b"insurer secret"


def test_session_cookie_does_not_cross_tenants(world: World) -> None:
    with httpx.Client() as http:
        r = http.post(
            f"{world.base('bank')}/kbs/v0/auth",
            json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
        )
        assert r.status_code == 200
        # The cookie's path is /kbs/v0 of the tenant... send it explicitly to another tenant.
        sid = r.cookies["kbs-session-id"]
        r = httpx.post(
            f"{world.base('insurer')}/kbs/v0/attest", json={}, cookies={"kbs-session-id": sid}
        )
        assert r.status_code == 401 and "unknown or expired session" in r.json()["detail"]


def test_auditor_reads_but_cannot_change(world: World) -> None:
    reads = [c for c in ADMIN_CALLS if c[0] == "GET"]
    writes = [c for c in ADMIN_CALLS if c[0] != "GET"]
    for method, path, body in reads:
        r = call(world, "bank-auditor", "bank", method, path, body)
        assert r.status_code == 200, (path, r.text)
    for method, path, body in writes:
        r = call(world, "bank-auditor", "bank", method, path, body)
        assert r.status_code == 403 and variant(r) == "AdminAuthAccess", (path, r.text)
        assert "may not change" in r.json()["detail"]


def test_operator_manages_tenants_only(world: World) -> None:
    ops = world.bearer("operator")
    assert httpx.get(f"{world.url}/operator/v0/tenants", headers=ops).json() == ["bank", "insurer"]
    info = httpx.get(f"{world.url}/operator/v0/tenants/bank", headers=ops).json()
    assert info == {"id": "bank", "status": "active", "created": info["created"]}
    # Tenant admins are not operators.
    r = httpx.get(f"{world.url}/operator/v0/tenants", headers=world.bearer("bank-admin"))
    assert r.status_code == 401
    # Suspension stops everything in the tenant, guests included; resume restores it.
    assert (
        httpx.post(f"{world.url}/operator/v0/tenants/bank/suspend", headers=ops).status_code == 200
    )
    r = call(world, "bank-admin", "bank", "GET", "resource", None)
    assert r.status_code == 403 and variant(r) == "TenantSuspended"
    with (
        KbsClient(world.base("bank"), SampleAttester()) as guest,
        pytest.raises(KbsRequestError) as refused,
    ):
        guest.attest()
    assert refused.value.status == 403
    httpx.post(f"{world.url}/operator/v0/tenants/bank/resume", headers=ops)
    assert call(world, "bank-admin", "bank", "GET", "resource", None).status_code == 200


def test_operator_refusals(world: World) -> None:
    ops = world.bearer("operator")
    url = f"{world.url}/operator/v0/tenants"
    bad = [
        {"id": "Bad_Name", "identities": []},
        {"id": "x", "identities": []},
        {"id": "x", "identities": [{"subject": "a", "role": "root", "public_key": "x"}]},
        {
            "id": "bank",
            "identities": [{"subject": "a", "role": "admin", "public_key": pem(world.operator)}],
        },
    ]
    for body in bad:
        r = httpx.post(url, json=body, headers=ops)
        assert 400 <= r.status_code < 500, (body, r.text)
    assert httpx.get(f"{url}/nobody", headers=ops).status_code == 404
    assert httpx.get(url).status_code == 401


def test_unknown_tenant(world: World) -> None:
    r = httpx.post(
        f"{world.base('nobody')}/kbs/v0/auth",
        json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
    )
    assert r.status_code == 404
    r = httpx.get(f"{world.url}/tenants/Not_Valid/kbs/v0/resource")
    assert r.status_code == 400


def test_tenant_admin_adds_an_auditor(world: World) -> None:
    newcomer = ed25519.Ed25519PrivateKey.generate()
    world.keys["insurer-auditor"] = newcomer
    r = call(
        world,
        "insurer-admin",
        "insurer",
        "POST",
        "identities",
        {"subject": "insurer-auditor", "role": "auditor", "public_key": pem(newcomer)},
    )
    assert r.status_code == 200, r.text
    assert call(world, "insurer-auditor", "insurer", "GET", "resource", None).status_code == 200
    listed = call(world, "insurer-admin", "insurer", "GET", "identities", None).json()
    assert {"subject": "insurer-auditor", "role": "auditor"} in listed


def test_database_file_holds_no_plaintext(world: World) -> None:
    """What the infrastructure admin sees with the database files: ciphertext only."""
    needles = [b"bank secret", b"insurer secret"]
    for name in ("custodes.db", "custodes.db-wal"):
        path = world.data / name
        if path.exists():
            raw = path.read_bytes()
            for needle in needles:
                assert needle not in raw, (name, needle)
    import sqlite3

    db = sqlite3.connect(world.data / "custodes.db")
    try:
        rows = db.execute("SELECT namespace, key, value FROM kv").fetchall()
    finally:
        db.close()
    resources = [r for r in rows if r[0].endswith("repository")]
    assert {r[0] for r in resources} == {"t/bank/repository", "t/insurer/repository"}
    for _, _, value in rows:
        for needle in needles:
            assert needle not in bytes(value)


def test_each_tenants_export_ends_with_its_own_signed_checkpoint(world: World) -> None:
    """Audit checkpoints per tenant (docs/audit.md): each export ends with a checkpoint naming
    its tenant and who exported; neither a tenant's checkpoint nor its whole export passes as
    another tenant's."""
    import io
    import json

    from cryptography.hazmat.primitives.asymmetric import ec

    from custodes.audit.entry import key_id
    from custodes.audit.errors import AuditWrongStream
    from custodes.audit.verify import verify_jsonl

    exports: dict[str, bytes] = {}
    for tenant, who in (("bank", "bank-auditor"), ("insurer", "insurer-admin")):
        with world.admin(who, tenant) as client:
            exports[tenant] = client.export_audit()
            public = serialization.load_pem_public_key(client.audit_public_key())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        keys = {key_id(public): public}
        last = json.loads(exports[tenant].splitlines()[-1])
        assert last["kind"] == "checkpoint" and last["actor"] == who
        assert last["stream"] == last["event"]["origin"] == tenant
        report = verify_jsonl(io.BytesIO(exports[tenant]), keys, stream=tenant)
        assert report.ok and report.complete, report
    bank, insurer = (exports[t].splitlines() for t in ("bank", "insurer"))
    report = verify_jsonl(io.BytesIO(exports["bank"]), keys, stream="insurer")
    assert isinstance(report.error, AuditWrongStream) and report.first_bad_seq == 0
    # insurer's entries, cut before their checkpoint, ended by bank's checkpoint instead.
    spliced = b"\n".join([*insurer[:-1], bank[-1]]) + b"\n"
    report = verify_jsonl(io.BytesIO(spliced), keys)
    assert not report.ok and isinstance(report.error, AuditWrongStream)
