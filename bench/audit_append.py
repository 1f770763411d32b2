"""Audit appends per second: T threads appending to one stream of a real SQLite store (each
append acknowledged only once durable), against the floor of the same number of bare durable
single-row inserts into the same kind of store from the same threads, in the same run.

Reported: appends/s, commits (SQLite transactions that wrote entries) per append, and the
ratio appends/s : floor inserts/s. With group commit the ratio can exceed 1 (one fsync for
many entries); one commit per entry keeps it below 1.

Usage: .venv/bin/python bench/audit_append.py [--threads 16] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import SystemClock
from custodes.audit.log import AuditLog
from custodes.storage.sqlite import SqliteStore

if TYPE_CHECKING:  # not imported at run time: the script also measures older trees
    from custodes.storage.batch import Batch

EVENT = {
    "resource": "default/key/bench",
    "token_id": "b3f1c2d4e5f6a7b8",
    "decision": "allow",
    "tee": "sample",
}


class CountingStore(SqliteStore):
    """Counts the calls that commit audit entries (batches, or single inserts)."""

    commits = 0

    def write_batch(self, batch: Batch, *, now: float) -> bool:
        self.commits += 1
        return super().write_batch(batch, now=now)

    def insert(
        self,
        namespace: str,
        key: str,
        value: bytes,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        if namespace.startswith("audit/"):
            self.commits += 1
        return super().insert(namespace, key, value, now=now, expires_at=expires_at)


def run(threads: int, seconds: float, body: object) -> int:
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def work(t: int) -> None:
        i = 0
        while time.monotonic() < stop:
            body(t, i)  # type: ignore[operator]
            i += 1
        counts[t] = i

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    ratios, rates, floors, per = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.rounds):
            floor_store = SqliteStore(Path(tmp) / f"floor-{n}.db")
            floor = run(
                args.threads,
                args.seconds,
                lambda t, i, s=floor_store: s.insert("bench", f"{t}-{i}", b"x" * 400, now=0),
            )
            floor_store.close()
            store = CountingStore(Path(tmp) / f"audit-{n}.db")
            log = AuditLog(store, key, SystemClock())
            appends = run(
                args.threads,
                args.seconds,
                lambda t, i, log=log: log.append("acme", "release", None, EVENT),
            )
            report = log.verify_stream("acme")
            assert report.ok and report.count >= appends
            store.close()
            rate, floor_rate = appends / args.seconds, floor / args.seconds
            rates.append(rate)
            floors.append(floor_rate)
            ratios.append(rate / floor_rate)
            per.append(store.commits / appends)
            print(
                f"round {n + 1}: appends/s {rate:.0f}, floor inserts/s {floor_rate:.0f}, "
                f"commits per append {store.commits / appends:.3f}, ratio {rate / floor_rate:.2f}",
                flush=True,
            )
    print(
        f"median: appends/s {statistics.median(rates):.0f}, floor inserts/s "
        f"{statistics.median(floors):.0f}, commits per append {statistics.median(per):.3f}, "
        f"ratio appends/floor {statistics.median(ratios):.2f} ({args.threads} threads)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
