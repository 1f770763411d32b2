"""Load: up to 1,000 concurrent sample-TEE guests against 1 and 2 ``custodes serve`` replicas
on PostgreSQL (and 1 on SQLite for reference), with no sticky sessions; a setup may also give
each replica several worker processes (``sqlite:1w2``: one broker, 2 workers on one socket).
Every setup pins ``server.workers`` (1 unless given), since the default is one per core.

Each guest loops over full handshakes (``auth -> attest -> resource``, the JWE opened), and
sends every request to a replica picked at random, carrying the session cookie by hand: a
handshake hops between replicas as it would behind a plain load balancer. Guests start over a
ramp; only handshakes that finish inside the measurement window after the ramp count.

Reported per setup: handshakes/s, p50/p99 handshake latency, errors, the CPU used by the
client, the replicas and PostgreSQL over the window (in cores), and the server memory per
live session: the replicas' RSS before and after ``--sessions`` sessions are opened by
``/auth`` and left open, divided by their number (the store's growth per session beside it).
The figure that matters is the ratio of 2 replicas to 1, measured in the same run. Beside it,
the brokers' **event-loop lag** under the load, p99: each broker probes its own loop every
100 ms (``custodes_event_loop_lag_seconds`` on /metrics: how late the probe woke up), and the
histogram's counts from before and after the window give the bucket holding the 99th
percentile (a bound, as histograms give).

Everything (client, replicas, PostgreSQL, and whatever else runs on the machine) shares its
cores: on 2 cores a second replica can only add throughput if a core is free for it. Read
the CPU columns (the last is the rest of the machine) before reading the ratio.

Usage:
    .venv/bin/python bench/load.py                     # defaults: a few minutes
    .venv/bin/python bench/load.py --guests 1000 --seconds 30 --ramp 10 --sessions 10000
    .venv/bin/python bench/load.py --setups postgres:1,postgres:2 --dsn "host=... dbname=..."
    .venv/bin/python bench/load.py --setups sqlite:1,sqlite:1w2,postgres:1,postgres:1w2

Without ``--dsn`` a throw-away PostgreSQL is started (``tests/pg_server.py``: initdb and
postgres from the Debian package, on a free loopback port). With ``--dsn`` each PostgreSQL
setup gets a new database on that server (the role needs CREATEDB); the CPU of a server not
started here is not measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.cookiejar
import os
import random
import resource
import shlex
import ssl
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from custodes.guest.attester.sample import SampleAttester
from custodes.protocol.binding import runtime_data_digest, select_hash_algorithm
from custodes.protocol.tee_key import TeeKeyPair
from pg_server import PgServer, running_postgres
from replica_support import (
    ClusterKeys,
    make_keys,
    replica_env,
    seed,
    start_replica,
    stop,
    write_config,
)

RESOURCE = "default/key/load"
SECRET = b"load-test secret"
COOKIE = "kbs-session-id"
AUTH_BODY = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
# Long enough that no session opened for the memory figure expires while it is measured.
SESSION_TTL_S = 3600
WARMUP_HANDSHAKES = 10

# CPU seconds used so far, by part: client, replicas, postgres, machine (everything).
CpuUse = dict[str, float]
DRAIN_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 120.0


# --- measurement ----------------------------------------------------------------------------


@dataclass
class Window:
    """What happened inside the measurement window."""

    start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_before: CpuUse = field(default_factory=dict)
    cpu_after: CpuUse = field(default_factory=dict)

    def inside(self, t: float) -> bool:
        return self.start <= t <= self.end

    @property
    def rate(self) -> float:
        span = self.end - self.start
        return len(self.latencies) / span if span > 0 else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass
class Row:
    setup: str
    round: int
    window: Window
    cpu: dict[str, float]
    others: float
    rss_per_session: float
    store_per_session: float
    loop_lag_p99_ms: float


LAG_METRIC = "custodes_event_loop_lag_seconds_bucket"


def lag_buckets(urls: list[str]) -> Counter[float]:
    """The replicas' event-loop lag histogram (custodes_event_loop_lag_seconds: how late the
    broker's periodic probe woke up), summed over replicas: upper bound -> cumulative count.
    Each replica's /metrics already sums its workers."""
    buckets: Counter[float] = Counter()
    for url in urls:
        for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
            if line.startswith(LAG_METRIC + "{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                buckets[float(bound)] += int(float(line.rsplit(" ", 1)[1]))
    return buckets


def lag_p99_ms(before: Counter[float], after: Counter[float]) -> float:
    """The upper bound of the bucket holding the 99th percentile of the lags observed between
    the two scrapes (a histogram gives bounds, not exact values)."""
    window = {bound: after[bound] - before[bound] for bound in after}
    total = window.get(float("inf"), 0)
    if total <= 0:
        return float("nan")
    for bound in sorted(window):
        if window[bound] >= 0.99 * total:
            return bound * 1000
    return float("inf")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its reaped children and its live children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # Fields after the name: utime, stime, cutime, cstime are the 12th-15th (0-based 11-14).
    own = sum(int(f) for f in fields[11:15]) / tick
    return own + sum(cpu_seconds(child) for child in children(pid))


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    # user nice system idle iowait irq softirq steal (guest time is inside user already).
    total = sum(values[:8])
    return (total - idle) / tick, total / tick


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its live children (a broker's workers)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 + sum(rss_bytes(c) for c in children(pid))
    raise RuntimeError(f"no VmRSS for process {pid}")


# --- the guest ------------------------------------------------------------------------------


# One TLS context for every client: httpx builds one per client otherwise (costly x1000).
_TLS = ssl.create_default_context()


def cookieless(limits: httpx.Limits, timeout: float) -> httpx.AsyncClient:
    """A pooled client that never stores cookies (they go by hand)."""
    jar = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return httpx.AsyncClient(limits=limits, timeout=timeout, cookies=jar, verify=_TLS)


async def handshake(http: httpx.AsyncClient, urls: list[str]) -> None:
    """One full handshake, each request to a random replica; raises on any failure."""
    key = TeeKeyPair.generate()
    r = await http.post(f"{random.choice(urls)}/kbs/v0/auth", json=AUTH_BODY)
    r.raise_for_status()
    session = r.cookies[COOKIE]
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
    headers = {"Cookie": f"{COOKIE}={session}"}
    r = await http.post(f"{random.choice(urls)}/kbs/v0/attest", json=body, headers=headers)
    r.raise_for_status()
    r = await http.get(f"{random.choice(urls)}/kbs/v0/resource/{RESOURCE}", headers=headers)
    r.raise_for_status()
    if key.decrypt(r.json()) != SECRET:
        raise ValueError("wrong secret")


def error_kind(e: Exception) -> str:
    if isinstance(e, httpx.HTTPStatusError):
        return f"HTTP {e.response.status_code}"
    return type(e).__name__


async def drive(
    urls: list[str], guests: int, ramp: float, seconds: float, probe: Callable[[], CpuUse]
) -> Window:
    """Each guest has its own client, pooling one keep-alive connection per replica (as a
    pod would; one pool shared by 1,000 guests costs the client more CPU than the work)."""
    window = Window()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=len(urls), max_keepalive_connections=len(urls))
    async with cookieless(limits, timeout=REQUEST_TIMEOUT_S) as http:
        for _ in range(WARMUP_HANDSHAKES):
            await handshake(http, urls)

    async def guest(delay: float) -> None:
        await asyncio.sleep(delay)
        async with cookieless(limits, timeout=REQUEST_TIMEOUT_S) as http:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await handshake(http, urls)
                except (httpx.HTTPError, ValueError, KeyError) as e:
                    if window.inside(time.perf_counter()):
                        window.errors[error_kind(e)] += 1
                    continue
                t1 = time.perf_counter()
                if window.inside(t1):
                    window.latencies.append(t1 - t0)

    begin = time.perf_counter()
    window.start = begin + ramp
    window.end = window.start + seconds
    tasks = [asyncio.create_task(guest(ramp * i / guests)) for i in range(guests)]
    await asyncio.sleep(window.start - time.perf_counter())
    window.cpu_before = probe()
    await asyncio.sleep(window.end - time.perf_counter())
    window.cpu_after = probe()
    stop.set()
    # Let the handshakes in flight finish (they no longer count), then drop stragglers.
    _, pending = await asyncio.wait(tasks, timeout=DRAIN_TIMEOUT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return window


async def open_sessions(urls: list[str], count: int, concurrency: int) -> int:
    """``count`` sessions opened by /auth (spread over the replicas) and left open."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    opened = 0
    async with cookieless(limits, timeout=REQUEST_TIMEOUT_S) as http:
        queue = iter(range(count))

        async def worker() -> None:
            nonlocal opened
            for i in queue:
                r = await http.post(f"{urls[i % len(urls)]}/kbs/v0/auth", json=AUTH_BODY)
                if r.status_code == 200:
                    opened += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return opened


# --- setups ---------------------------------------------------------------------------------


@dataclass
class Setup:
    backend: str
    replicas: int
    workers: int = 1

    @property
    def name(self) -> str:
        workers = f" w{self.workers}" if self.workers != 1 else ""
        return f"{self.backend} x{self.replicas}{workers}"

    @classmethod
    def parse(cls, text: str) -> Setup:
        """``BACKEND:REPLICAS`` or ``BACKEND:REPLICASwWORKERS`` (``sqlite:1w2``)."""
        backend, _, spec = text.partition(":")
        count, _, workers = spec.partition("w")
        workers = workers or "1"
        if (
            backend not in ("sqlite", "postgres")
            or not count.isdigit()
            or int(count) < 1
            or not workers.isdigit()
            or int(workers) < 1
        ):
            raise argparse.ArgumentTypeError(
                f"setup {text!r} is not sqlite:N or postgres:N (optionally wW: W workers)"
            )
        if backend == "sqlite" and int(count) != 1:
            raise argparse.ArgumentTypeError(
                "SQLite is one broker (sqlite:1); its workers scale it (sqlite:1w2)"
            )
        return cls(backend, int(count), int(workers))


class Store:
    """Where the setups' databases come from, and how big they are."""

    def __init__(self, pg: PgServer | None, dsn: str | None) -> None:
        self.pg = pg
        self.dsn = dsn

    def new_database(self) -> str:
        if self.pg is not None:
            return self.pg.create_database()
        assert self.dsn is not None
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            name = f"custodes_load_{os.getpid()}_{time.monotonic_ns()}"
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    sql.Identifier(name)
                )
            )
        params = psycopg.conninfo.conninfo_to_dict(self.dsn)
        params["dbname"] = name
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})

    @staticmethod
    def size(dsn: str) -> int:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_total_relation_size('kv')").fetchone()
        return int(row[0]) if row is not None else 0

    def postmaster(self) -> int | None:
        if self.pg is None or self.pg._process is None:
            return None
        return self.pg._process.pid


