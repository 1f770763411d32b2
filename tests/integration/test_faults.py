"""Crashes and outages: kill -9 of a replica under load, kill -9 during admin writes (SQLite
and PostgreSQL), kill -9 and restart of the PostgreSQL server under a running broker.

What must hold: clients that retry on another replica finish; no acknowledged write is lost;
no secret reaches a guest whose attestation failed; during a database outage every request
ends promptly with a 5xx ``ErrorInformation`` and the broker serves again as soon as the
database is back, without a restart. Nothing here asserts a timing: every wait is bounded
(HTTP timeouts, deadlines) only so that a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from custodes.protocol.resource import ResourcePath
from pg_server import PgServer, running_postgres
from replica_support import (
    ClusterKeys,
    Guest,
    StepRefused,
    cookieless_client,
    error_variant,
    kill9,
    make_keys,
    replica_env,
    replica_set,
    seed,
    start_replica,
    stop,
    write_config,
)

SECRET_PATH = "default/key/fault"
SECRET = b"released only to attested guests"
HANDSHAKES_PER_GUEST = 4
GOOD_GUESTS = 6
BAD_GUESTS = 4
MAX_TRIES = 20
# Bounds for the waits below: reached only if something hangs.
DEADLINE_S = 60.0
HTTP_TIMEOUT_S = 20.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def value_of(name: str) -> bytes:
    """The value written under ``name`` (distinct per name, so a mix-up shows)."""
    return hashlib.sha256(name.encode()).hexdigest().encode() * 4


@pytest.fixture
def pg() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def keys(tmp_path: Path) -> ClusterKeys:
    return make_keys(tmp_path / "keys")


# --- clients that retry on another replica --------------------------------------------------


@dataclass
class Failover:
    """Picks a replica per request and forgets the ones that stopped answering."""

    urls: list[str]
    dead: set[str] = field(default_factory=set)
    failures: int = 0

    def pick(self) -> str:
        alive = [u for u in self.urls if u not in self.dead] or self.urls
        return random.choice(alive)

    def failed(self, url: str, error: Exception) -> None:
        self.failures += 1
        if isinstance(error, httpx.TransportError):
            self.dead.add(url)


@dataclass
class GuestOutcome:
    completed: int = 0
    retries: int = 0
    resource_200s: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


def good_guest(urls: list[str], outcome: GuestOutcome) -> None:
    """HANDSHAKES_PER_GUEST handshakes, each step on any live replica, retried from /auth."""
    route = Failover(urls)
    with cookieless_client(HTTP_TIMEOUT_S) as http:
        while outcome.completed < HANDSHAKES_PER_GUEST:
            if route.failures > MAX_TRIES:
                return
            guest = Guest(http)
            url = route.pick()
            try:
                challenge = guest.auth(url)
                url = route.pick()
                r = guest.attest(url, challenge)
                if r.status_code != 200:
                    raise StepRefused(r)
                url = route.pick()
                r = guest.resource(url, SECRET_PATH, session_id=challenge.session_id)
                if r.status_code != 200:
                    raise StepRefused(r)
                assert guest.open(r) == SECRET
                outcome.completed += 1
            except (httpx.TransportError, StepRefused) as e:
                route.failed(url, e)
                outcome.retries += 1


def bad_guest(urls: list[str], lie: str, outcome: GuestOutcome) -> None:
    """A guest whose evidence is wrong: it tries every way to a secret, and must get none."""
    route = Failover(urls)
    with cookieless_client(HTTP_TIMEOUT_S) as http:
        while outcome.completed < HANDSHAKES_PER_GUEST and route.failures <= MAX_TRIES:
            guest = Guest(http, lie=lie)
            url = route.pick()
            try:
                challenge = guest.auth(url)
                url = route.pick()
                answers = [guest.attest(url, challenge)]
                url = route.pick()
                releases = [guest.resource(url, SECRET_PATH, challenge.session_id)]
                if guest.token is not None:
                    url = route.pick()
                    releases.append(guest.resource(url, SECRET_PATH))
            except (httpx.TransportError, StepRefused) as e:
                route.failed(url, e)
                continue
            for r in answers + releases:
                if r.status_code >= 400:
                    variant = error_variant(r)
                    outcome.refusals[variant] = outcome.refusals.get(variant, 0) + 1
            outcome.resource_200s += sum(r.status_code == 200 for r in releases)
            outcome.completed += 1


class Writer(threading.Thread):
    """Admin writes of distinct resources; a write counts only once acknowledged (200)."""

    def __init__(self, name: str, urls: list[str], keys: ClusterKeys, *, failover: bool) -> None:
        super().__init__(daemon=True)
        self.prefix = name
        self.route = Failover(urls)
        self.keys = keys
        self.failover = failover
        self.acked: list[str] = []
        self.unacked: list[str] = []
        self.errors: list[int] = []
        self.stop = threading.Event()
        self.crashed: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.crashed = e

    def _run(self) -> None:
        with cookieless_client(HTTP_TIMEOUT_S) as http:
            i = 0
            while not self.stop.is_set():
                name = f"default/{self.prefix}/w{i}"
                url = self.route.pick()
                try:
                    r = http.post(
                        f"{url}/kbs/v0/resource/{name}",
                        content=value_of(name),
                        headers={
                            **self.keys.admin_headers(url),
                            "Content-Type": "application/octet-stream",
                        },
                    )
                except httpx.TransportError as e:
                    self.route.failed(url, e)
                    self._not_acked(name)
                    if not self.failover:
                        time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    self.acked.append(name)
                    i += 1
                    continue
                # Refused while the store is down: a clean ErrorInformation, then retry.
                assert r.status_code >= 500, r.text
                error_variant(r)
                self.errors.append(r.status_code)
                self._not_acked(name)
                time.sleep(0.05)

    def _not_acked(self, name: str) -> None:
        if name not in self.unacked:
            self.unacked.append(name)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=DEADLINE_S)
        assert not self.is_alive(), "writer did not stop"
        if self.crashed is not None:
            raise self.crashed


def read_back(url: str, names: list[str]) -> dict[str, bytes | None]:
    """Each resource's value as released to a freshly attested guest (None: 404)."""
    found: dict[str, bytes | None] = {}
    with cookieless_client(HTTP_TIMEOUT_S) as http:
        guest = Guest(http)
        challenge = guest.auth(url)
        assert guest.attest(url, challenge).status_code == 200
        for name in names:
            r = guest.resource(url, name, session_id=challenge.session_id)
            if r.status_code == 404:
                found[name] = None
                continue
            assert r.status_code == 200, r.text
            found[name] = guest.open(r)
    return found


