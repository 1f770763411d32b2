"""Several processes on one SQLite file, each with several threads sharing its connection:
no call fails with "database is locked". (A SELECT whose cursor was read after the
connection's lock was released kept a read transaction open; the next write from another
thread then failed at once whenever another process had written: 2.5-5% of handshakes
answered 503 with two brokers on one file.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from custodes.storage.sqlite import SqliteStore

WORKER = r"""
import os, sys, threading, time
from pathlib import Path
from custodes.errors import StorageError
from custodes.storage.batch import Batch, Row
from custodes.storage.sqlite import SqliteStore

store = SqliteStore(Path(sys.argv[1]))
failures = []

def work(t):
    for i in range(150):
        key = f"{os.getpid()}-{t}-{i}"
        now = time.time()
        try:
            store.set("t/kbs_protocol_session", key, b"s" * 64, expires_at=now + 60)
            assert store.get("t/kbs_protocol_session", key, now=now) == b"s" * 64
            assert store.compare_and_swap("t/kbs_protocol_session", key, b"s" * 64, b"u", now=now)
            assert store.insert("t/repository", key, b"r", now=now)
            assert store.write_batch(Batch(inserts=(Row("audit/t", key, b"a"),)), now=now)
            store.list("t/repository", now=now)
        except StorageError as e:
            failures.append(str(e))

threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
store.close()
print(len(failures), failures[:1])
sys.exit(1 if failures else 0)
"""


def test_processes_and_threads_on_one_file_never_see_a_lock_error(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteStore(path).close()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    store = SqliteStore(path)
    try:
        assert len(store.list("audit/t", now=0)) == 3 * 6 * 150
    finally:
        store.close()
