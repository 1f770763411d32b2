"""A process that appends to one audit stream from several threads, as a broker worker does,
and prints ``acked SEQ HASH`` for every append that returned (i.e. is durable).

    python tests/audit_appender.py (--sqlite PATH | --dsn DSN) --key PEM --tag T
        [--threads N] [--count M]     # M appends per thread; 0: until killed

Used by tests/unit/audit/test_audit_writer.py for several processes on one store and for
the crash test (SIGKILL while appending).
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import SystemClock
from custodes.audit.log import AuditLog
from custodes.storage.base import Store

STREAM = "acme"


def main() -> int:
    parser = argparse.ArgumentParser()
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", type=Path)
    where.add_argument("--dsn")
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit("not an EC key")
    store: Store
    if args.sqlite is not None:
        from custodes.storage.sqlite import SqliteStore

        store = SqliteStore(args.sqlite)
    else:
        from custodes.storage.postgres import PostgresStore

        store = PostgresStore(args.dsn)
    log = AuditLog(store, key, SystemClock())
    out = threading.Lock()
    failures: list[BaseException] = []

    def work(t: int) -> None:
        i = 0
        try:
            while args.count == 0 or i < args.count:
                entry = log.append(STREAM, "release", None, {"tag": args.tag, "t": t, "i": i})
                with out:
                    print(f"acked {entry.seq} {entry.hash}", flush=True)
                i += 1
        except BaseException as e:
            failures.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    if failures:
        print(f"failed: {failures[0]!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
