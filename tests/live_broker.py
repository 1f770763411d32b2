"""Run a real broker on a free loopback port, for the integration tests.

``live_broker``: in-process uvicorn in a thread (a real HTTP server; the clock is injectable).
``served_broker``: ``custodes serve`` as a subprocess, driven through the real CLI.
The fixtures ``broker`` and ``served`` in conftest.py wrap these.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from custodes._internal.clock import FrozenClock
from custodes.admin_client import AdminClient, AdminKey, admin_token, load_admin_key
from custodes.kbs.app import create_app
from custodes.kbs.broker import Broker, build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.server import serve_in_thread

# What the default policy needs for a sample TEE to be "affirming".
SAMPLE_REFERENCE_VALUES = {
    "svn": ["1"],
    "launch_digest": ["abcde"],
    "major_version": 1,
    "minimum_minor_version": 0,
}


class AdminHeaders(Mapping[str, str]):
    """``Authorization: Bearer <admin JWT>`` for requests to ``audience``, minting a fresh
    token each time it is read: the broker accepts each token (its jti) once."""

    def __init__(self, key: AdminKey, audience: str, *, subject: str = "admin") -> None:
        self._key = key
        self._audience = audience
        self._subject = subject

    def __getitem__(self, name: str) -> str:
        if name != "Authorization":
            raise KeyError(name)
        return f"Bearer {admin_token(self._key, audience=self._audience, subject=self._subject)}"

    def __iter__(self) -> Iterator[str]:
        return iter(["Authorization"])

    def __len__(self) -> int:
        return 1


@dataclass
class LiveBroker:
    url: str
    broker: Broker
    clock: FrozenClock
    data_dir: Path

    def admin(self) -> AdminClient:
        return AdminClient(self.url, load_admin_key(self.data_dir / "admin-key.pem"))

    def admin_headers(self) -> AdminHeaders:
        """Headers of the default tenant's admin (the generated key, subject ``admin``)."""
        return AdminHeaders(load_admin_key(self.data_dir / "admin-key.pem"), self.url)


@contextlib.contextmanager
def live_broker(tmp_path: Path) -> Iterator[LiveBroker]:
    config = KbsConfig(
        server=ServerConfig(listen="127.0.0.1:0", data_dir=tmp_path / "data"),
        attestation=AttestationConfig(unsafe_allow_sample_tee=True),
    ).validate()
    clock = FrozenClock(time.time())
    b = build_broker(config, clock=clock)
    with serve_in_thread(create_app(b), config) as url:
        live = LiveBroker(url, b, clock, tmp_path / "data")
        with live.admin() as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
        yield live
    b.close()


def run_cli(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the real ``custodes`` command (as ``python -m custodes``)."""
    return subprocess.run(
        [sys.executable, "-m", "custodes", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


@dataclass
class ServedBroker:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    config: Path
    log: list[str]
    drainer: threading.Thread

    @property
    def admin_key(self) -> Path:
        return self.data_dir / "admin-key.pem"


def start_served(config: Path, data_dir: Path, *extra: str) -> ServedBroker:
    proc = subprocess.Popen(
        [sys.executable, "-m", "custodes", "serve", "--config", str(config), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    url = None
    deadline = time.monotonic() + 30
    lines = []
    while url is None and time.monotonic() < deadline:
        line = proc.stderr.readline().decode()
        if not line:
            break
        lines.append(line)
        m = re.search(r"at (http://127\.0\.0\.1:\d+)/kbs/v0", line)
        if m:
            url = m.group(1)
    if url is None:
        proc.kill()
        pytest.fail("custodes serve did not start:\n" + "".join(lines))
    # Keep draining the server's log (or it blocks once the pipe is full), keeping it for tests.
    log = lines
    stderr = proc.stderr

    def drain() -> None:
        for raw in stderr:
            log.append(raw.decode(errors="replace"))

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return ServedBroker(url, data_dir, proc, config, log, drainer)
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("custodes serve did not answer /healthz")


def stop_served(served: ServedBroker) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()
    served.drainer.join(timeout=5)
    if served.process.stderr:
        served.process.stderr.close()
    if served.process.stdout:
        served.process.stdout.close()


@contextlib.contextmanager
def served_broker(tmp_path: Path) -> Iterator[ServedBroker]:
    data_dir = tmp_path / "data"
    config = tmp_path / "serve.toml"
    config.write_text(
        "[server]\n"
        'listen = "127.0.0.1:0"\n'
        f'data_dir = "{data_dir}"\n'
        # One process: tests read /metrics, whose counters are per worker process.
        "workers = 1\n"
        "[attestation]\n"
        "unsafe_allow_sample_tee = true\n"
    )
    s = start_served(config, data_dir)
    try:
        yield s
    finally:
        stop_served(s)
