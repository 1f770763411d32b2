"""Handshake throughput: K concurrent sample-TEE guests doing auth -> attest -> resource
against ``custodes serve``, and the same against the floor (``floor_app.py``) in the same run.

Prints handshakes/s, p50/p99 latency, errors, and the ratio custodes / floor.
Both servers run as one process each on loopback; the guests share this process, so both
measurements carry the same client cost.

Usage: .venv/bin/python bench/handshake.py [--guests 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from served import SAMPLE_REFERENCE_VALUES, start_sample_broker

from custodes.admin_client import AdminClient, load_admin_key
from custodes.guest.attester.sample import SampleAttester
from custodes.protocol.binding import runtime_data_digest, select_hash_algorithm
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair

RESOURCE = "default/key/bench"


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def one_handshake(http: httpx.AsyncClient, url: str) -> None:
    key = TeeKeyPair.generate()
    r = await http.post(
        f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    )
    r.raise_for_status()
    challenge = r.json()
    jwk = key.public_jwk()
    digest = runtime_data_digest(
        challenge["nonce"], jwk, "", select_hash_algorithm(challenge["extra-params"])
    )
    body = {
        "runtime-data": {"nonce": challenge["nonce"], "tee-pubkey": jwk},
        "tee-evidence": {
            "primary_evidence": SampleAttester().evidence(digest),
            "additional_evidence": "",
        },
    }
    r = await http.post(f"{url}/kbs/v0/attest", json=body)
    r.raise_for_status()
    token = r.json()["token"]
    r = await http.get(
        f"{url}/kbs/v0/resource/{RESOURCE}", headers={"Authorization": f"Bearer {token}"}
    )
    r.raise_for_status()
    key.decrypt(r.json())


async def drive(url: str, guests: int, seconds: float) -> Result:
    result = Result()
    deadline = time.perf_counter() + seconds

    async def guest() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            while time.perf_counter() < deadline:
                http.cookies.clear()
                t0 = time.perf_counter()
                try:
                    await one_handshake(http, url)
                except (httpx.HTTPError, ValueError, KeyError):
                    result.errors += 1
                    continue
                result.latencies.append(time.perf_counter() - t0)

    # warm-up
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(5):
            await one_handshake(http, url)
    start = time.perf_counter()
    await asyncio.gather(*(guest() for _ in range(guests)))
    result.elapsed = time.perf_counter() - start
    return result


def wait_port(port_file: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            url = f"http://127.0.0.1:{port_file.read_text()}"
            try:
                httpx.get(url + "/healthz")
                return url
            except httpx.HTTPError:
                pass
        if proc.poll() is not None:
            raise SystemExit("server exited early")
        time.sleep(0.05)
    raise SystemExit("server did not start")


def start_custodes(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc, url, data = start_sample_broker(tmp)
    try:
        with AdminClient(url, load_admin_key(data / "admin-key.pem")) as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            admin.put_resource(ResourcePath.parse(RESOURCE), b"custodes secret")
    except BaseException:
        proc.kill()
        raise
    return proc, url


def start_floor(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / "floor.port"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("floor_app.py")), str(port_file)],
        env={**os.environ, "PYTHONPATH": "src"},
    )
    return proc, wait_port(port_file, proc)


def report(name: str, r: Result) -> None:
    print(
        f"{name:<10} {r.rate:10.1f} {r.pct(0.5):9.2f} {r.pct(0.99):9.2f} "
        f"{len(r.latencies):8d} {r.errors:7d}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=32, help="concurrent guests (K)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement per server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        results = {}
        for name, start in (("floor", start_floor), ("custodes", start_custodes)):
            proc = None
            try:
                proc, url = start(tmp)
                results[name] = asyncio.run(drive(url, args.guests, args.seconds))
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=15)
    print(
        f"\nK = {args.guests} concurrent guests, {args.seconds:.0f} s each, "
        "auth -> attest -> resource per handshake"
    )
    print(f"{'server':<10} {'hs/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'count':>8} {'errors':>7}")
    for name, r in results.items():
        report(name, r)
    ratio = results["custodes"].rate / results["floor"].rate
    print(f"\nratio custodes / floor = {ratio:.2f} (aim >= 0.6)")
    median = {n: statistics.median(r.latencies) for n, r in results.items() if r.latencies}
    if len(median) == 2:
        print(f"median latency ratio custodes / floor = {median['custodes'] / median['floor']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
