"""The Store contract, run against every implementation (SQLite, in-memory, PostgreSQL)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from custodes.storage.base import NS_RESOURCES, NS_SESSIONS, Store
from custodes.storage.memory import MemoryStore
from custodes.storage.postgres import PostgresStore
from custodes.storage.sqlite import SqliteStore
from pg_server import PgServer, running_postgres

NS = NS_RESOURCES
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgServer]:
    """One real PostgreSQL for this module, started only if a postgres case runs."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        server: PgServer = request.getfixturevalue("postgres")
        dsn = server.create_database()  # a fresh database per test
        pg = PostgresStore(dsn)
        yield pg
        pg.close()
        # Not forced: this also checks that close() left no connection open.
        server.drop_database(dsn)
        return
    s: Store = SqliteStore(tmp_path / "store.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


# --- get / set ---------------------------------------------------------------------------


def test_get_missing_is_none(store: Store) -> None:
    assert store.get(NS, "nope", now=NOW) is None


def test_set_then_get(store: Store) -> None:
    store.set(NS, "k", b"value")
    assert store.get(NS, "k", now=NOW) == b"value"


def test_set_overwrites_value_and_expiry(store: Store) -> None:
    store.set(NS, "k", b"one", expires_at=NOW + 1)
    store.set(NS, "k", b"two")
    assert store.get(NS, "k", now=NOW + 100) == b"two"


def test_values_are_bytes_exactly(store: Store) -> None:
    raw = bytes(range(256))
    store.set(NS, "bin", raw)
    store.set(NS, "empty", b"")
    assert store.get(NS, "bin", now=NOW) == raw
    got = store.get(NS, "empty", now=NOW)
    assert got == b""
    assert isinstance(got, bytes)


def test_namespaces_are_separate(store: Store) -> None:
    store.set(NS, "k", b"resource")
    store.set(NS_SESSIONS, "k", b"session")
    assert store.get(NS, "k", now=NOW) == b"resource"
    assert store.get(NS_SESSIONS, "k", now=NOW) == b"session"
    assert store.delete(NS, "k")
    assert store.get(NS_SESSIONS, "k", now=NOW) == b"session"


# --- expiry ------------------------------------------------------------------------------


def test_expires_at_is_exclusive(store: Store) -> None:
    # Live while now < expires_at; invisible from expires_at on.
    store.set(NS, "k", b"v", expires_at=NOW)
    assert store.get(NS, "k", now=NOW - 0.001) == b"v"
    assert store.get(NS, "k", now=NOW) is None
    assert store.get(NS, "k", now=NOW + 1) is None


def test_no_expiry_lives_forever(store: Store) -> None:
    store.set(NS, "k", b"v")
    assert store.get(NS, "k", now=1e15) == b"v"


def test_list_is_sorted_and_excludes_expired(store: Store) -> None:
    for key in ("b", "a", "c/d", "B", "é", "a0"):
        store.set(NS, key, b"x")
    store.set(NS, "expired", b"x", expires_at=NOW)
    store.set(NS, "later", b"x", expires_at=NOW + 10)
    store.set(NS_SESSIONS, "other-namespace", b"x")
    assert store.list(NS, now=NOW) == sorted(["b", "a", "c/d", "B", "é", "a0", "later"])
    assert store.list(NS, now=NOW + 10) == sorted(["b", "a", "c/d", "B", "é", "a0"])
    assert store.list("empty", now=NOW) == []


def test_purge_expired_removes_only_expired(store: Store) -> None:
    store.set(NS, "dead1", b"x", expires_at=NOW - 5)
    store.set(NS_SESSIONS, "dead2", b"x", expires_at=NOW)
    store.set(NS, "alive", b"x", expires_at=NOW + 5)
    store.set(NS, "forever", b"x")
    assert store.purge_expired(NOW) == 2
    assert store.purge_expired(NOW) == 0
    # Purged entries are gone for good, even for a reader with an earlier clock.
    assert store.get(NS, "dead1", now=NOW - 100) is None
    assert store.get(NS_SESSIONS, "dead2", now=NOW - 100) is None
    assert store.list(NS, now=NOW) == ["alive", "forever"]


# --- insert ------------------------------------------------------------------------------


def test_insert_creates(store: Store) -> None:
    assert store.insert(NS, "k", b"v", now=NOW, expires_at=NOW + 10)
    assert store.get(NS, "k", now=NOW) == b"v"
    assert store.get(NS, "k", now=NOW + 10) is None


def test_insert_refuses_a_live_key(store: Store) -> None:
    store.set(NS, "k", b"first")
    assert not store.insert(NS, "k", b"second", now=NOW)
    assert store.get(NS, "k", now=NOW) == b"first"


def test_insert_refuses_a_key_that_has_not_expired_yet(store: Store) -> None:
    store.set(NS, "k", b"first", expires_at=NOW + 1)
    assert not store.insert(NS, "k", b"second", now=NOW, expires_at=NOW + 100)
    # Nothing written: the old value and its expiry stand.
    assert store.get(NS, "k", now=NOW) == b"first"
    assert store.get(NS, "k", now=NOW + 1) is None


def test_insert_replaces_an_expired_key(store: Store) -> None:
    store.set(NS, "k", b"old", expires_at=NOW)
    assert store.insert(NS, "k", b"new", now=NOW, expires_at=NOW + 10)
    assert store.get(NS, "k", now=NOW + 5) == b"new"
    # The new entry's expiry applies, not the old one's.
    assert store.get(NS, "k", now=NOW + 10) is None


def test_insert_without_expiry_replacing_expired(store: Store) -> None:
    store.set(NS, "k", b"old", expires_at=NOW - 1)
    assert store.insert(NS, "k", b"new", now=NOW)
    assert store.get(NS, "k", now=1e15) == b"new"


# --- compare_and_swap --------------------------------------------------------------------


def test_cas_swaps_when_value_matches(store: Store) -> None:
    store.set(NS, "k", b"a")
    assert store.compare_and_swap(NS, "k", b"a", b"b", now=NOW)
    assert store.get(NS, "k", now=NOW) == b"b"


def test_cas_refuses_when_value_differs(store: Store) -> None:
    store.set(NS, "k", b"a")
    assert not store.compare_and_swap(NS, "k", b"x", b"b", now=NOW)
    assert not store.compare_and_swap(NS, "k", b"", b"b", now=NOW)
    assert store.get(NS, "k", now=NOW) == b"a"


def test_cas_refuses_a_missing_key(store: Store) -> None:
    assert not store.compare_and_swap(NS, "k", b"a", b"b", now=NOW)
    assert store.get(NS, "k", now=NOW) is None


def test_cas_refuses_an_expired_key(store: Store) -> None:
    store.set(NS, "k", b"a", expires_at=NOW)
    assert not store.compare_and_swap(NS, "k", b"a", b"b", now=NOW)
    assert store.get(NS, "k", now=NOW - 1) == b"a"


def test_cas_keeps_the_expiry(store: Store) -> None:
    store.set(NS, "k", b"a", expires_at=NOW + 10)
    assert store.compare_and_swap(NS, "k", b"a", b"b", now=NOW)
    assert store.get(NS, "k", now=NOW + 9) == b"b"
    assert store.get(NS, "k", now=NOW + 10) is None


def test_cas_is_single_use(store: Store) -> None:
    store.set(NS, "k", b"a")
    assert store.compare_and_swap(NS, "k", b"a", b"b", now=NOW)
    assert not store.compare_and_swap(NS, "k", b"a", b"c", now=NOW)
    assert store.get(NS, "k", now=NOW) == b"b"


def _race(count: int, attempt: Callable[[int], bool]) -> list[int]:
    """Run ``attempt(i)`` in ``count`` threads released together; the indices that won."""
    barrier = threading.Barrier(count)
    results: list[bool | BaseException] = [False] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except BaseException as e:  # reported below, not lost in the thread
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    return [i for i, r in enumerate(results) if r is True]


def test_concurrent_cas_has_exactly_one_winner(store: Store) -> None:
    for round_ in range(5):
        key = f"race{round_}"
        store.set(NS, key, b"authed")

        def attempt(i: int, key: str = key) -> bool:
            return store.compare_and_swap(NS, key, b"authed", b"%d" % i, now=NOW)

        winners = _race(8, attempt)
        assert len(winners) == 1
        assert store.get(NS, key, now=NOW) == b"%d" % winners[0]


def test_concurrent_insert_has_exactly_one_winner(store: Store) -> None:
    winners = _race(8, lambda i: store.insert(NS, "k", b"%d" % i, now=NOW))
    assert len(winners) == 1
    assert store.get(NS, "k", now=NOW) == b"%d" % winners[0]


def test_list_while_another_thread_writes(store: Store) -> None:
    # Small switch interval: the reader is preempted mid-iteration many times.
    for i in range(1000):
        store.set(NS, f"base{i:05d}", b"x")
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            store.set(NS, f"w{i}", b"x")
            store.delete(NS, f"w{i}")
            i += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(10):
            keys = store.list(NS, now=NOW)
            assert keys[:1000] == [f"base{i:05d}" for i in range(1000)]
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)


# --- delete ------------------------------------------------------------------------------


def test_delete(store: Store) -> None:
    store.set(NS, "k", b"v")
    assert store.delete(NS, "k")
    assert store.get(NS, "k", now=NOW) is None
    assert not store.delete(NS, "k")
    assert store.list(NS, now=NOW) == []


def test_delete_missing_is_false(store: Store) -> None:
    assert not store.delete(NS, "never")


def test_delete_removes_an_expired_but_unpurged_entry(store: Store) -> None:
    store.set(NS, "k", b"v", expires_at=NOW - 1)
    assert store.delete(NS, "k")
    assert store.purge_expired(NOW) == 0
