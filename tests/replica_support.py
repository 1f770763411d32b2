"""Several ``custodes serve`` replicas for the replica and fault tests (and ``bench/load.py``).

A replica set shares everything that must be equal on every replica:

* the store (one PostgreSQL database, its DSN in ``CUSTODES_POSTGRES_DSN``);
* the master key (``CUSTODES_MASTER_KEY``, base64 of 32 bytes), which unwraps every tenant's
  data key: a replica with another master key could not read a resource another one wrote;
* the EAR signing key (``[token] signing_key``): a token issued by one replica is checked by
  whichever replica serves the resource;
* the admin public key (``[admin] public_keys``);
* the audit signing key. The broker always loads it from ``<data_dir>/audit-signing-key.pem``
  (there is no setting for it), so the replicas share one ``data_dir`` that holds only these
  key files (the store is PostgreSQL, so nothing else is written there). The audit key is
  generated here, before any replica starts: two replicas creating it at the same moment
  would race on the file.

:class:`Guest` runs the RCAR handshake one request at a time against any replica, carrying
the ``kbs-session-id`` cookie by hand (its HTTP client never stores cookies, so nothing
reaches a replica that the test did not send).
"""

from __future__ import annotations

import base64
import contextlib
import http.cookiejar
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from custodes.admin_client import AdminClient, admin_token, load_admin_key
from custodes.guest.attester.sample import SampleAttester
from custodes.kbs.keys import (
    ADMIN_KEY_FILE,
    ADMIN_PUB_FILE,
    AUDIT_KEY_FILE,
    EAR_KEY_FILE,
    write_private_pem,
    write_public_pem,
)
from custodes.protocol.binding import runtime_data_digest, select_hash_algorithm
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import SAMPLE_REFERENCE_VALUES, ServedBroker, stop_served

MASTER_KEY_ENV = "CUSTODES_MASTER_KEY"
POSTGRES_DSN_ENV = "CUSTODES_POSTGRES_DSN"
SESSION_COOKIE = "kbs-session-id"
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
_START_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """The key files (and master key) every replica of one set shares."""

    directory: Path
    ear_key: Path
    admin_key: Path
    admin_pub: Path
    audit_key: Path
    master_key_b64: str

    def admin(self, url: str, *, timeout: float = 30.0) -> AdminClient:
        return AdminClient(url, load_admin_key(self.admin_key), timeout=timeout)

    def admin_headers(self, url: str) -> dict[str, str]:
        """A single-use admin token for one request to the replica at ``url``."""
        token = admin_token(load_admin_key(self.admin_key), audience=url)
        return {"Authorization": f"Bearer {token}"}


def make_keys(directory: Path) -> ClusterKeys:
    """Generate the shared keys into ``directory`` (which becomes the replicas' data_dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    ear_key = directory / EAR_KEY_FILE
    audit_key = directory / AUDIT_KEY_FILE
    admin_key = directory / ADMIN_KEY_FILE
    admin_pub = directory / ADMIN_PUB_FILE
    write_private_pem(ear_key, ec.generate_private_key(ec.SECP256R1()))
    write_private_pem(audit_key, ec.generate_private_key(ec.SECP256R1()))
    admin = ed25519.Ed25519PrivateKey.generate()
    write_private_pem(admin_key, admin)
    write_public_pem(admin_pub, admin.public_key())
    master = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    return ClusterKeys(directory, ear_key, admin_key, admin_pub, audit_key, master)


def write_config(
    path: Path,
    keys: ClusterKeys,
    *,
    backend: str = "postgres",
    data_dir: Path | None = None,
    session_ttl_seconds: int | None = None,
    checkpoint_every_entries: int | None = None,
) -> Path:
    """A ``custodes serve`` config for one replica set (the DSN comes from the environment)."""
    lines = [
        "[server]",
        'listen = "127.0.0.1:0"',
        f'data_dir = "{data_dir or keys.directory}"',
        "[attestation]",
        "unsafe_allow_sample_tee = true",
        "[token]",
        f'signing_key = "{keys.ear_key}"',
        "[admin]",
        f'public_keys = ["{keys.admin_pub}"]',
        "[storage]",
        f'backend = "{backend}"',
    ]
    if session_ttl_seconds is not None:
        lines += ["[limits]", f"session_ttl_seconds = {session_ttl_seconds}"]
    if checkpoint_every_entries is not None:
        lines += ["[audit]", f"checkpoint_every_entries = {checkpoint_every_entries}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def replica_env(keys: ClusterKeys, dsn: str | None = None) -> dict[str, str]:
    env = {**os.environ, MASTER_KEY_ENV: keys.master_key_b64}
    if dsn is not None:
        env[POSTGRES_DSN_ENV] = dsn
    else:
        env.pop(POSTGRES_DSN_ENV, None)
    return env


def start_replica(config: Path, env: Mapping[str, str]) -> ServedBroker:
    """``custodes serve --config CONFIG`` with ``env``; returns once it answers /healthz.

    The same as ``live_broker.start_served`` but with an environment (the master key and the
    DSN); stop it with ``live_broker.stop_served`` or :func:`kill9`.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    log: list[str] = []
    url = None
    deadline = time.monotonic() + _START_TIMEOUT_S
    while url is None and time.monotonic() < deadline:
        line = stderr.readline().decode(errors="replace")
        if not line:
            break
        log.append(line)
        m = re.search(r"at (http://127\.0\.0\.1:\d+)/kbs/v0", line)
        if m:
            url = m.group(1)
    if url is None:
        proc.kill()
        proc.wait()
        pytest.fail("custodes serve did not start:\n" + "".join(log))

    def drain() -> None:
        # Keep reading the log, or the server blocks once the pipe is full.
        for raw in stderr:
            log.append(raw.decode(errors="replace"))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    data_dir = config.parent
    served = ServedBroker(url, data_dir, proc, config, log, drainer)
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    kill9(served)
    pytest.fail("custodes serve did not answer /healthz:\n" + "".join(log))


