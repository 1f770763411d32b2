"""Three ``custodes serve`` replicas on one PostgreSQL database, no sticky sessions.

Every request of a handshake may land on any replica: the session, its single-use challenge,
the resources, the policies and the audit chain live in the shared database, and every
replica has the same keys (see ``tests/replica_support.py`` for which and why).
"""

from __future__ import annotations

import io
import itertools
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes.audit.entry import key_id
from custodes.audit.verify import verify_jsonl
from custodes.protocol.resource import ResourcePath
from live_broker import ServedBroker
from pg_server import running_postgres
from replica_support import (
    ClusterKeys,
    Guest,
    cookieless_client,
    error_variant,
    make_keys,
    replica_env,
    replica_set,
    seed,
    write_config,
)

SECRET_PATH = "default/key/shared"
SECRET = b"one secret, three replicas"
PARALLEL_ATTESTS = 10


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ClusterKeys, list[ServedBroker]]]:
    root = tmp_path_factory.mktemp("replicas")
    keys = make_keys(root / "keys")
    # Audit checkpoints every few entries: the replicas race for them too (docs/audit.md).
    config = write_config(root / "keys" / "serve.toml", keys, checkpoint_every_entries=4)
    with running_postgres() as pg:
        dsn = pg.create_database()
        with replica_set(3, config, replica_env(keys, dsn)) as replicas:
            seed(replicas[0].url, keys, {SECRET_PATH: SECRET})
            yield keys, replicas


@pytest.fixture
def keys(cluster: tuple[ClusterKeys, list[ServedBroker]]) -> ClusterKeys:
    return cluster[0]


@pytest.fixture
def urls(cluster: tuple[ClusterKeys, list[ServedBroker]]) -> list[str]:
    return [r.url for r in cluster[1]]


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with cookieless_client() as client:
        yield client


def attested(http: httpx.Client, url: str) -> tuple[Guest, str]:
    guest = Guest(http)
    challenge = guest.auth(url)
    r = guest.attest(url, challenge)
    assert r.status_code == 200, r.text
    return guest, challenge.session_id


# --- the handshake across replicas ---------------------------------------------------------


def test_handshake_hops_across_three_replicas(http: httpx.Client, urls: list[str]) -> None:
    a, b, c = urls
    guest = Guest(http)
    challenge = guest.auth(a)
    r = guest.attest(b, challenge)
    assert r.status_code == 200, r.text
    # The cookie of the session attested on B is honoured by C: the token is in the store.
    r = guest.resource(c, SECRET_PATH, session_id=challenge.session_id)
    assert r.status_code == 200, r.text
    assert guest.open(r) == SECRET


def test_token_from_one_replica_is_accepted_by_the_others(
    http: httpx.Client, urls: list[str]
) -> None:
    guest, _ = attested(http, urls[0])
    for url in urls:
        r = guest.resource(url, SECRET_PATH)  # bearer token, no cookie
        assert r.status_code == 200, r.text
        assert guest.open(r) == SECRET


def test_unknown_session_is_refused_on_every_replica(http: httpx.Client, urls: list[str]) -> None:
    guest = Guest(http)
    challenge = guest.auth(urls[0])
    challenge.session_id = "0" * 32
    for url in urls:
        r = guest.attest(url, challenge)
        assert r.status_code == 401
        assert error_variant(r) == "AttestationError"


# --- single-use challenges ------------------------------------------------------------------


def test_challenge_used_on_one_replica_is_refused_on_another(
    http: httpx.Client, urls: list[str]
) -> None:
    a, b, c = urls
    guest = Guest(http)
    challenge = guest.auth(c)
    first = guest.attest(a, challenge)
    assert first.status_code == 200, first.text
    second = guest.attest(b, challenge)
    assert second.status_code == 401
    assert error_variant(second) == "AttestationError"
    assert "already used" in second.json()["detail"]


def test_failed_attestation_burns_the_challenge_on_every_replica(
    http: httpx.Client, urls: list[str]
) -> None:
    a, b, c = urls
    liar = Guest(http, lie="binding")
    challenge = liar.auth(a)
    r = liar.attest(a, challenge)
    assert r.status_code == 401
    assert error_variant(r) == "AttestationError"
    # The same session with correct evidence, on the other replicas: refused, the challenge
    # was spent by the failed attempt.
    honest = Guest(http)
    for url in (b, c):
        r = honest.attest(url, challenge)
        assert r.status_code == 401
        assert "already used" in r.json()["detail"]


