"""Fairness between tenants: tenant B's handshake latency while tenant A floods the broker
with requests to a slow resource policy, against B alone, in the same run.

One ``custodes serve`` with two tenants, ``a`` and ``b`` (sample TEE, the same reference
values and one resource each). Tenant A's admin sets a resource policy that computes for a
long time (a comprehension over ``numbers.range(1, --policy-size)``; about 0.8 s per
evaluation at the default on this class of machine) and still allows. Each round measures:

* **B alone**: --b-guests guests of tenant B doing ``auth -> attest -> resource`` in a loop
  for --seconds (one client process);
* **B with A flooding**: the same, while --a-guests guests of tenant A (another process),
  each attested once, send resource requests, each evaluating the slow policy, back to back.

Printed per round and as medians: B's handshakes/s, p50 and p99, the ratio of B's p99 under
the flood to B's p99 alone (1.0: A does not affect B at all), and A's completed requests and
errors (a broker that limits policies answers some of A's requests with errors instead).

Usage: .venv/bin/python bench/fairness.py [--seconds 10] [--rounds 3] [--policy-size 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from handshake import RESOURCE, Result, attested, client_process, no_cookies
from served import SAMPLE_REFERENCE_VALUES, start_sample_broker

from custodes.admin_client import AdminClient, OperatorClient
from custodes.protocol.resource import ResourcePath

START_DELAY = 3.0  # seconds between scheduling a phase and its window opening
TENANTS = ("a", "b")


def slow_policy(size: int) -> str:
    """Allows like the default policy, after a computation that takes a while."""
    return (
        "package policy\n\nimport rego.v1\n\ndefault allow := false\n\n"
        "allow if {\n"
        f"\tcount([x | some x in numbers.range(1, {size}); x % 7 == 0]) >= 0\n"
        '\tdata.plugin == "resource"\n'
        "\tevery _, appraisal in input.submods {\n"
        '\t\tappraisal["ear.status"] == "affirming"\n'
        "\t}\n"
        "}\n"
    )


@dataclass
class Flood:
    done: int = 0
    errors: int = 0
    statuses: str = ""


async def flood_until(url: str, guests: int, start_at: float, seconds: float) -> Flood:
    """``guests`` attested guests of tenant A, each sending resource requests back to back
    from ``start_at`` for ``seconds``."""
    flood = Flood()
    seen: dict[str, int] = {}
    limits = httpx.Limits(max_connections=guests, max_keepalive_connections=guests)
    async with httpx.AsyncClient(timeout=300, limits=limits, cookies=no_cookies()) as http:
        tokens = [(await attested(http, url))[1] for _ in range(guests)]
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + seconds

        async def guest(token: str) -> None:
            while time.time() < deadline:
                try:
                    r = await http.get(
                        f"{url}/kbs/v0/resource/{RESOURCE}",
                        headers={"Authorization": f"Bearer {token}"},
                    )
                except httpx.HTTPError as e:
                    key = type(e).__name__
                else:
                    key = str(r.status_code)
                seen[key] = seen.get(key, 0) + 1
                if key == "200":
                    flood.done += 1
                else:
                    flood.errors += 1

        await asyncio.gather(*(guest(t) for t in tokens))
    flood.statuses = ", ".join(f"{k}: {v}" for k, v in sorted(seen.items()))
    return flood


def flood_process(url: str, guests: int, start_at: float, seconds: float) -> Flood:
    return asyncio.run(flood_until(url, guests, start_at, seconds))


def b_phase(
    pool: Pool, url_a: str, url_b: str, args: argparse.Namespace, *, flood: bool
) -> tuple[Result, Flood | None]:
    start_at = time.time() + START_DELAY
    a = (
        pool.apply_async(flood_process, (url_a, args.a_guests, start_at, args.seconds))
        if flood
        else None
    )
    b = pool.apply_async(client_process, (url_b, args.b_guests, start_at, args.seconds))
    latencies, errors, end, _ = b.get()
    result = Result(latencies=latencies, errors=errors, elapsed=end - start_at)
    return result, (a.get() if a is not None else None)


def setup(tmp: Path, size: int, serve_args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    operator = ed25519.Ed25519PrivateKey.generate()
    operator_pub = tmp / "operator.pub.pem"
    operator_pub.write_bytes(
        operator.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    proc, url, _ = start_sample_broker(
        tmp, extra_config=f'[operator]\npublic_keys = ["{operator_pub}"]\n', args=serve_args
    )
    try:
        with OperatorClient(url, operator) as op:
            for tenant in TENANTS:
                admin = ed25519.Ed25519PrivateKey.generate()
                pem = (
                    admin.public_key()
                    .public_bytes(
                        serialization.Encoding.PEM,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                    .decode()
                )
                subject = f"{tenant}-admin"
                op.create_tenant(tenant, [{"subject": subject, "role": "admin", "public_key": pem}])
                base = f"{url}/tenants/{tenant}"
                with AdminClient(base, admin, subject=subject) as a:
                    a.register_reference_values(SAMPLE_REFERENCE_VALUES)
                    a.put_resource(ResourcePath.parse(RESOURCE), f"{tenant} secret".encode())
                    if tenant == "a":
                        a.set_policy("resource", slow_policy(size))
    except BaseException:
        proc.kill()
        raise
    return proc, url


def line(name: str, r: Result) -> str:
    return f"  {name:<18} {r.rate:8.1f} {r.pct(0.5):9.1f} {r.pct(0.99):9.1f} {r.errors:7d}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="window per phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--b-guests", type=int, default=2, help="tenant B's concurrent guests")
    parser.add_argument("--a-guests", type=int, default=8, help="tenant A's flooding guests")
    parser.add_argument("--policy-size", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, help="pass --workers N to custodes serve")
    args = parser.parse_args()
    serve_args = ["--workers", str(args.workers)] if args.workers else []
    alone: list[Result] = []
    flooded: list[Result] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        proc, url = setup(Path(tmpdir), args.policy_size, serve_args)
        url_a, url_b = f"{url}/tenants/a", f"{url}/tenants/b"
        try:
            with multiprocessing.get_context("spawn").Pool(2) as pool:
                for n in range(args.rounds):
                    print(
                        f"\nround {n + 1}: tenant B {'hs/s':>8} {'p50 ms':>9} {'p99 ms':>9} "
                        f"{'errors':>7}",
                        flush=True,
                    )
                    r, _ = b_phase(pool, url_a, url_b, args, flood=False)
                    alone.append(r)
                    print(line("alone", r), flush=True)
                    r, flood = b_phase(pool, url_a, url_b, args, flood=True)
                    flooded.append(r)
                    print(line("with A flooding", r), flush=True)
                    if flood is not None:
                        print(
                            f"  tenant A: {flood.done} slow requests served, {flood.errors} "
                            f"refused or failed ({flood.statuses})",
                            flush=True,
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    ratios = [f.pct(0.99) / a.pct(0.99) for a, f in zip(alone, flooded, strict=True)]
    p50 = [f.pct(0.5) / a.pct(0.5) for a, f in zip(alone, flooded, strict=True)]
    print(
        f"\n{args.rounds} rounds of {args.seconds:.0f} s; tenant B: {args.b_guests} guests; "
        f"tenant A: {args.a_guests} guests, policy over numbers.range(1, {args.policy_size})"
    )
    for name, results in (("B alone", alone), ("B, A flooding", flooded)):
        print(
            f"  {name:<16} median p50 {statistics.median(r.pct(0.5) for r in results):9.1f} ms, "
            f"p99 {statistics.median(r.pct(0.99) for r in results):9.1f} ms, "
            f"{statistics.median(r.rate for r in results):.1f} hs/s"
        )
    print(
        f"B's p99 with A flooding / B alone: median {statistics.median(ratios):.1f} "
        f"(rounds: {', '.join(f'{x:.1f}' for x in ratios)}; aim <= 2); "
        f"p50: {statistics.median(p50):.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