def kill9(served: ServedBroker) -> None:
    """SIGKILL the replica (a crash: no shutdown code runs) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(served.process.pid, signal.SIGKILL)
    served.process.wait(timeout=30)
    served.drainer.join(timeout=5)
    for pipe in (served.process.stderr, served.process.stdout):
        if pipe is not None:
            pipe.close()


def stop(served: ServedBroker) -> None:
    """Stop a replica whether it still runs or was killed already."""
    if served.process.poll() is None:
        stop_served(served)
    else:
        kill9(served)


@contextlib.contextmanager
def replica_set(count: int, config: Path, env: Mapping[str, str]) -> Iterator[list[ServedBroker]]:
    """``count`` replicas of one config, stopped at the end (also after a failure)."""
    started: list[ServedBroker] = []
    try:
        for _ in range(count):
            started.append(start_replica(config, env))
        yield started
    finally:
        for served in started:
            stop(served)


def seed(url: str, keys: ClusterKeys, resources: Mapping[str, bytes]) -> None:
    """Register the sample TEE's reference values and store ``resources`` (path -> value)."""
    from custodes.protocol.resource import ResourcePath

    with keys.admin(url) as admin:
        admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
        for path, value in resources.items():
            admin.put_resource(ResourcePath.parse(path), value)


# --- guests ---------------------------------------------------------------------------------


def cookieless_client(timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
    """An HTTP client whose cookie jar refuses every cookie: cookies go only by hand."""
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.Client(timeout=timeout, cookies=jar, **kwargs)


def cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={session_id}"}


def error_variant(response: httpx.Response) -> str:
    """The ``ErrorInformation`` variant of an error response (fails the test if it is not one)."""
    body = response.json()
    assert isinstance(body, dict), response.text
    assert set(body) == {"type", "detail"}, body
    assert body["type"].startswith(ERROR_TYPE_PREFIX), body
    return str(body["type"][len(ERROR_TYPE_PREFIX) :])


class StepRefused(Exception):
    """A handshake step that had to succeed answered with an error status."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.request.url}: {response.status_code} {response.text}")
        self.response = response


@dataclass
class Challenge:
    session_id: str
    nonce: str
    extra_params: Any


class Guest:
    """A sample-TEE guest that sends each RCAR step to whichever replica the caller names.

    ``lie`` makes its evidence wrong: ``"binding"`` reports data for another key (the
    attestation is refused), ``"svn"`` an SVN outside the reference values (a token is
    issued, but not "affirming", so no resource may be released).
    """

    def __init__(self, http: httpx.Client, *, lie: str | None = None) -> None:
        if lie not in (None, "binding", "svn"):
            raise ValueError(f"unknown lie {lie!r}")
        self.http = http
        self.lie = lie
        self.key = TeeKeyPair.generate()
        self.token: str | None = None

    def auth(self, url: str) -> Challenge:
        r = self.http.post(
            f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
        )
        if r.status_code != 200:
            raise StepRefused(r)
        session_id = r.cookies.get(SESSION_COOKIE)
        assert session_id, r.headers
        body = r.json()
        return Challenge(session_id, body["nonce"], body["extra-params"])

    def attestation(self, challenge: Challenge) -> dict[str, Any]:
        jwk = self.key.public_jwk()
        algorithm = select_hash_algorithm(challenge.extra_params)
        digest = runtime_data_digest(challenge.nonce, jwk, "", algorithm)
        if self.lie == "binding":
            other = TeeKeyPair.generate().public_jwk()
            digest = runtime_data_digest(challenge.nonce, other, "", algorithm)
        evidence = SampleAttester().evidence(digest)
        if self.lie == "svn":
            evidence["svn"] = "0"
        return {
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }

    def attest(self, url: str, challenge: Challenge) -> httpx.Response:
        r = self.http.post(
            f"{url}/kbs/v0/attest",
            json=self.attestation(challenge),
            headers=cookie(challenge.session_id),
        )
        if r.status_code == 200:
            self.token = r.json()["token"]
        return r

    def resource(self, url: str, path: str, session_id: str | None = None) -> httpx.Response:
        """GET a resource with the session cookie (if given) or else the bearer token."""
        headers = cookie(session_id) if session_id else {}
        if session_id is None and self.token is not None:
            headers = {"Authorization": f"Bearer {self.token}"}
        return self.http.get(f"{url}/kbs/v0/resource/{path}", headers=headers)

    def open(self, response: httpx.Response) -> bytes:
        """The plaintext of a 200 resource response (JWE to this guest's key)."""
        return self.key.decrypt(response.json())