def assert_writes_kept(url: str, writers: list[Writer]) -> int:
    """Every acknowledged write is there with its value; an unacknowledged one is there whole
    or not at all. Returns the number of acknowledged writes checked."""
    acked = [n for w in writers for n in w.acked]
    unacked = [n for w in writers for n in w.unacked if n not in w.acked]
    found = read_back(url, acked + unacked)
    missing = [n for n in acked if found[n] != value_of(n)]
    assert not missing, f"acknowledged writes lost: {missing}"
    for name in unacked:
        assert found[name] in (None, value_of(name)), name
    return len(acked)


# --- kill -9 of a replica under load --------------------------------------------------------


def test_kill9_of_a_replica_under_load(pg: PgServer, keys: ClusterKeys, tmp_path: Path) -> None:
    config = write_config(tmp_path / "serve.toml", keys)
    env = replica_env(keys, pg.create_database())
    with replica_set(2, config, env) as replicas:
        urls = [r.url for r in replicas]
        seed(urls[0], keys, {SECRET_PATH: SECRET})
        good = [GuestOutcome() for _ in range(GOOD_GUESTS)]
        lies = ["binding", "svn"] * (BAD_GUESTS // 2)
        bad = [GuestOutcome() for _ in lies]
        threads = [
            threading.Thread(target=good_guest, args=(urls, o), daemon=True) for o in good
        ] + [
            threading.Thread(target=bad_guest, args=(urls, lie, o), daemon=True)
            for lie, o in zip(lies, bad, strict=True)
        ]
        writer = Writer("replica-kill", urls, keys, failover=True)
        writer.start()
        for t in threads:
            t.start()
        wait_until(
            lambda: sum(o.completed for o in good) >= GOOD_GUESTS and len(writer.acked) >= 5,
            "load on both replicas",
        )
        kill9(replicas[0])
        acked_at_kill = len(writer.acked)
        for t in threads:
            t.join(timeout=DEADLINE_S)
        assert not any(t.is_alive() for t in threads), "a guest did not finish"
        # Writes go on through the survivor.
        wait_until(lambda: len(writer.acked) >= acked_at_kill + 5, "writes after the kill")
        writer.finish()

        assert [o.completed for o in good] == [HANDSHAKES_PER_GUEST] * GOOD_GUESTS
        # The kill was felt: clients failed on the dead replica and went on on the other.
        assert sum(o.retries for o in good) + writer.route.failures > 0
        assert [o.completed for o in bad] == [HANDSHAKES_PER_GUEST] * len(bad)
        assert sum(o.resource_200s for o in bad) == 0, "a secret reached a failed guest"
        refusals: dict[str, int] = {}
        for o in bad:
            for variant, n in o.refusals.items():
                refusals[variant] = refusals.get(variant, 0) + n
        # Both lies were tried and refused: the binding at /attest, the SVN at /resource.
        assert refusals.get("AttestationError", 0) >= HANDSHAKES_PER_GUEST
        assert refusals.get("PolicyDeny", 0) >= HANDSHAKES_PER_GUEST
        assert assert_writes_kept(urls[1], [writer]) >= acked_at_kill + 5


# --- kill -9 of the broker during admin writes ----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill9_of_the_broker_during_admin_writes_loses_no_acknowledged_write(
    backend: str, keys: ClusterKeys, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    dsn = None
    if backend == "postgres":
        pg: PgServer = request.getfixturevalue("pg")
        dsn = pg.create_database()
    config = write_config(tmp_path / "serve.toml", keys, backend=backend)
    env = replica_env(keys, dsn)
    served = start_replica(config, env)
    try:
        seed(served.url, keys, {})
        writers = [Writer(f"kill-{i}", [served.url], keys, failover=False) for i in range(3)]
        for w in writers:
            w.start()
        wait_until(lambda: sum(len(w.acked) for w in writers) >= 30, "acknowledged writes")
        kill9(served)
        for w in writers:
            w.finish()
        # The same config and data: the store opens cleanly after the crash.
        served = start_replica(config, env)
        assert assert_writes_kept(served.url, writers) >= 30
        # And it takes writes again.
        with keys.admin(served.url) as admin:
            admin.put_resource(ResourcePath.parse("default/kill/after"), b"after")
            assert admin.resource_info(ResourcePath.parse("default/kill/after"))["size"] == 5
    finally:
        stop(served)


# --- the PostgreSQL server crashes or restarts under a running broker -------------------------


def test_kill9_of_postgres_during_admin_writes(
    pg: PgServer, keys: ClusterKeys, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "serve.toml", keys)
    with replica_set(1, config, replica_env(keys, pg.create_database())) as (served,):
        seed(served.url, keys, {})
        writers = [Writer(f"pgkill-{i}", [served.url], keys, failover=False) for i in range(2)]
        for w in writers:
            w.start()
        wait_until(lambda: sum(len(w.acked) for w in writers) >= 20, "acknowledged writes")
        pg.kill9()
        # While the database is down, writes are refused cleanly (5xx ErrorInformation).
        errors_before = sum(len(w.errors) for w in writers)
        wait_until(
            lambda: sum(len(w.errors) for w in writers) >= errors_before + 4,
            "refused writes during the outage",
        )
        acked_in_outage = sum(len(w.acked) for w in writers)
        pg.start()  # crash recovery
        # The same broker process: no restart.
        wait_until(
            lambda: sum(len(w.acked) for w in writers) >= acked_in_outage + 10,
            "writes after the database came back",
        )
        for w in writers:
            w.finish()
        assert served.process.poll() is None
        assert all(500 <= s < 600 for w in writers for s in w.errors)
        assert assert_writes_kept(served.url, writers) >= acked_in_outage + 10


def assert_clean_5xx(response: httpx.Response) -> None:
    assert 500 <= response.status_code < 600, response.text
    error_variant(response)
    assert "Traceback" not in response.text


def test_postgres_restart_broker_recovers_without_restart(
    pg: PgServer, keys: ClusterKeys, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "serve.toml", keys)
    with replica_set(1, config, replica_env(keys, pg.create_database())) as (served,):
        url = served.url
        seed(url, keys, {SECRET_PATH: SECRET})
        with cookieless_client(HTTP_TIMEOUT_S) as http:
            attested = Guest(http)
            session = attested.auth(url)
            assert attested.attest(url, session).status_code == 200
            pending = Guest(http)
            challenge = pending.auth(url)  # its /attest comes after the outage

            pg.stop()
            # Every kind of request fails cleanly and promptly (the HTTP timeout would fail
            # the test on a hang): handshake steps, a release, an admin write, health.
            assert_clean_5xx(
                http.post(
                    f"{url}/kbs/v0/auth",
                    json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
                )
            )
            assert_clean_5xx(pending.attest(url, challenge))
            assert_clean_5xx(attested.resource(url, SECRET_PATH, session.session_id))
            assert_clean_5xx(attested.resource(url, SECRET_PATH))
            assert_clean_5xx(
                http.post(
                    f"{url}/kbs/v0/resource/default/key/outage",
                    content=b"x",
                    headers=keys.admin_headers(url),
                )
            )
            assert_clean_5xx(http.get(f"{url}/healthz"))

            pg.start()
            assert http.get(f"{url}/healthz").status_code == 200
            # The challenge issued before the outage is still usable: the refused /attest
            # failed reading the session, before it could spend the challenge.
            r = pending.attest(url, challenge)
            assert r.status_code == 200, r.text
            r = pending.resource(url, SECRET_PATH, challenge.session_id)
            assert r.status_code == 200, r.text
            assert pending.open(r) == SECRET
            r = attested.resource(url, SECRET_PATH)
            assert attested.open(r) == SECRET
            fresh = Guest(http)
            c = fresh.auth(url)
            assert fresh.attest(url, c).status_code == 200
            with keys.admin(url) as admin:
                admin.put_resource(ResourcePath.parse("default/key/outage"), b"after")
        assert served.process.poll() is None


def test_requests_during_a_postgres_crash_fail_cleanly(
    pg: PgServer, keys: ClusterKeys, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "serve.toml", keys)
    with replica_set(2, config, replica_env(keys, pg.create_database())) as servers:
        seed(servers[0].url, keys, {SECRET_PATH: SECRET})
        pg.kill9()
        with cookieless_client(HTTP_TIMEOUT_S) as http:
            for s in servers:
                assert_clean_5xx(
                    http.post(
                        f"{s.url}/kbs/v0/auth",
                        json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
                    )
                )
            pg.start()
            guest = Guest(http)
            challenge = guest.auth(servers[0].url)
            assert guest.attest(servers[1].url, challenge).status_code == 200
            r = guest.resource(servers[0].url, SECRET_PATH, challenge.session_id)
            assert guest.open(r) == SECRET