def sqlite_size(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("custodes.db*"))


def run_setup(setup: Setup, round_: int, store: Store, root: Path, args: argparse.Namespace) -> Row:
    keys: ClusterKeys = make_keys(
        root / f"{setup.backend}-{setup.replicas}-w{setup.workers}-{round_}"
    )
    config = write_config(
        keys.directory / "serve.toml",
        keys,
        backend=setup.backend,
        session_ttl_seconds=SESSION_TTL_S,
    )
    # Pinned: the default (one worker per core) would make "x1" mean something else per host.
    text = config.read_text().replace("[server]\n", f"[server]\nworkers = {setup.workers}\n", 1)
    config.write_text(text)
    dsn = store.new_database() if setup.backend == "postgres" else None
    env = replica_env(keys, dsn)
    replicas = []
    try:
        for _ in range(setup.replicas):
            replicas.append(start_replica(config, env))
        urls = [r.url for r in replicas]
        seed(urls[0], keys, {RESOURCE: SECRET})
        pids = {"replicas": [r.process.pid for r in replicas]}
        postmaster = store.postmaster() if setup.backend == "postgres" else None

        def cpu() -> CpuUse:
            usage = {
                "client": sum(os.times()[:2]),
                "replicas": sum(cpu_seconds(p) for p in pids["replicas"]),
                "machine": machine_busy()[0],
            }
            if postmaster is not None:
                usage["postgres"] = cpu_seconds(postmaster)
            return usage

        print(
            f"round {round_}, {setup.name}: {args.guests} guests, ramp {args.ramp:g} s, "
            f"window {args.seconds:g} s",
            flush=True,
        )
        lag_before = lag_buckets(urls)
        window = asyncio.run(drive(urls, args.guests, args.ramp, args.seconds, cpu))
        lag_p99 = lag_p99_ms(lag_before, lag_buckets(urls))
        span = window.end - window.start
        used = {k: (window.cpu_after[k] - window.cpu_before[k]) / span for k in window.cpu_after}
        # What the rest of the machine (other users' work) took meanwhile, in cores.
        others = used.pop("machine") - sum(used.values())

        def store_size() -> int:
            return Store.size(dsn) if dsn is not None else sqlite_size(keys.directory)

        rss_before = sum(rss_bytes(p) for p in pids["replicas"])
        size_before = store_size()
        opened = asyncio.run(open_sessions(urls, args.sessions, args.session_concurrency))
        rss_after = sum(rss_bytes(p) for p in pids["replicas"])
        size_after = store_size()
        per_rss = (rss_after - rss_before) / opened if opened else float("nan")
        per_store = (size_after - size_before) / opened if opened else float("nan")
        return Row(setup.name, round_, window, used, others, per_rss, per_store, lag_p99)
    finally:
        for r in replicas:
            stop(r)


