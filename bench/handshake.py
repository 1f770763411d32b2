"""Handshake throughput and server CPU per handshake: ``custodes serve`` against the floor
(``floor_app.py``), measured in the same run, in interleaved rounds.

The guests (sample TEE, ``auth -> attest -> resource`` in a loop, asyncio) run in --procs
client processes, --guests in all, so one client interpreter is never the ceiling. Each round
measures both servers for --seconds each (the order alternates between rounds). For each:
handshakes/s, p50/p99 latency, errors, and **server CPU seconds per handshake** from the
kernel's accounting of the server's process tree (/proc/<pid>/stat utime+stime, workers
included; :func:`served.cpu_seconds`), beside the clients' CPU per handshake, and the cores
each side kept busy (CPU seconds / window): server + client near the machine's core count
means the machine, not the server, is the ceiling. Printed: every
round, the medians, and the ratios throughput custodes/floor and CPU floor/custodes (both 1.0
when custodes costs what the floor costs). Server and clients share the machine's cores.

The broker runs the shipped policies unless ``--tenant-policies``: then copies changed by a
comment, which run as every tenant-written policy does, in budgeted worker processes.

Usage: .venv/bin/python bench/handshake.py [--guests 32] [--procs 4] [--seconds 8] [--rounds 3]
       [--workers N] [--tenant-policies]
"""

from __future__ import annotations

import argparse
import asyncio
import http.cookiejar
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path

import httpx
from served import SAMPLE_REFERENCE_VALUES, cpu_seconds, start_sample_broker

from custodes.admin_client import AdminClient, load_admin_key
from custodes.guest.attester.sample import SampleAttester
from custodes.policy.defaults import default_policy
from custodes.protocol.binding import runtime_data_digest, select_hash_algorithm
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair

RESOURCE = "default/key/bench"
WARM_UP = 3  # handshakes per client process before the window opens
START_DELAY = 2.0  # seconds between scheduling a measurement and its window opening


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def server_ms(self) -> float:
        return self.server_cpu / self.count * 1000 if self.count else float("nan")

    def client_ms(self) -> float:
        return self.client_cpu / self.count * 1000 if self.count else float("nan")


async def one_handshake(http: httpx.AsyncClient, url: str, resource: str = RESOURCE) -> None:
    """auth -> attest -> resource as a fresh guest (new TEE key, new session)."""
    key, token = await attested(http, url)
    r = await http.get(
        f"{url}/kbs/v0/resource/{resource}", headers={"Authorization": f"Bearer {token}"}
    )
    r.raise_for_status()
    key.decrypt(r.json())


async def attested(http: httpx.AsyncClient, url: str) -> tuple[TeeKeyPair, str]:
    """auth -> attest as a fresh guest: its TEE key and EAR token."""
    key = TeeKeyPair.generate()
    r = await http.post(
        f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    )
    r.raise_for_status()
    challenge = r.json()
    session = {"Cookie": f"kbs-session-id={r.cookies['kbs-session-id']}"}
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
    r = await http.post(f"{url}/kbs/v0/attest", json=body, headers=session)
    r.raise_for_status()
    return key, str(r.json()["token"])


class _Refuse(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: object, request: object) -> bool:
        return False


def no_cookies() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing, so guests sharing a client never send each other's session
    cookie (the broker prefers a session cookie to a bearer token). Passed to httpx as the
    jar itself: an ``httpx.Cookies`` would be copied into a default jar."""
    return http.cookiejar.CookieJar(policy=_Refuse())


async def guests_until(
    url: str, guests: int, start_at: float, seconds: float, resource: str = RESOURCE
) -> tuple[list[float], int, float, float]:
    """Run ``guests`` concurrent guests from ``start_at`` (epoch seconds) for ``seconds``;
    returns (latencies, errors, end time, this process's CPU seconds in the window)."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=guests, max_keepalive_connections=guests)
    async with httpx.AsyncClient(timeout=120, limits=limits, cookies=no_cookies()) as http:
        for _ in range(WARM_UP):
            await one_handshake(http, url, resource)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu0 = time.process_time()
        deadline = start_at + seconds

        async def guest() -> None:
            nonlocal errors
            while time.time() < deadline:
                t0 = time.perf_counter()
                try:
                    await one_handshake(http, url, resource)
                except (httpx.HTTPError, ValueError, KeyError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(guest() for _ in range(guests)))
    return latencies, errors, time.time(), time.process_time() - cpu0


def client_process(
    url: str, guests: int, start_at: float, seconds: float, resource: str = RESOURCE
) -> tuple[list[float], int, float, float]:
    """One client process's share (run in a pool process)."""
    return asyncio.run(guests_until(url, guests, start_at, seconds, resource))


def measure(
    pool: Pool, procs: int, url: str, server_pid: int, guests: int, seconds: float
) -> Result:
    start_at = time.time() + START_DELAY
    shares = [guests // procs + (1 if i < guests % procs else 0) for i in range(procs)]
    pending = pool.starmap_async(
        client_process, [(url, share, start_at, seconds) for share in shares if share]
    )
    time.sleep(max(0.0, start_at - time.time()))
    cpu0 = cpu_seconds(server_pid)
    parts = pending.get()
    server_cpu = cpu_seconds(server_pid) - cpu0
    result = Result(server_cpu=server_cpu)
    for latencies, errors, end, client_cpu in parts:
        result.latencies.extend(latencies)
        result.errors += errors
        result.elapsed = max(result.elapsed, end - start_at)
        result.client_cpu += client_cpu
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


def start_custodes(
    tmp: Path, args: list[str], *, tenant_policies: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """``tenant_policies``: upload copies of the shipped policies changed by a comment, so that
    they run as a tenant's policies do (in budgeted worker processes), not as the shipped ones
    (in the calling thread)."""
    proc, url, data = start_sample_broker(tmp, args=args)
    try:
        with AdminClient(url, load_admin_key(data / "admin-key.pem")) as admin:
            admin.register_reference_values(SAMPLE_REFERENCE_VALUES)
            admin.put_resource(ResourcePath.parse(RESOURCE), b"custodes secret")
            if tenant_policies:
                mark = "\n# a tenant's copy (bench/handshake.py --tenant-policies)\n"
                admin.set_policy("attestation", default_policy("default_cpu") + mark)
                admin.set_policy("resource", default_policy("resource_policy") + mark)
    except BaseException:
        proc.kill()
        raise
    return proc, url


def start_floor(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / "floor.port"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("floor_app.py")), str(port_file)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]),
        },
    )
    return proc, wait_port(port_file, proc)


