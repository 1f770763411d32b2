"""A broker with two tenants and some history, for the dashboard's tests.

``bank`` (admin ``bank-admin``, auditor ``bank-auditor``) and ``insurer`` (admin
``insurer-admin``), created by the operator through the operator API. Each has a resource whose
value is a distinctive random string (the tests check that it never appears in a page), the
sample reference values, and in the bank a release, then a denial under a stricter resource
policy (version 2), then a denial of a contraindicated attestation. All through the real HTTP
API and a real guest client.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.admin_claims import normalize
from custodes._internal.clock import FrozenClock
from custodes._internal.jws import sign_compact
from custodes._internal.kbs_http import KbsRequestError
from custodes.admin_client import AdminClient, operator_audience
from custodes.guest.attester.sample import SampleAttester
from custodes.guest.kbs_client import KbsClient
from custodes.kbs.app import create_app
from custodes.kbs.broker import Broker, build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, OperatorConfig, ServerConfig
from custodes.kbs.keys import write_public_pem
from custodes.kbs.server import serve_in_thread
from custodes.protocol.resource import ResourcePath
from custodes.types.json import JsonObject

SAMPLE_RVS = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}
SECRET = ResourcePath("default", "key", "db-password")
OTHER = ResourcePath("apps", "tls", "server-key")
ALLOWED = ResourcePath("apps", "key", "only-this-one")
STRICT_POLICY = """package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	every _, appraisal in input.submods {
		appraisal["ear.status"] == "affirming"
	}
	data["resource-path"][2] == "only-this-one"
}
"""


@dataclass
class World:
    url: str
    broker: Broker
    clock: FrozenClock
    operator: ed25519.Ed25519PrivateKey
    keys: dict[str, ed25519.Ed25519PrivateKey]
    values: dict[str, str]  # tenant -> its secret value
    denials: list[str]  # the bank's correlation ids

    def base(self, tenant: str) -> str:
        return f"{self.url}/tenants/{tenant}"

    def ui(self, tenant: str | None) -> str:
        """The dashboard's URL of a tenant (``None``: the operator's)."""
        return f"{self.url}/operator/ui" if tenant is None else f"{self.base(tenant)}/ui"

    def token(self, who: str, tenant: str | None = None) -> str:
        """A fresh single-use token, as `custodes admin token` mints it, but on the broker's
        clock (which :func:`history` moves forward)."""
        if who == "operator":
            return mint(self.operator, operator_audience(self.url), who, self.clock.now())
        audience = self.base(tenant or who.split("-")[0])
        return mint(self.keys[who], audience, who, self.clock.now())

    def admin(self, who: str, tenant: str) -> AdminClient:
        return AdminClient(self.base(tenant), self.keys[who], subject=who)


def mint(key: ed25519.Ed25519PrivateKey, audience: str, subject: str, now: float) -> str:
    """What :func:`custodes.admin_client.admin_token` signs, at time ``now``."""
    claims: JsonObject = {
        "sub": subject,
        "aud": normalize(audience),
        "iat": int(now),
        "exp": int(now) + 120,
        "jti": secrets.token_hex(16),
    }
    return sign_compact({"alg": "EdDSA", "typ": "JWT"}, claims, key)


def pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _denied(base: str) -> str:
    with KbsClient(base, SampleAttester()) as guest:
        try:
            guest.get_resource(SECRET)
        except KbsRequestError as e:
            found = re.search(r"correlation id ([0-9a-f]{32})", str(e))
            if found is None:
                raise
            return found.group(1)
    raise AssertionError("the guest was not refused")


@contextlib.contextmanager
def dashboard_world(tmp_path: Path) -> Iterator[World]:
    operator = ed25519.Ed25519PrivateKey.generate()
    write_public_pem(tmp_path / "operator.pub.pem", operator.public_key())
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        operator=OperatorConfig(public_keys=(tmp_path / "operator.pub.pem",)),
    ).validate()
    clock = FrozenClock(time.time())
    broker = build_broker(config, clock=clock)
    keys = {
        n: ed25519.Ed25519PrivateKey.generate()
        for n in ("bank-admin", "bank-auditor", "insurer-admin")
    }
    values = {t: f"{t}-SECRET-{secrets.token_hex(8)}" for t in ("bank", "insurer")}
    with serve_in_thread(create_app(broker), config) as url:
        world = World(url, broker, clock, operator, keys, values, [])
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
            r = httpx.post(
                f"{url}/operator/v0/tenants",
                json=body,
                headers={"Authorization": f"Bearer {world.token('operator')}"},
            )
            r.raise_for_status()
            with world.admin(f"{tenant}-admin", tenant) as admin:
                admin.register_reference_values(SAMPLE_RVS)
                admin.put_resource(SECRET, values[tenant].encode())
                admin.put_resource(OTHER, f"{tenant}-OTHER-{secrets.token_hex(8)}".encode())
                admin.put_resource(ALLOWED, f"{tenant}-ALLOWED-{secrets.token_hex(8)}".encode())
        with KbsClient(world.base("bank"), SampleAttester()) as guest:
            if guest.get_resource(SECRET) != values["bank"].encode():
                raise AssertionError("the bank's guest did not get its secret")
        with world.admin("bank-admin", "bank") as admin:
            admin.set_policy("resource", STRICT_POLICY)
        world.denials.append(_denied(world.base("bank")))
        with world.admin("bank-admin", "bank") as admin:
            admin.register_reference_values({**SAMPLE_RVS, "svn": ["2"]})
        world.denials.append(_denied(world.base("bank")))
        with world.admin("bank-admin", "bank") as admin:
            admin.register_reference_values(SAMPLE_RVS)
        with KbsClient(world.base("insurer"), SampleAttester()) as guest:
            guest.get_resource(SECRET)
        yield world
    broker.close()


def history(world: World, steps: int, seconds: int) -> None:
    """Guests of the bank every ``seconds`` (clock moved forward): releases of the allowed
    resource, denials of the others. Admin API calls after this need :meth:`World.token`."""
    for i in range(steps):
        world.clock.advance(seconds)
        with KbsClient(world.base("bank"), SampleAttester()) as guest:
            guest.get_resource(ALLOWED)
            if i % 3 == 0:
                with contextlib.suppress(KbsRequestError):
                    guest.get_resource(OTHER)


def matrix_json(name: str, tmp: Path) -> str:
    """``custodes audit access-matrix -o json`` of a seed cluster (before.yaml, after.yaml),
    through the real CLI, as the admin runs it on their machine."""
    from custodes.cli import main

    vectors = Path(__file__).parent / "vectors" / "access-matrix"
    out = tmp / f"{name}.json"
    rc = main(
        ["audit", "access-matrix", "--rbac", str(vectors / name), "-o", "json", "--out", str(out)]
    )
    if rc != 0:
        raise AssertionError(f"custodes audit access-matrix failed ({rc})")
    return out.read_text()