@contextlib.contextmanager
def postgres_source(dsn: str | None, needed: bool, *, fsync: bool) -> Iterator[Store]:
    if dsn is not None or not needed:
        yield Store(None, dsn)
        return
    with running_postgres() as pg:
        if not fsync:
            # Diagnostic only: commits stop waiting for the disk, which shows what the
            # replicas do once durable-commit latency is out of the way. Never in production.
            # The server's command line sets fsync, so it is restarted with it off.
            pg.stop()
            options = pg._options
            setattr(pg, "_options", lambda: [*options(), "--fsync=off"])  # noqa: B010
            pg.start()
        yield Store(pg, None)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print()
    print(f"command: .venv/bin/python bench/load.py {shlex.join(sys.argv[1:])}")
    print(
        f"{args.guests} concurrent guests (ramp {args.ramp:g} s), window {args.seconds:g} s, "
        f"auth -> attest -> resource per handshake, each request to a random replica; "
        f"memory: {args.sessions} sessions opened by /auth; {os.cpu_count()} CPUs; "
        f"PostgreSQL fsync {args.pg_fsync if args.dsn is None else '(external server)'}"
    )
    print()
    print(
        "| round | setup | handshakes/s | p50 ms | p99 ms | handshakes | errors "
        "| CPU client | CPU replicas | CPU postgres | CPU others | RSS B/session "
        "| store B/session | loop lag p99 ms |"
    )
    print("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        w = row.window
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(w.errors.items())) or "0"
        pg_cpu = f"{row.cpu['postgres']:.2f}" if "postgres" in row.cpu else "-"
        print(
            f"| {row.round} | {row.setup} | {w.rate:.1f} | {w.pct_ms(0.5):.0f} "
            f"| {w.pct_ms(0.99):.0f} | {len(w.latencies)} | {errors} | {row.cpu['client']:.2f} "
            f"| {row.cpu['replicas']:.2f} | {pg_cpu} | {row.others:.2f} "
            f"| {row.rss_per_session:.0f} | {row.store_per_session:.0f} "
            f"| ≤ {row.loop_lag_p99_ms:g} |"
        )
    print()
    for numerator, denominator, label in (
        ("sqlite x1 w2", "sqlite x1", "2 workers / 1 worker (SQLite)"),
        ("postgres x1 w2", "postgres x1", "2 workers / 1 worker (PostgreSQL)"),
        ("postgres x2", "postgres x1", "2 replicas / 1 replica (PostgreSQL)"),
        ("postgres x1", "sqlite x1", "PostgreSQL x1 / SQLite x1"),
    ):
        ratios = []
        for round_ in sorted({row.round for row in rows}):
            rates = {row.setup: row.window.rate for row in rows if row.round == round_}
            if rates.get(denominator) and numerator in rates:
                ratios.append(rates[numerator] / rates[denominator])
        if ratios:
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"ratio {label}: {statistics.median(ratios):.2f} (per round: {each})")