def row(name: str, r: Result) -> str:
    cores = (r.server_cpu / r.elapsed, r.client_cpu / r.elapsed) if r.elapsed else (0.0, 0.0)
    return (
        f"{name:<10} {r.rate:9.1f} {r.pct(0.5):8.1f} {r.pct(0.99):8.1f} {r.server_ms():11.2f} "
        f"{r.client_ms():11.2f} {r.count:7d} {r.errors:6d} {cores[0]:6.2f} {cores[1]:6.2f}"
    )


HEADER = (
    f"{'server':<10} {'hs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU':>11} "
    f"{'client CPU':>11} {'count':>7} {'errors':>6} {'server':>6} {'client':>6}\n"
    f"{'':<10} {'':>9} {'':>8} {'':>8} {'ms/hs':>11} {'ms/hs':>11} {'':>7} {'':>6} "
    f"{'cores':>6} {'cores':>6}"
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=32, help="concurrent guests in all")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=8.0, help="window per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--workers", type=int, help="pass --workers N to custodes serve (if it has the option)"
    )
    parser.add_argument(
        "--tenant-policies",
        action="store_true",
        help="run changed copies of the shipped policies (budgeted, in worker processes)",
    )
    args = parser.parse_args()
    serve_args = ["--workers", str(args.workers)] if args.workers else []
    results: dict[str, list[Result]] = {"floor": [], "custodes": []}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            servers["floor"] = start_floor(tmp)
            servers["custodes"] = start_custodes(
                tmp, serve_args, tenant_policies=args.tenant_policies
            )
            with ctx.Pool(args.procs) as pool:
                for n in range(args.rounds):
                    order = ["floor", "custodes"] if n % 2 == 0 else ["custodes", "floor"]
                    print(f"\nround {n + 1}\n{HEADER}", flush=True)
                    for name in order:
                        proc, url = servers[name]
                        r = measure(pool, args.procs, url, proc.pid, args.guests, args.seconds)
                        results[name].append(r)
                        print(row(name, r), flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=15)

    def med(name: str, of: Callable[[Result], float]) -> float:
        return statistics.median(of(r) for r in results[name])

    print(
        f"\n{args.rounds} rounds, K = {args.guests} guests in {args.procs} client processes, "
        f"{args.seconds:.0f} s windows, auth -> attest -> resource per handshake"
    )
    print(f"{'median':<10} {'hs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server ms/hs':>13}")
    for name in results:
        print(
            f"{name:<10} {med(name, lambda r: r.rate):9.1f} "
            f"{med(name, lambda r: r.pct(0.5)):8.1f} {med(name, lambda r: r.pct(0.99)):8.1f} "
            f"{med(name, Result.server_ms):13.2f}"
        )
    throughput = [
        c.rate / f.rate for f, c in zip(results["floor"], results["custodes"], strict=True)
    ]
    cpu = [
        f.server_ms() / c.server_ms()
        for f, c in zip(results["floor"], results["custodes"], strict=True)
    ]
    print(
        f"\nthroughput ratio custodes/floor: median {statistics.median(throughput):.2f} "
        f"(rounds: {', '.join(f'{x:.2f}' for x in throughput)}; aim >= 0.9)"
    )
    print(
        f"server CPU ratio floor/custodes: median {statistics.median(cpu):.2f} "
        f"(rounds: {', '.join(f'{x:.2f}' for x in cpu)}; aim >= 0.5)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