@pytest.mark.parametrize("round_", range(3))
def test_parallel_attests_of_one_session_have_one_winner(urls: list[str], round_: int) -> None:
    with cookieless_client() as setup:
        guest = Guest(setup)
        challenge = guest.auth(urls[round_ % len(urls)])
        body = guest.attestation(challenge)
    barrier = threading.Barrier(PARALLEL_ATTESTS)

    def attest(i: int) -> httpx.Response:
        with cookieless_client() as client:
            url = urls[i % len(urls)]
            barrier.wait(timeout=30)
            return client.post(
                f"{url}/kbs/v0/attest",
                json=body,
                headers={"Cookie": f"kbs-session-id={challenge.session_id}"},
            )

    with ThreadPoolExecutor(PARALLEL_ATTESTS) as pool:
        responses = list(pool.map(attest, range(PARALLEL_ATTESTS)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (PARALLEL_ATTESTS - 1), [r.text for r in responses]
    assert {error_variant(r) for r in responses if r.status_code == 401} == {"AttestationError"}


# --- admin writes and reads -----------------------------------------------------------------


def test_admin_write_on_one_replica_is_visible_on_the_others_at_once(
    http: httpx.Client, keys: ClusterKeys, urls: list[str]
) -> None:
    a, b, c = urls
    path = ResourcePath.parse("default/key/written-on-a")
    with keys.admin(a) as admin_a, keys.admin(b) as admin_b, keys.admin(c) as admin_c:
        admin_a.put_resource(path, b"v1")
        # No wait, no cache to expire: the next request on B and C sees it.
        assert admin_b.resource_info(path)["size"] == 2
        assert str(path) in admin_c.list_resources()
        guest, session_id = attested(http, b)
        r = guest.resource(c, str(path), session_id=session_id)
        assert r.status_code == 200, r.text
        assert guest.open(r) == b"v1"
        admin_b.put_resource(path, b"version two")
        r = guest.resource(a, str(path), session_id=session_id)
        assert guest.open(r) == b"version two"
        admin_c.delete_resource(path)
        r = guest.resource(a, str(path), session_id=session_id)
        assert r.status_code == 404
        assert error_variant(r) == "ResourceNotFound"


def test_reference_values_registered_on_one_replica_gate_attestation_on_another(
    http: httpx.Client, keys: ClusterKeys, urls: list[str]
) -> None:
    a, b, _ = urls
    with keys.admin(a) as admin:
        admin.register_reference_values({"svn": ["1", "7"]})
    try:
        guest = Guest(http)
        challenge = guest.auth(b)
        body = guest.attestation(challenge)
        body["tee-evidence"]["primary_evidence"]["svn"] = "7"
        r = http.post(
            f"{b}/kbs/v0/attest",
            json=body,
            headers={"Cookie": f"kbs-session-id={challenge.session_id}"},
        )
        assert r.status_code == 200, r.text
        r = guest.resource(a, SECRET_PATH, session_id=challenge.session_id)
        assert r.status_code == 200, r.text
    finally:
        with keys.admin(a) as admin:
            admin.register_reference_values({"svn": ["1"]})


RESOURCE_POLICY_TEMPLATE = """package policy
import rego.v1
default allow := false
# revision {n}
allow if {{
    input.submods.cpu0["ear.status"] == "affirming"
}}
"""


def test_policy_versions_are_the_same_on_every_replica(keys: ClusterKeys, urls: list[str]) -> None:
    clients = [keys.admin(url) for url in urls]
    try:
        before = clients[0].policy_versions("resource", "resource-policy")
        start = len(before)
        # Three new versions, each uploaded through another replica.
        for n, admin in enumerate(clients, start=1):
            admin.set_policy("resource", RESOURCE_POLICY_TEMPLATE.format(n=n))
        expected = [{"version": v, "active": v == start + 3} for v in range(1, start + 4)]
        for admin in clients:
            assert admin.policy_versions("resource", "resource-policy") == expected
            assert "revision 3" in admin.get_policy("resource", "resource-policy")
        # Roll back through one replica: every replica serves the older text at once.
        clients[2].activate_policy("resource", "resource-policy", start + 1)
        for admin in clients:
            versions = admin.policy_versions("resource", "resource-policy")
            assert [v["version"] for v in versions if v["active"]] == [start + 1]
            assert "revision 1" in admin.get_policy("resource", "resource-policy")
            assert "revision 2" in admin.get_policy(
                "resource", "resource-policy", version=start + 2
            )
    finally:
        for admin in clients:
            admin.close()


def test_concurrent_policy_uploads_get_distinct_versions(
    keys: ClusterKeys, urls: list[str]
) -> None:
    uploads = 6
    with keys.admin(urls[0]) as admin:
        start = len(admin.policy_versions("resource", "resource-policy"))
    barrier = threading.Barrier(uploads)

    def upload(i: int) -> None:
        with keys.admin(urls[i % len(urls)]) as admin:
            barrier.wait(timeout=30)
            admin.set_policy("resource", RESOURCE_POLICY_TEMPLATE.format(n=f"c{i}"))

    with ThreadPoolExecutor(uploads) as pool:
        list(pool.map(upload, range(uploads)))
    with keys.admin(urls[1]) as admin:
        versions = admin.policy_versions("resource", "resource-policy")
        # Every upload got its own version number: none overwrote another.
        assert [v["version"] for v in versions] == list(range(1, start + uploads + 1))
        texts = {
            admin.get_policy("resource", "resource-policy", version=v)
            for v in range(start + 1, start + uploads + 1)
        }
        assert texts == {RESOURCE_POLICY_TEMPLATE.format(n=f"c{i}") for i in range(uploads)}
        active = [v["version"] for v in versions if v["active"]]
        assert len(active) == 1
        # The active text is the text of the active version, whatever the interleaving.
        assert admin.get_policy("resource", "resource-policy") == admin.get_policy(
            "resource", "resource-policy", version=active[0]
        )


# --- the audit chain ------------------------------------------------------------------------


def test_audit_chain_appended_by_every_replica_verifies(
    http: httpx.Client, keys: ClusterKeys, urls: list[str]
) -> None:
    with keys.admin(urls[0]) as admin:
        start = len(admin.export_audit().splitlines())
    # Appends from every replica, some at the same time: admin writes and handshakes.
    writers = 6

    def work(i: int) -> None:
        url = urls[i % len(urls)]
        with keys.admin(url) as admin, cookieless_client() as client:
            admin.put_resource(ResourcePath.parse(f"default/audit/r{i}"), b"x")
            guest = Guest(client)
            challenge = guest.auth(url)
            assert guest.attest(urls[(i + 1) % len(urls)], challenge).status_code == 200
            r = guest.resource(urls[(i + 2) % len(urls)], SECRET_PATH, challenge.session_id)
            assert r.status_code == 200

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(work, range(writers)))
    exports = []
    for url in urls:
        with keys.admin(url) as admin:
            exports.append(admin.export_audit())
            pem = admin.audit_public_key()
    # One chain, seen alike by every replica, signed by the one shared audit key: each export
    # is the one before it plus the signed checkpoint it appended (docs/audit.md).
    for before, after in itertools.pairwise(exports):
        assert after.startswith(before) and after.count(b"\n") == before.count(b"\n") + 1
    public = serialization.load_pem_public_key(pem)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for data in exports:
        report = verify_jsonl(io.BytesIO(data), {key_id(public): public})
        assert report.ok and report.complete, report
    # Periodic checkpoints, written by whichever replica appended the N-th entry, each true to
    # the one chain (the verifier checked size and head); no two periodic ones in a row.
    marks = [
        entry["event"]["reason"] if entry["kind"] == "checkpoint" else None
        for entry in map(json.loads, exports[-1].splitlines())
    ]
    assert marks.count("entries") >= (3 * writers) // 4 - 1
    assert all(b != "entries" or a is None for a, b in itertools.pairwise(marks))
    # put + attestation + release per worker.
    assert len(exports[0].splitlines()) >= start + 3 * writers
