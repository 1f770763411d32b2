"""Dashboard overview with a long audit log: server time of `GET /ui/` for a tenant whose
stream holds --entries entries, as a ratio to the same page of a tenant with an empty stream.

The broker is the real one (SQLite store in a temporary directory, the real app) and the
requests go through its ASGI interface in-process (httpx's ASGITransport), so the figures are
the server's own time: routing, session check, the audit digest, the stores, rendering.

Phases:
* cold: the first request after start-up; with more than 2,000 unverified entries it returns
  at once ("verifying …") and one background thread verifies the backlog: its duration is
  reported as the catch-up time (every entry's hash, signature and link);
* warm: --repeat requests, each after 10 new entries appended through the real audit log
  (so every request verifies and aggregates those 10): median and 95th percentile.

The fill writes the signed entries (made by custodes.audit.entry.build_entry, the function
AuditLog.append uses) straight into the SQLite table in one transaction, because 100,000
appends at one fsync each would take minutes; the entries are byte-identical to appended ones.

Usage: .venv/bin/python bench/dashboard.py [--entries 100000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric import ed25519

from custodes._internal.admin_claims import normalize
from custodes._internal.jws import sign_compact
from custodes.audit.checkpoint import Checkpoint, CheckpointReason
from custodes.audit.entry import GENESIS_PREV, AuditKind, build_entry
from custodes.kbs.admin_auth import Role
from custodes.kbs.app import create_app
from custodes.kbs.broker import Broker, build_broker
from custodes.kbs.config import AttestationConfig, KbsConfig, ServerConfig
from custodes.kbs.keys import AUDIT_KEY_FILE, load_ear_signing_key
from custodes.kbs.tenants import Identity
from custodes.types.json import JsonObject

ORIGIN = "http://127.0.0.1:8080"
TEES = ("snp", "tdx", "az-snp-vtpm", "sample")
VECTOR = {"configuration": 2, "executables": 3, "hardware": 2, "instance-identity": 0}


def event_for(i: int) -> tuple[AuditKind, str | None, JsonObject]:
    """A realistic mix: 4 attestations, 4 releases, 1 denial, 1 admin change per 10."""
    token = f"{i // 10:012x}"
    r = i % 10
    if r < 4:
        status = "affirming" if i % 97 else "contraindicated"
        return (
            AuditKind.ATTESTATION,
            None,
            {
                "tee": TEES[i % len(TEES)],
                "status": status,
                "evidence_sha256": f"{i:064x}",
                "trust_vectors": {"cpu0": VECTOR},
                "token_id": f"{token}{r}",
                "correlation_id": f"{token}{r}",
                "policy_id": "default_cpu",
                "policy_version": 1,
                "explanation": None,
                "annotated_evidence": {"cpu0": {"sample": {"svn": "1", "launch_digest": "abc"}}},
            },
        )
    if r < 8:
        return (
            AuditKind.RELEASE,
            None,
            {
                "resource": f"default/key/app{i % 50}",
                "token_id": f"{token}{r - 4}",
                "policy_id": "resource-policy",
                "policy_version": 1,
            },
        )
    if r == 8:
        return (
            AuditKind.DENIAL,
            None,
            {
                "resource": "default/key/db",
                "token_id": f"{token}0",
                "policy_id": "resource-policy",
                "policy_version": 1,
                "correlation_id": f"d{i:031x}",
                "appraisal": "cpu0 ear.status=contraindicated (hardware=97)",
                "failed": [],
            },
        )
    return AuditKind.ADMIN, "admin", {"action": "resource.put", "resource": "default/key/app1"}


def fill(broker: Broker, data: Path, stream: str, entries: int) -> None:
    key = load_ear_signing_key(None, data, default_name=AUDIT_KEY_FILE)
    start_ms = int((time.time() - 86400) * 1000)
    step = max(86_400_000 // max(entries, 1), 1)
    prev, rows = GENESIS_PREV, []
    for seq in range(entries):
        if (seq + 1) % 1000 == 0:
            kind: AuditKind = AuditKind.CHECKPOINT
            actor: str | None = None
            event = Checkpoint(stream, seq, prev, CheckpointReason.ENTRIES).to_event()
        else:
            kind, actor, event = event_for(seq)
        entry = build_entry(
            seq=seq,
            time_ms=start_ms + seq * step,
            stream=stream,
            kind=kind,
            actor=actor,
            event=event,
            prev=prev,
            signing_key=key,
        )
        prev = entry.hash
        rows.append((f"audit/{stream}", f"{seq:012d}", entry.to_bytes(), None))
    db = sqlite3.connect(data / "custodes.db")
    with db:
        db.executemany("INSERT INTO kv VALUES (?, ?, ?, ?)", rows)
    db.close()
    broker.store.set("audit-head", stream, str(entries - 1).encode())


def token(key: ed25519.Ed25519PrivateKey, audience: str, subject: str) -> str:
    now = int(time.time())
    claims: JsonObject = {
        "sub": subject,
        "aud": normalize(audience),
        "iat": now,
        "exp": now + 60,
        "jti": f"{time.perf_counter_ns()}",
    }
    return sign_compact({"alg": "EdDSA", "typ": "JWT"}, claims, key)


async def sign_in(http: httpx.AsyncClient, base: str, jwt: str) -> None:
    form = await http.get(f"{base}/login")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
    if nonce is None:
        raise SystemExit("no sign-in form")
    r = await http.post(f"{base}/login", data={"login_csrf": nonce.group(1), "token": jwt})
    if r.status_code != 303:
        raise SystemExit(f"sign-in refused: {r.text[:200]}")


async def timed(http: httpx.AsyncClient, url: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = await http.get(url)
    ms = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise SystemExit(f"GET {url}: {r.status_code}")
    return ms, r.text


async def run(entries: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        config = KbsConfig(
            server=ServerConfig(listen="127.0.0.1:0", data_dir=data, public_urls=(ORIGIN,)),
            attestation=AttestationConfig(unsafe_allow_sample_tee=True),
        ).validate()
        broker = build_broker(config)
        t0 = time.perf_counter()
        fill(broker, data, "default", entries)
        print(f"filled {entries} signed entries in {time.perf_counter() - t0:.1f} s")
        empty_key = ed25519.Ed25519PrivateKey.generate()
        broker.registry.create("empty", [Identity("admin", Role.ADMIN, empty_key.public_key())])
        from custodes.admin_client import load_admin_key

        admin_key = load_admin_key(data / "admin-key.pem")
        if not isinstance(admin_key, ed25519.Ed25519PrivateKey):
            raise SystemExit("expected the generated Ed25519 admin key")
        app = create_app(broker)
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=ORIGIN) as full,
            httpx.AsyncClient(transport=transport, base_url=ORIGIN) as empty,
        ):
            await sign_in(full, "/ui", token(admin_key, ORIGIN, "admin"))
            await sign_in(
                empty, "/tenants/empty/ui", token(empty_key, f"{ORIGIN}/tenants/empty", "admin")
            )
            cold_ms, page = await timed(full, "/ui/")
            t0 = time.perf_counter()
            while "Verifying the audit chain" in page:
                await asyncio.sleep(0.5)
                _, page = await timed(full, "/ui/")
            catch_up = time.perf_counter() - t0
            if "Audit chain intact" not in page:
                raise SystemExit("the chain did not verify")
            login_ms = [(await timed(empty, "/tenants/empty/ui/login"))[0] for _ in range(repeat)]
            empty_ms = [(await timed(empty, "/tenants/empty/ui/"))[0] for _ in range(repeat)]
            warm_ms = []
            for _ in range(repeat):
                for i in range(10):
                    kind, actor, event = event_for(i)
                    if broker.audit is not None:
                        broker.audit.append("default", kind, actor, event)
                warm_ms.append((await timed(full, "/ui/"))[0])
        broker.close()

    def p95(xs: list[float]) -> float:
        return sorted(xs)[max(int(len(xs) * 0.95) - 1, 0)]

    empty_median = statistics.median(empty_ms)
    print(f"{'':44} {'median ms':>10} {'p95 ms':>8} {'ratio':>7}")
    for name, xs in (
        ("sign-in page (template only)", login_ms),
        ("overview, empty stream (the floor)", empty_ms),
        (f"overview, {entries:,} entries, warm (+10 new)", warm_ms),
    ):
        med = statistics.median(xs)
        print(f"{name:44} {med:10.1f} {p95(xs):8.1f} {med / empty_median:7.2f}")
    print(f"{'overview, first request (cold, returns at once)':44} {cold_ms:10.1f}")
    print(f"background verification of {entries:,} entries: {catch_up:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.entries, args.repeat))


if __name__ == "__main__":
    main()