def raise_fd_limit() -> None:
    """Each guest holds a connection (and each replica its end): lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--guests", type=int, default=200, help="concurrent guests (max 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--ramp", type=float, default=3.0, help="seconds to start all guests")
    parser.add_argument(
        "--sessions", type=int, default=2000, help="sessions opened for the memory figure"
    )
    parser.add_argument("--session-concurrency", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every setup this many times, interleaved (other load on the machine drifts)",
    )
    parser.add_argument(
        "--setups",
        type=lambda s: [Setup.parse(p) for p in s.split(",")],
        default=[Setup("sqlite", 1), Setup("postgres", 1), Setup("postgres", 2)],
        help="comma-separated BACKEND:REPLICAS[wWORKERS] (default sqlite:1,postgres:1,"
        "postgres:2; e.g. sqlite:1w2 is one broker with 2 worker processes)",
    )
    parser.add_argument(
        "--pg-fsync",
        choices=("on", "off"),
        default="on",
        help="fsync of the throw-away PostgreSQL; 'off' is a diagnostic (see the docstring)",
    )
    parser.add_argument(
        "--dsn",
        help="a PostgreSQL server to use (a database is created per setup) instead of a "
        "throw-away one",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.guests <= 1000:
        parser.error("--guests must be 1..1000")
    raise_fd_limit()
    setups: list[Setup] = args.setups
    rows: list[Row] = []
    needs_pg = any(s.backend == "postgres" for s in setups)
    with (
        tempfile.TemporaryDirectory(prefix="custodes-load-") as tmp,
        postgres_source(args.dsn, needs_pg, fsync=args.pg_fsync == "on") as store,
    ):
        for round_ in range(1, args.rounds + 1):
            for setup in setups:
                rows.append(run_setup(setup, round_, store, Path(tmp), args))
    report(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
